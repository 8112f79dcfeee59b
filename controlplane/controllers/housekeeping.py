"""Two small housekeeping controllers: claim binding and the Event TTL.

PVC binding (Corral's stand-in for a local-volume provisioner):
- a claim whose spec.volumeName ("NODE:/path") is set but whose status is not
  Bound gets phase Bound, its access modes and its requested capacity;
- an unbound claim used by a pod that is already bound to a node (nodeName set
  by hand, not by the scheduler, which binds claims itself) is bound to a
  folder on that node: NODE:VOLUME_ROOT/NAMESPACE/CLAIM-UID.
Event TTL: an Event whose last occurrence is older than `event_ttl` (1 h) is
deleted, as the API server's event TTL does in Kubernetes.

Threads model: the controllers' workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.v1 import core_pb2

from ..scheduler.runner import volume_name
from .actions import Delete, Result, Update, UpdateStatus
from .base import Controller, ns_key
from .clock import from_timestamp, is_set
from .informers import Handlers
from .podutil import copy, created, is_finished


def reconcile_claim(claim: core_pb2.PersistentVolumeClaim, pods: Iterable[core_pb2.Pod],
                    volume_root: str) -> Result:
    result = Result()
    if claim.spec.volume_name:
        if claim.status.phase != "Bound":
            new = copy(claim)
            new.status.phase = "Bound"
            if not new.status.access_modes:
                new.status.access_modes.extend(new.spec.access_modes)
            storage = new.spec.resources.requests.get("storage")
            if storage and "storage" not in new.status.capacity:
                new.status.capacity["storage"] = storage
            result.add(UpdateStatus(new))
            result.why = f"bound to {claim.spec.volume_name}"
        return result
    for pod in pods:
        if not pod.spec.node_name or is_finished(pod):
            continue
        if any(v.persistent_volume_claim.claim_name == claim.metadata.name
               for v in pod.spec.volumes if v.HasField("persistent_volume_claim")):
            new = copy(claim)
            new.spec.volume_name = volume_name(pod.spec.node_name, volume_root, claim)
            result.add(Update(new))
            result.why = f"used by {pod.metadata.name} on {pod.spec.node_name}"
            break
    if claim.status.phase == "" and not result.actions:
        new = copy(claim)
        new.status.phase = "Pending"
        result.add(UpdateStatus(new))
    return result


class ClaimBindingController(Controller):
    name = "pvcbinding"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["PersistentVolumeClaim"].subscribe(Handlers(
            lambda c: self.queue.add(ns_key(c)), lambda old, new: self.queue.add(ns_key(new)),
            None))
        inf["Pod"].subscribe(Handlers(self._pod, lambda old, new: self._pod(new), None))

    def _pod(self, pod: core_pb2.Pod) -> None:
        if not pod.spec.node_name:
            return
        for v in pod.spec.volumes:
            if v.HasField("persistent_volume_claim"):
                self.queue.add((pod.metadata.namespace, v.persistent_volume_claim.claim_name))

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(c) for c in self.ctx.informers["PersistentVolumeClaim"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        claim = self.ctx.informers["PersistentVolumeClaim"].get(name, ns)
        if claim is None:
            return None
        return reconcile_claim(claim, self.ctx.informers["Pod"].in_namespace(ns),
                               self.ctx.config.volume_root)


def event_last_seen(ev: core_pb2.Event) -> float:
    for ts in (ev.last_timestamp, ev.first_timestamp):
        if is_set(ts):
            return from_timestamp(ts)
    return created(ev)


def reconcile_event(ev: core_pb2.Event, now: float, ttl: float) -> Result:
    result = Result()
    age = now - event_last_seen(ev)
    if age >= ttl:
        result.add(Delete.of(ev))
        result.why = f"event older than {ttl:.0f}s"
    else:
        result.requeue(ttl - age + 1.0)
    return result


class EventTTLController(Controller):
    name = "eventttl"

    @property
    def workers(self) -> int:
        return 1

    def setup(self) -> None:
        self.ctx.informers["Event"].subscribe(Handlers(
            lambda e: self.queue.add(ns_key(e)), lambda old, new: self.queue.add(ns_key(new)),
            None))

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        ev = self.ctx.informers["Event"].get(name, ns)
        if ev is None:
            return None
        return reconcile_event(ev, self.ctx.clock.time(), self.ctx.config.event_ttl)
