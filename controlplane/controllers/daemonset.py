"""DaemonSet: one pod on every eligible node.

`reconcile` is pure: (DaemonSet, nodes, pods of its namespace, now) -> actions.
- A node is eligible when the template's nodeSelector and required node
  affinity match it and every NoSchedule/NoExecute taint is tolerated by the
  template's tolerations plus the ones Kubernetes adds to daemon pods
  (not-ready and unreachable NoExecute; disk/memory/pid pressure and
  unschedulable NoSchedule). A pod already there keeps running unless a
  NoExecute taint is not tolerated.
- Each daemon pod is pinned to its node with required node affinity on
  metadata.name and placed by the scheduler (Kubernetes' way since 1.12).
- A node that joins gets a pod; pods on nodes that left or stopped being
  eligible are deleted; failed pods are replaced; duplicates are trimmed
  (the oldest stays).
- RollingUpdate: pods of an old template (controller-revision-hash) are
  replaced; unavailable old pods first, then available ones while fewer than
  maxUnavailable (default 1) nodes are unavailable. With maxSurge, the new pod
  starts beside the old one, which goes once the new one is available.
  OnDelete: only pods deleted by hand get the new template.
- Status: desired/current/updated NumberScheduled, numberMisscheduled,
  numberReady, numberAvailable, numberUnavailable, observedGeneration.

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from corral import selectors
from corral.errors import Invalid
from corral.v1 import apps_pb2, core_pb2

from ..scheduler import affinity
from ..scheduler.snapshot import TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE
from . import rollout as ru
from .actions import Create, Delete, Result, UpdateStatus, event
from .base import Controller, ns_key
from .informers import Handlers
from .podutil import (
    CONTROLLER_REVISION_HASH,
    available_in,
    controller_ref,
    copy,
    created,
    is_active,
    is_available,
    is_ready,
    is_terminating,
    pod_from_template,
)
from .replicaset import claim_pods

DAEMON_TOLERATIONS = (
    core_pb2.Toleration(key=TAINT_NOT_READY, operator="Exists", effect="NoExecute"),
    core_pb2.Toleration(key=TAINT_UNREACHABLE, operator="Exists", effect="NoExecute"),
    core_pb2.Toleration(key="node.kubernetes.io/disk-pressure", operator="Exists",
                        effect="NoSchedule"),
    core_pb2.Toleration(key="node.kubernetes.io/memory-pressure", operator="Exists",
                        effect="NoSchedule"),
    core_pb2.Toleration(key="node.kubernetes.io/pid-pressure", operator="Exists",
                        effect="NoSchedule"),
    core_pb2.Toleration(key=TAINT_UNSCHEDULABLE, operator="Exists", effect="NoSchedule"),
)


def with_daemon_tolerations(spec: core_pb2.PodSpec) -> None:
    for tol in DAEMON_TOLERATIONS:
        if not any(t == tol for t in spec.tolerations):
            spec.tolerations.append(tol)


def template_revision(ds: apps_pb2.DaemonSet) -> str:
    return ru.template_hash(ds.spec.template)


def node_should_run(ds: apps_pb2.DaemonSet, node: core_pb2.Node) -> tuple[bool, bool]:
    """(should run a pod there, should keep an existing one running)."""
    spec = copy(ds.spec.template.spec)
    with_daemon_tolerations(spec)
    if not affinity.pod_matches_node(spec, node.metadata.labels, node.metadata.name):
        return False, False
    taints = list(node.spec.taints)
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    if not ready and not any(t.key in (TAINT_NOT_READY, TAINT_UNREACHABLE) for t in taints):
        taints.append(core_pb2.Taint(key=TAINT_NOT_READY, effect="NoSchedule"))
    if affinity.first_untolerated(taints, spec.tolerations, (affinity.NO_EXECUTE,)) is not None:
        return False, False
    if node.spec.unschedulable:
        unsched = core_pb2.Taint(key=TAINT_UNSCHEDULABLE, effect="NoSchedule")
        taints.append(unsched)
    if affinity.first_untolerated(taints, spec.tolerations, (affinity.NO_SCHEDULE,)) is not None:
        return False, True
    return True, True


def pod_node(pod: core_pb2.Pod) -> str:
    return pod.spec.node_name or affinity.pinned_node(pod.spec)


def new_pod(ds: apps_pb2.DaemonSet, node: str, revision: str) -> core_pb2.Pod:
    pod = pod_from_template(ds.spec.template, ds, generate_name=f"{ds.metadata.name}-",
                            extra_labels={CONTROLLER_REVISION_HASH: revision})
    with_daemon_tolerations(pod.spec)
    affinity.pin_to_node(pod.spec, node)
    return pod


def reconcile(ds: apps_pb2.DaemonSet, nodes: Iterable[core_pb2.Node],
              pods: Iterable[core_pb2.Pod], now: float) -> Result:
    result = Result()
    try:
        selector = selectors.from_proto(ds.spec.selector, "spec.selector")
    except Invalid as err:
        result.why = f"invalid selector: {err}"
        return result
    owned = claim_pods(ds, selector, pods, result)
    revision = template_revision(ds)
    min_ready = ds.spec.min_ready_seconds
    by_node: dict[str, list[core_pb2.Pod]] = {}
    for pod in owned:
        by_node.setdefault(pod_node(pod), []).append(pod)
    node_list = sorted(nodes, key=lambda n: n.metadata.name)
    node_names = {n.metadata.name for n in node_list}
    should: dict[str, bool] = {}
    status = copy(ds.status)
    desired = current = misscheduled = ready = available = updated = 0

    def delete(pod: core_pb2.Pod, why: str) -> None:
        result.add(Delete.of(pod, event=event(ds, "SuccessfulDelete",
                                              f"Deleted pod: {pod.metadata.name}")))
        result.why = why

    def create(node: str) -> None:
        result.add(Create(new_pod(ds, node, revision),
                          event=event(ds, "SuccessfulCreate", "Created pod: {name}"),
                          failed_event=event(ds, "FailedCreate", "Error creating: {error}",
                                             "Warning")))

    managing = not is_terminating(ds)
    # Per eligible node: the daemon pods that stay (one, or an old+new surge pair).
    kept: dict[str, list[core_pb2.Pod]] = {}
    for node in node_list:
        n = node.metadata.name
        run, keep = node_should_run(ds, node)
        should[n] = run
        here = by_node.get(n, [])
        on_node = [p for p in here if not is_terminating(p)]
        active = [p for p in on_node if is_active(p)]
        if run and active:
            current += 1
        elif active:
            misscheduled += 1
        desired += 1 if run else 0
        if not managing:
            kept[n] = active
            continue
        for p in on_node:
            if p.status.phase == "Failed":
                delete(p, f"daemon pod {p.metadata.name} failed on {n}")
        if not (run or keep):
            for p in active:
                delete(p, f"{n} is not eligible")
            kept[n] = []
            continue
        if not active:
            kept[n] = []
            # Wait for a terminating pod to go first (it may hold host ports).
            if run and len(on_node) == len(here):
                create(n)
            continue
        active.sort(key=lambda p: (created(p), p.metadata.name))
        revisions = [p.metadata.labels.get(CONTROLLER_REVISION_HASH) for p in active]
        if len(active) == 2 and revisions.count(revision) == 1:
            kept[n] = active  # a surge pair: the rolling update resolves it
            continue
        for p in active[1:]:
            delete(p, f"more than one daemon pod on {n}")
        kept[n] = active[:1]
    for n, pods_on in by_node.items():
        if n and n not in node_names and managing:
            for p in pods_on:
                if not is_terminating(p):
                    delete(p, f"node {n} is gone")
    for n, pods_here in kept.items():
        if not should.get(n):
            continue
        if any(is_ready(p) for p in pods_here):
            ready += 1
        if any(is_available(p, min_ready, now) for p in pods_here):
            available += 1
        if any(p.metadata.labels.get(CONTROLLER_REVISION_HASH) == revision for p in pods_here):
            updated += 1
        for p in pods_here:
            left = available_in(p, min_ready, now)
            if left is not None:
                result.requeue(left + 0.05)
    if managing and ds.spec.update_strategy.type in ("", "RollingUpdate"):
        _rolling(ds, kept, should, revision, desired, available, now, result, delete, create)
    status.desired_number_scheduled = desired
    status.current_number_scheduled = current
    status.number_misscheduled = misscheduled
    status.number_ready = ready
    status.number_available = available
    status.number_unavailable = max(desired - available, 0)
    status.updated_number_scheduled = updated
    status.observed_generation = ds.metadata.generation
    if status != ds.status:
        new = copy(ds)
        new.status.CopyFrom(status)
        result.add(UpdateStatus(new))
    return result


def _rolling(ds: apps_pb2.DaemonSet, kept: dict[str, list[core_pb2.Pod]],
             should: dict[str, bool], revision: str, desired: int, available: int, now: float,
             result: Result, delete: Callable[[core_pb2.Pod, str], None],
             create: Callable[[str], None]) -> None:
    spec = ds.spec.update_strategy.rolling_update
    max_surge = ru.daemonset_max_unavailable(spec.max_surge, desired) \
        if spec.HasField("max_surge") else 0
    if max_surge > 0 and not spec.HasField("max_unavailable"):
        max_unavailable = 0
    else:
        max_unavailable = ru.daemonset_max_unavailable(
            spec.max_unavailable if spec.HasField("max_unavailable") else None, desired)
    min_ready = ds.spec.min_ready_seconds
    surging = 0
    old_available: list[tuple[str, core_pb2.Pod]] = []
    for n, here in sorted(kept.items()):
        if not should.get(n) or not here:
            continue
        if len(here) == 2:
            surging += 1
            new = [p for p in here if p.metadata.labels.get(CONTROLLER_REVISION_HASH) == revision]
            if new and is_available(new[0], min_ready, now):
                for p in here:
                    if p is not new[0]:
                        delete(p, f"rolling update on {n}: the new pod is available")
            continue
        pod = here[0]
        if pod.metadata.labels.get(CONTROLLER_REVISION_HASH) == revision:
            continue
        if not is_available(pod, min_ready, now):
            delete(pod, f"rolling update on {n}: replacing an unavailable old pod")
            continue
        old_available.append((n, pod))
    if max_surge > 0:
        budget = max_surge - surging
        for n, _ in old_available[:max(budget, 0)]:
            create(n)
            result.why = "rolling update (surge)"
        return
    budget = max_unavailable - (desired - available)
    for _, pod in old_available[:max(budget, 0)]:
        delete(pod, f"rolling update: replacing {pod.metadata.name}")


class DaemonSetController(Controller):
    name = "daemonset"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["DaemonSet"].subscribe(Handlers(
            lambda d: self.queue.add(ns_key(d)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda d: None))
        inf["Pod"].subscribe(Handlers(self._pod, lambda old, new: self._pod(new), self._pod))
        inf["Node"].subscribe(Handlers(lambda n: self._all(),
                                       lambda old, new: self._node_changed(old, new),
                                       lambda n: self._all()))

    def _pod(self, pod: core_pb2.Pod) -> None:
        ref = controller_ref(pod)
        if ref is not None and ref.kind == "DaemonSet":
            self.queue.add((pod.metadata.namespace, ref.name))

    def _node_changed(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        def ready(n: core_pb2.Node) -> bool:
            return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)

        if old.spec != new.spec or old.metadata.labels != new.metadata.labels or \
                ready(old) != ready(new):
            self._all()

    def _all(self) -> None:
        for ds in self.ctx.informers["DaemonSet"].items():
            self.queue.add(ns_key(ds))

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(d) for d in self.ctx.informers["DaemonSet"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        ds = self.ctx.informers["DaemonSet"].get(name, ns)
        if ds is None:
            return None
        return reconcile(ds, self.ctx.informers["Node"].items(),
                         self.ctx.informers["Pod"].in_namespace(ns), self.ctx.clock.time())
