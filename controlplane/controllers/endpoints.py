"""Endpoints: for every Service with a selector, where its pods answer.

`desired` is pure: (Service, pods of its namespace) -> the Endpoints object.
- Pods matching the selector with a pod IP; terminal pods (Succeeded/Failed)
  are left out, and so are pods being deleted unless the Service publishes
  not-ready addresses.
- Ready pods go to `addresses`, the others to `notReadyAddresses`
  (publishNotReadyAddresses puts every pod in `addresses`).
- Each Service port's targetPort is resolved per pod: a number as is, a name
  through that pod's container ports (a pod without the named port is left
  out of that port); no targetPort means the port itself.
- A pod with spec.hostname whose spec.subdomain names this Service (a
  StatefulSet pod behind its headless Service) gets its hostname in the
  address, which cluster DNS turns into POD.SERVICE.NAMESPACE.svc...
- Addresses are grouped into subsets by identical port lists, sorted by IP, so
  the same pods always give the same object and nothing is rewritten in vain.
Services without a selector keep hand-made Endpoints; a deleted Service's
Endpoints go with it.

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from corral import selectors
from corral.v1 import core_pb2

from .actions import Create, Delete, Result, Update
from .base import Controller, ns_key
from .informers import Handlers
from .podutil import copy, is_ready, is_terminating

Port = tuple[str, int, str]  # (name, port, protocol)


def resolve_port(svc_port: core_pb2.ServicePort, pod: core_pb2.Pod) -> int | None:
    tp = svc_port.target_port
    kind = tp.WhichOneof("kind") if svc_port.HasField("target_port") else None
    if kind == "number_value":
        return int(tp.number_value)
    if kind == "string_value" and tp.string_value:
        text = tp.string_value
        if text.isdigit():
            return int(text)
        protocol = svc_port.protocol or "TCP"
        for c in pod.spec.containers:
            for p in c.ports:
                if p.name == text and (p.protocol or "TCP") == protocol:
                    return p.container_port
        return None
    return svc_port.port


def _address(pod: core_pb2.Pod, svc: core_pb2.Service) -> core_pb2.EndpointAddress:
    addr = core_pb2.EndpointAddress(ip=pod.status.pod_ip, node_name=pod.spec.node_name)
    if pod.spec.hostname and pod.spec.subdomain == svc.metadata.name:
        addr.hostname = pod.spec.hostname
    ref = addr.target_ref
    ref.kind = "Pod"
    ref.namespace = pod.metadata.namespace
    ref.name = pod.metadata.name
    ref.uid = pod.metadata.uid
    return addr


def desired(svc: core_pb2.Service, pods: Iterable[core_pb2.Pod]) -> core_pb2.Endpoints | None:
    if not svc.spec.selector:
        return None
    selector = selectors.from_match_labels(svc.spec.selector)
    publish = svc.spec.publish_not_ready_addresses
    groups: dict[tuple[Port, ...], tuple[list, list]] = {}
    for pod in pods:
        if pod.metadata.namespace != svc.metadata.namespace or \
                not selector.matches(pod.metadata.labels):
            continue
        if not pod.status.pod_ip or pod.status.phase in ("Succeeded", "Failed"):
            continue
        if is_terminating(pod) and not publish:
            continue
        ports: list[Port] = []
        for sp in svc.spec.ports:
            number = resolve_port(sp, pod)
            if number is not None:
                ports.append((sp.name, number, sp.protocol or "TCP"))
        if svc.spec.ports and not ports:
            continue
        key = tuple(sorted(ports))
        ready_list, not_ready = groups.setdefault(key, ([], []))
        (ready_list if publish or is_ready(pod) else not_ready).append(_address(pod, svc))
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name = svc.metadata.name
    ep.metadata.namespace = svc.metadata.namespace
    ep.metadata.labels.update(svc.metadata.labels)
    for key in sorted(groups):
        ready_list, not_ready = groups[key]
        subset = ep.subsets.add()
        subset.addresses.extend(sorted(ready_list, key=lambda a: (_ip_key(a.ip), a.ip)))
        subset.not_ready_addresses.extend(sorted(not_ready, key=lambda a: (_ip_key(a.ip), a.ip)))
        for name, number, protocol in key:
            subset.ports.add(name=name, port=number, protocol=protocol)
    return ep


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in ip.split("."))
    except ValueError:
        return ()


def reconcile(svc: core_pb2.Service | None, existing: core_pb2.Endpoints | None,
              pods: Iterable[core_pb2.Pod]) -> Result:
    result = Result()
    if svc is None:
        if existing is not None:
            result.add(Delete.of(existing))
            result.why = "service deleted"
        return result
    want = desired(svc, pods)
    if want is None:
        return result
    if existing is None:
        result.add(Create(want))
        result.why = "new service"
        return result
    if list(existing.subsets) != list(want.subsets) or \
            dict(existing.metadata.labels) != dict(want.metadata.labels):
        new = copy(existing)
        del new.subsets[:]
        new.subsets.extend(want.subsets)
        new.metadata.labels.clear()
        new.metadata.labels.update(want.metadata.labels)
        result.add(Update(new))
        result.why = "pods changed"
    return result


class EndpointsController(Controller):
    name = "endpoints"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["Service"].subscribe(Handlers(
            lambda s: self.queue.add(ns_key(s)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda s: self.queue.add(ns_key(s))))
        inf["Endpoints"].subscribe(Handlers(
            None, lambda old, new: self.queue.add(ns_key(new)),
            lambda e: self.queue.add(ns_key(e))))
        inf["Pod"].subscribe(Handlers(self._pod, self._pod_changed, self._pod))

    def _pod(self, pod: core_pb2.Pod) -> None:
        for svc in self.ctx.informers["Service"].in_namespace(pod.metadata.namespace):
            if svc.spec.selector and selectors.labels_match(svc.spec.selector,
                                                            pod.metadata.labels):
                self.queue.add(ns_key(svc))

    def _pod_changed(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if old.metadata.labels != new.metadata.labels:
            self._pod(old)
        if (old.status.pod_ip, is_ready(old), old.status.phase, is_terminating(old),
                old.metadata.labels, old.spec.hostname) != \
                (new.status.pod_ip, is_ready(new), new.status.phase, is_terminating(new),
                 new.metadata.labels, new.spec.hostname):
            self._pod(new)

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(s) for s in self.ctx.informers["Service"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        svc = self.ctx.informers["Service"].get(name, ns)
        existing = self.ctx.informers["Endpoints"].get(name, ns)
        pods = self.ctx.informers["Pod"].in_namespace(ns) if svc is not None else []
        return reconcile(svc, existing, pods)
