"""StatefulSet: pods with a stable identity (NAME-0..N-1), their own storage, in order.

`reconcile` is pure: (StatefulSet, pods and claims of its namespace, now) -> actions.
- Identity: pod NAME-i has hostname NAME-i, subdomain spec.serviceName (its DNS
  name behind the headless Service), labels statefulset.kubernetes.io/pod-name,
  apps.kubernetes.io/pod-index and controller-revision-hash.
- Storage: for each volumeClaimTemplate T, claim T-NAME-i is created before the
  pod and never deleted by this controller (it outlives pod and set). A claim
  already bound to a folder on node X ("X:/path") pins the pod to X with
  required node affinity on metadata.name; an unbound one is bound by the
  scheduler to the node it picks for the pod.
- OrderedReady (default): create NAME-i only when NAME-0..i-1 are Running and
  Ready (and available for minReadySeconds); scale down from the highest
  ordinal, one at a time, only while all others are healthy. Parallel: no waiting.
- One identity, one pod: a replacement is created only once the old pod object
  is gone from the store. It goes when its node agent confirms the containers
  stopped, or when the node lifecycle controller force-deletes it after the
  node was confirmed dead (see nodelifecycle.py); until then the ordinal waits.
- RollingUpdate: when all pods are healthy, delete the highest-ordinal pod whose
  controller-revision-hash is not the update revision (down to `partition`),
  wait for its replacement to be healthy, then the next. OnDelete: only new
  pods get the new template.
- Status: replicas, readyReplicas, availableReplicas, currentReplicas,
  updatedReplicas, currentRevision, updateRevision, observedGeneration.
Corral keeps no ControllerRevision objects: pods re-created below `partition`
get the current template (Kubernetes would use the old revision's).

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from corral import selectors
from corral.errors import Invalid
from corral.v1 import apps_pb2, core_pb2

from ..scheduler import affinity
from ..scheduler.snapshot import claim_node
from . import rollout as ru
from .actions import Create, Delete, Result, UpdateStatus, event
from .base import Controller, ns_key
from .informers import Handlers
from .podutil import (
    CONTROLLER_REVISION_HASH,
    available_in,
    controller_ref,
    copy,
    is_available,
    is_ready,
    is_terminating,
    pod_from_template,
)
from .replicaset import claim_pods

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal(set_name: str, pod_name: str) -> int | None:
    m = re.fullmatch(re.escape(set_name) + r"-(0|[1-9][0-9]*)", pod_name)
    return int(m.group(1)) if m else None


def update_revision(sts: apps_pb2.StatefulSet) -> str:
    return f"{sts.metadata.name}-{ru.template_hash(sts.spec.template)}"


def claim_name(template: core_pb2.PersistentVolumeClaim, sts: apps_pb2.StatefulSet,
               ordinal_: int) -> str:
    return f"{template.metadata.name}-{sts.metadata.name}-{ordinal_}"


def new_claim(template: core_pb2.PersistentVolumeClaim, sts: apps_pb2.StatefulSet,
              ordinal_: int) -> core_pb2.PersistentVolumeClaim:
    c = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    c.metadata.name = claim_name(template, sts, ordinal_)
    c.metadata.namespace = sts.metadata.namespace
    c.metadata.labels.update(template.metadata.labels)
    c.metadata.labels.update(sts.spec.selector.match_labels)
    c.metadata.annotations.update(template.metadata.annotations)
    c.spec.CopyFrom(template.spec)
    if not c.spec.access_modes:
        c.spec.access_modes.append("ReadWriteOnce")
    return c


def new_pod(sts: apps_pb2.StatefulSet, ordinal_: int, revision: str,
            claims: dict[str, core_pb2.PersistentVolumeClaim]) -> core_pb2.Pod:
    name = f"{sts.metadata.name}-{ordinal_}"
    pod = pod_from_template(sts.spec.template, sts, name=name, extra_labels={
        POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal_),
        CONTROLLER_REVISION_HASH: revision,
    })
    pod.spec.hostname = name
    pod.spec.subdomain = sts.spec.service_name
    pinned = ""
    for t in sts.spec.volume_claim_templates:
        cname = claim_name(t, sts, ordinal_)
        kept = [v for v in pod.spec.volumes if v.name != t.metadata.name]
        del pod.spec.volumes[:]
        pod.spec.volumes.extend(kept)
        v = pod.spec.volumes.add(name=t.metadata.name)
        v.persistent_volume_claim.claim_name = cname
        existing = claims.get(cname)
        if existing is not None and claim_node(existing):
            pinned = claim_node(existing)
    if pinned:
        affinity.pin_to_node(pod.spec, pinned)
    return pod


def healthy(pod: core_pb2.Pod, min_ready: int, now: float) -> bool:
    return pod.status.phase == "Running" and is_available(pod, min_ready, now) \
        and not is_terminating(pod)


def reconcile(sts: apps_pb2.StatefulSet, pods: Iterable[core_pb2.Pod],
              claims: Iterable[core_pb2.PersistentVolumeClaim], now: float) -> Result:
    result = Result()
    try:
        selector = selectors.from_proto(sts.spec.selector, "spec.selector")
    except Invalid as err:
        result.why = f"invalid selector: {err}"
        return result
    name = sts.metadata.name
    members = [p for p in pods
               if (controller_ref(p) is not None and controller_ref(p).uid == sts.metadata.uid)
               or ordinal(name, p.metadata.name) is not None]
    owned = claim_pods(sts, selector, members, result)
    want = sts.spec.replicas if sts.spec.HasField("replicas") else 1
    update_rev = update_revision(sts)
    by_ord: dict[int, core_pb2.Pod] = {}
    condemned: list[tuple[int, core_pb2.Pod]] = []
    for pod in owned:
        i = ordinal(name, pod.metadata.name)
        if i is None:
            continue
        if i < want:
            by_ord[i] = pod
        else:
            condemned.append((i, pod))
    condemned.sort(key=lambda t: -t[0])
    claim_map = {c.metadata.name: c for c in claims}
    min_ready = sts.spec.min_ready_seconds
    monotonic = sts.spec.pod_management_policy != "Parallel"
    if not is_terminating(sts):
        _manage(sts, by_ord, condemned, claim_map, update_rev, want, monotonic, now, result)
    for pod in by_ord.values():
        left = available_in(pod, min_ready, now)
        if left is not None:
            result.requeue(left + 0.05)
    status = compute_status(sts, owned, update_rev, want, now)
    if status != sts.status:
        new = copy(sts)
        new.status.CopyFrom(status)
        result.add(UpdateStatus(new))
    return result


def _manage(sts: apps_pb2.StatefulSet, by_ord: dict[int, core_pb2.Pod],
            condemned: list[tuple[int, core_pb2.Pod]],
            claims: dict[str, core_pb2.PersistentVolumeClaim], update_rev: str, want: int,
            monotonic: bool, now: float, result: Result) -> None:
    name = sts.metadata.name
    min_ready = sts.spec.min_ready_seconds
    for i in range(want):
        pod = by_ord.get(i)
        pod_name = f"{name}-{i}"
        # Claims first, also for existing pods (a claim deleted by hand comes back).
        for t in sts.spec.volume_claim_templates:
            cname = claim_name(t, sts, i)
            if cname not in claims:
                result.add(Create(new_claim(t, sts, i), event=event(
                    sts, "SuccessfulCreate",
                    f"create Claim {cname} Pod {pod_name} in StatefulSet {name} success"),
                    failed_event=event(sts, "FailedCreate",
                                       f"create Claim {cname} Pod {pod_name} in StatefulSet "
                                       f"{name} failed error: {{error}}", "Warning")))
        if pod is None:
            result.add(Create(new_pod(sts, i, update_rev, claims), event=event(
                sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful"),
                failed_event=event(sts, "FailedCreate",
                                   f"create Pod {pod_name} in StatefulSet {name} failed "
                                   f"error: {{error}}", "Warning")))
            result.why = f"creating {pod_name}"
            if monotonic:
                return
            continue
        if pod.status.phase == "Failed" and not is_terminating(pod):
            result.add(Delete.of(pod, event=event(
                sts, "SuccessfulDelete",
                f"delete Pod {pod_name} in StatefulSet {name} successful")))
            result.why = f"{pod_name} failed: recreating it"
            if monotonic:
                return
            continue
        if monotonic and not healthy(pod, min_ready, now):
            result.why = f"waiting for {pod_name} to be Running and Ready"
            return
    for _, pod in condemned:
        if is_terminating(pod):
            if monotonic:
                result.why = f"waiting for {pod.metadata.name} to terminate"
                return
            continue
        result.add(Delete.of(pod, event=event(
            sts, "SuccessfulDelete",
            f"delete Pod {pod.metadata.name} in StatefulSet {name} successful")))
        result.why = f"scaling down: {pod.metadata.name}"
        if monotonic:
            return
    if sts.spec.update_strategy.type not in ("", "RollingUpdate"):
        return
    partition = sts.spec.update_strategy.rolling_update.partition \
        if sts.spec.update_strategy.rolling_update.HasField("partition") else 0
    for i in range(want - 1, partition - 1, -1):
        pod = by_ord.get(i)
        if pod is None:
            return
        if pod.metadata.labels.get(CONTROLLER_REVISION_HASH) != update_rev and \
                not is_terminating(pod):
            result.add(Delete.of(pod, event=event(
                sts, "SuccessfulDelete",
                f"delete Pod {pod.metadata.name} in StatefulSet {name} successful")))
            result.why = f"rolling update: replacing {pod.metadata.name}"
            return
        if not healthy(pod, min_ready, now):
            result.why = f"rolling update: waiting for {pod.metadata.name}"
            return


def compute_status(sts: apps_pb2.StatefulSet, owned: list[core_pb2.Pod], update_rev: str,
                   want: int, now: float) -> apps_pb2.StatefulSetStatus:
    s = copy(sts.status)
    live = [p for p in owned if not is_terminating(p)]
    current_rev = s.current_revision or update_rev
    s.observed_generation = sts.metadata.generation
    s.replicas = len(live)
    s.ready_replicas = sum(1 for p in live if is_ready(p))
    s.available_replicas = sum(1 for p in live
                               if is_available(p, sts.spec.min_ready_seconds, now))
    s.current_replicas = sum(1 for p in live
                             if p.metadata.labels.get(CONTROLLER_REVISION_HASH) == current_rev)
    s.updated_replicas = sum(1 for p in live
                             if p.metadata.labels.get(CONTROLLER_REVISION_HASH) == update_rev)
    s.update_revision = update_rev
    s.current_revision = current_rev
    if s.updated_replicas == want and s.ready_replicas == want and s.replicas == want:
        s.current_revision = update_rev
        s.current_replicas = s.updated_replicas
    return s


class StatefulSetController(Controller):
    name = "statefulset"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["StatefulSet"].subscribe(Handlers(
            lambda s: self.queue.add(ns_key(s)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda s: None))
        inf["Pod"].subscribe(Handlers(self._pod, lambda old, new: self._pod(new), self._pod))
        inf["PersistentVolumeClaim"].subscribe(Handlers(
            None, lambda old, new: self._claim(new), self._claim))

    def _pod(self, pod: core_pb2.Pod) -> None:
        ref = controller_ref(pod)
        if ref is not None and ref.kind == "StatefulSet":
            self.queue.add((pod.metadata.namespace, ref.name))

    def _claim(self, claim: core_pb2.PersistentVolumeClaim) -> None:
        for sts in self.ctx.informers["StatefulSet"].in_namespace(claim.metadata.namespace):
            for t in sts.spec.volume_claim_templates:
                prefix = f"{t.metadata.name}-{sts.metadata.name}-"
                if claim.metadata.name.startswith(prefix):
                    self.queue.add(ns_key(sts))

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(s) for s in self.ctx.informers["StatefulSet"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        sts = self.ctx.informers["StatefulSet"].get(name, ns)
        if sts is None:
            return None
        return reconcile(sts, self.ctx.informers["Pod"].in_namespace(ns),
                         self.ctx.informers["PersistentVolumeClaim"].in_namespace(ns),
                         self.ctx.clock.time())
