"""ReplicaSet: keep `replicas` pods that match the selector.

`reconcile` is pure (the ReplicaSet, the pods of its namespace, now -> actions):
- claim pods as Kubernetes' ControllerRefManager does: adopt matching orphans
  (ownerReference with controller=true, conditional on the pod's version),
  release owned pods that no longer match, ignore pods of other controllers;
- count active owned pods (not finished, not being deleted) against replicas;
  create the missing ones from the template (generateName "RS-NAME-"), or
  delete the surplus, least valuable first: unscheduled before scheduled,
  Pending before Unknown before Running, not ready before ready, more
  recently ready first, more restarts first, newer first;
- status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas
  (ready for minReadySeconds), observedGeneration, and a ReplicaFailure
  condition while pod creation fails; written only when it changed. A pod
  that becomes available later is looked at again then (requeue_after).
A ReplicaSet being deleted is not scaled (the garbage collector removes its pods).

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corral import selectors
from corral.errors import Invalid
from corral.v1 import apps_pb2, core_pb2

from .actions import Create, Delete, Result, Update, UpdateStatus, event
from .base import Controller, ns_key
from .executor import Outcome
from .informers import Handlers
from .podutil import (
    available_in,
    controller_ref,
    copy,
    created,
    get_condition,
    is_active,
    is_available,
    is_ready,
    is_terminating,
    owner_ref,
    pod_from_template,
    ready_since,
    remove_condition,
    restart_count,
    set_condition,
)

BURST = 500


def replicas_of(obj: Any) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def claim_pods(owner: Any, selector: selectors.Selector, pods: Iterable[core_pb2.Pod],
               result: Result) -> list[core_pb2.Pod]:
    """The pods `owner` controls after adopting and releasing (actions into `result`)."""
    owned = []
    deleting = is_terminating(owner)
    for pod in pods:
        ref = controller_ref(pod)
        matches = selector.matches(pod.metadata.labels)
        if ref is not None:
            if ref.uid != owner.metadata.uid:
                continue
            if matches or deleting:
                owned.append(pod)
            else:
                released = copy(pod)
                kept = [r for r in released.metadata.owner_references
                        if r.uid != owner.metadata.uid]
                del released.metadata.owner_references[:]
                released.metadata.owner_references.extend(kept)
                result.add(Update(released))
            continue
        if not matches or deleting or is_terminating(pod) or selector.empty:
            continue
        adopted = copy(pod)
        adopted.metadata.owner_references.append(owner_ref(owner))
        result.add(Update(adopted))
        owned.append(adopted)
    return owned


def deletion_rank(pod: core_pb2.Pod) -> tuple[Any, ...]:
    """Sort key: the pod to delete first sorts first (Kubernetes' ActivePods order)."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(pod.status.phase, 0)
    ready = is_ready(pod)
    return (
        1 if pod.spec.node_name else 0,
        phase_rank,
        1 if ready else 0,
        -ready_since(pod) if ready else 0.0,
        -restart_count(pod),
        -created(pod),
        pod.metadata.name,
    )


def reconcile(rs: apps_pb2.ReplicaSet, pods: Iterable[core_pb2.Pod], now: float) -> Result:
    result = Result()
    try:
        selector = selectors.from_proto(rs.spec.selector, "spec.selector")
    except Invalid as err:
        result.why = f"bad selector: {err}"
        return result
    owned = claim_pods(rs, selector, pods, result)
    active = [p for p in owned if is_active(p)]
    want = replicas_of(rs)
    creating = 0
    if not is_terminating(rs):
        diff = len(active) - want
        if diff < 0:
            creating = min(-diff, BURST)
            for _ in range(creating):
                pod = pod_from_template(rs.spec.template, rs,
                                        generate_name=f"{rs.metadata.name}-")
                result.add(Create(
                    pod,
                    event=event(rs, "SuccessfulCreate", "Created pod: {name}"),
                    failed_event=event(rs, "FailedCreate", "Error creating: {error}", "Warning"),
                ))
            result.why = f"{len(active)} of {want} pods"
        elif diff > 0:
            for pod in sorted(active, key=deletion_rank)[:diff]:
                result.add(Delete.of(pod, event=event(rs, "SuccessfulDelete",
                                                      f"Deleted pod: {pod.metadata.name}")))
            result.why = f"{len(active)} pods for {want} replicas"
    status = compute_status(rs, active, now)
    if status != rs.status:
        new = copy(rs)
        new.status.CopyFrom(status)
        result.add(UpdateStatus(new))
    for pod in active:
        left = available_in(pod, rs.spec.min_ready_seconds, now)
        if left is not None:
            result.requeue(left + 0.05)
    return result


def compute_status(rs: apps_pb2.ReplicaSet, active: list[core_pb2.Pod],
                   now: float) -> apps_pb2.ReplicaSetStatus:
    status = apps_pb2.ReplicaSetStatus()
    status.CopyFrom(rs.status)
    template_labels = rs.spec.template.metadata.labels
    status.replicas = len(active)
    status.fully_labeled_replicas = sum(
        1 for p in active
        if all(p.metadata.labels.get(k) == v for k, v in template_labels.items()))
    status.ready_replicas = sum(1 for p in active if is_ready(p))
    status.available_replicas = sum(
        1 for p in active if is_available(p, rs.spec.min_ready_seconds, now))
    status.observed_generation = rs.metadata.generation
    return status


def mark_failure(status: Any, message: str, now: float) -> None:
    set_condition(status.conditions, "ReplicaFailure", "True", "FailedCreate", message, now)


def clear_failure(status: Any) -> None:
    if get_condition(status.conditions, "ReplicaFailure") is not None:
        remove_condition(status.conditions, "ReplicaFailure")


class ReplicaSetController(Controller):
    name = "replicaset"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["ReplicaSet"].subscribe(Handlers(
            lambda rs: self.queue.add(ns_key(rs)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda rs: None))
        inf["Pod"].subscribe(Handlers(self._pod, lambda old, new: self._pod_changed(old, new),
                                      self._pod))

    def _pod(self, pod: core_pb2.Pod) -> None:
        ref = controller_ref(pod)
        if ref is not None:
            if ref.kind == "ReplicaSet":
                self.queue.add((pod.metadata.namespace, ref.name))
            return
        # An orphan: every ReplicaSet whose selector matches may adopt it.
        for rs in self.ctx.informers["ReplicaSet"].in_namespace(pod.metadata.namespace):
            try:
                if selectors.from_proto(rs.spec.selector).matches(pod.metadata.labels):
                    self.queue.add(ns_key(rs))
            except Invalid:
                continue

    def _pod_changed(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        if old_ref is not None and (new_ref is None or new_ref.uid != old_ref.uid) \
                and old_ref.kind == "ReplicaSet":
            self.queue.add((old.metadata.namespace, old_ref.name))
        self._pod(new)

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(rs) for rs in self.ctx.informers["ReplicaSet"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        rs = self.ctx.informers["ReplicaSet"].get(name, ns)
        if rs is None:
            return None
        return reconcile(rs, self.ctx.informers["Pod"].in_namespace(ns), self.ctx.clock.time())

    def after(self, key: tuple[str, str], result: Result, outcome: Outcome) -> None:
        """Show a failing pod creation in status (Kubernetes' ReplicaFailure condition)."""
        rs = self.ctx.informers["ReplicaSet"].get(key[1], key[0])
        if rs is None or self.ctx.stop.is_set():
            return
        status = copy(rs.status)
        failures = [e for e in outcome.errors if e.startswith("create ")]
        if failures:
            mark_failure(status, failures[0], self.ctx.clock.time())
        elif not outcome.errors and result.of_type(Create):
            clear_failure(status)
        if status != rs.status:
            new = copy(rs)
            new.status.CopyFrom(status)
            self.ctx.executor().run([UpdateStatus(new)])
