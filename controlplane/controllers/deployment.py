"""Deployment: ReplicaSets per pod template, rolled as Kubernetes rolls them.

`reconcile` is pure: (Deployment, the ReplicaSets and pods of its namespace,
now) -> actions. It follows Kubernetes' deployment controller step by step
(sync.go, rolling.go, recreate.go, progress.go), one step per sync, and
relies on being called again when anything it depends on changes:
- the ReplicaSets it controls are claimed (orphans matching its selector are
  adopted); the *new* one is the ReplicaSet whose template equals the
  Deployment's (ignoring pod-template-hash), the others are *old*;
- revisions: the new ReplicaSet carries "deployment.kubernetes.io/revision" =
  max(old) + 1 (a ReplicaSet brought back by `rollout undo` gets the next
  number, its earlier one goes to ".../revision-history"), and the Deployment
  carries its new ReplicaSet's revision; "desired-replicas" and
  "max-replicas" annotations on every ReplicaSet it scales;
- paused: scale only (proportionally), no rollout, Progressing=Unknown
  DeploymentPaused; a scaling event while rolling spreads the change over the
  ReplicaSets in proportion, as Kubernetes does;
- RollingUpdate: scale the new ReplicaSet up within maxSurge, the old ones
  down within maxUnavailable counting only *available* pods (ready for
  minReadySeconds, from ReplicaSet status); Recreate: old ones to 0, wait
  until none of their pods runs, then the new one to full size;
- revisionHistoryLimit: delete the oldest empty old ReplicaSets beyond it;
- status: replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas, conditions Available and Progressing
  (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
  NewReplicaSetAvailable, or False ProgressDeadlineExceeded once no progress
  was made for progressDeadlineSeconds).

Threads model: the controller's workers (see base.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corral import selectors
from corral.errors import Invalid
from corral.v1 import apps_pb2, core_pb2

from . import rollout as ru
from .actions import Create, Delete, Emit, Result, Update, UpdateStatus, event
from .base import Controller, ns_key
from .clock import from_timestamp
from .informers import Handlers
from .podutil import (
    POD_TEMPLATE_HASH,
    controller_ref,
    copy,
    created,
    get_condition,
    is_finished,
    is_terminating,
    owner_ref,
    remove_condition,
    set_condition,
)
from .replicaset import claim_pods

PROGRESSING = "Progressing"
AVAILABLE = "Available"
MAX_INT32 = 2**31 - 1


def progress_deadline(d: apps_pb2.Deployment) -> int | None:
    if not d.spec.HasField("progress_deadline_seconds"):
        return 600
    value = d.spec.progress_deadline_seconds
    return None if value == MAX_INT32 else value


def history_limit(d: apps_pb2.Deployment) -> int:
    return d.spec.revision_history_limit if d.spec.HasField("revision_history_limit") else 10


class _Sync:
    """One sync of one Deployment: working copies of its ReplicaSets and status."""

    def __init__(self, d: apps_pb2.Deployment, rss: list[apps_pb2.ReplicaSet],
                 pods: list[core_pb2.Pod], now: float, result: Result) -> None:
        self.d = d
        self.now = now
        self.result = result
        self.pods = pods
        # Working copies; `orig` to diff against at the end.
        self.rss = {rs.metadata.uid: copy(rs) for rs in rss}
        self.orig = {rs.metadata.uid: rs for rs in rss}
        self.new: apps_pb2.ReplicaSet | None = None
        self.created: apps_pb2.ReplicaSet | None = None
        self.status = copy(d.status)
        self.d_annotations = dict(d.metadata.annotations)
        self.events: list[tuple[str, str]] = []

    # ---- lookups -----------------------------------------------------------------
    @property
    def olds(self) -> list[apps_pb2.ReplicaSet]:
        new_uid = self.new.metadata.uid if self.new is not None else None
        out = [rs for uid, rs in self.rss.items() if uid != new_uid]
        return sorted(out, key=lambda rs: (created(rs), rs.metadata.name))

    @property
    def all(self) -> list[apps_pb2.ReplicaSet]:
        return self.olds + ([self.new] if self.new is not None else [])

    def find_new(self) -> apps_pb2.ReplicaSet | None:
        want_hash = ru.template_hash(self.d.spec.template, self._collisions())
        candidates = sorted(self.rss.values(), key=lambda rs: (created(rs), rs.metadata.name))
        for rs in candidates:
            if ru.templates_equal(rs.spec.template, self.d.spec.template):
                return rs
        for rs in candidates:
            if rs.metadata.labels.get(POD_TEMPLATE_HASH) == want_hash and \
                    rs.metadata.name == f"{self.d.metadata.name}-{want_hash}":
                return rs
        return None

    def _collisions(self) -> int | None:
        s = self.d.status
        return s.collision_count if s.HasField("collision_count") else None

    # ---- writes (on working copies) ------------------------------------------------
    def scale(self, rs: apps_pb2.ReplicaSet, size: int, operation: str = "") -> bool:
        size = max(size, 0)
        old = ru.replicas(rs)
        surge = ru.max_surge(self.d)
        want = ru.replicas(self.d)
        annotations = rs.metadata.annotations
        changed = old != size or annotations.get(ru.DESIRED_REPLICAS) != str(want) or \
            annotations.get(ru.MAX_REPLICAS) != str(want + surge)
        rs.spec.replicas = size
        annotations[ru.DESIRED_REPLICAS] = str(want)
        annotations[ru.MAX_REPLICAS] = str(want + surge)
        if old != size:
            op = operation or ("up" if size > old else "down")
            self.events.append(("ScalingReplicaSet",
                                f"Scaled {op} replica set {rs.metadata.name} to {size} "
                                f"from {old}"))
        return changed and old != size

    def sync_revision(self, create: bool) -> None:
        """getAllReplicaSetsAndSyncRevision: find (or create) the new ReplicaSet."""
        self.new = self.find_new()
        max_old = max((ru.revision(rs) for rs in self.olds), default=0)
        new_revision = max_old + 1
        if self.new is not None:
            rs = self.new
            a = rs.metadata.annotations
            for k, v in ru.annotations_for_rs(self.d).items():
                a[k] = v
            current = ru.revision(rs)
            if current < new_revision:
                if current > 0:
                    history = [h for h in a.get(ru.REVISION_HISTORY, "").split(",") if h]
                    a[ru.REVISION_HISTORY] = ",".join([*history, str(current)])
                a[ru.REVISION] = str(new_revision)
            if ru.DESIRED_REPLICAS not in a:
                a[ru.DESIRED_REPLICAS] = str(ru.replicas(self.d))
                a[ru.MAX_REPLICAS] = str(ru.replicas(self.d) + ru.max_surge(self.d))
            rs.spec.min_ready_seconds = self.d.spec.min_ready_seconds
            self.d_annotations[ru.REVISION] = a[ru.REVISION]
            if get_condition(self.status.conditions, PROGRESSING) is None and \
                    progress_deadline(self.d) is not None:
                set_condition(self.status.conditions, PROGRESSING, "True", "FoundNewReplicaSet",
                              f'Found new replica set "{rs.metadata.name}"', self.now)
            return
        if not create:
            return
        h = ru.template_hash(self.d.spec.template, self._collisions())
        rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name = f"{self.d.metadata.name}-{h}"
        rs.metadata.namespace = self.d.metadata.namespace
        rs.metadata.labels.update(self.d.spec.template.metadata.labels)
        rs.metadata.labels[POD_TEMPLATE_HASH] = h
        rs.metadata.annotations.update(ru.annotations_for_rs(self.d))
        rs.metadata.annotations[ru.REVISION] = str(new_revision)
        rs.metadata.owner_references.append(owner_ref(self.d))
        rs.spec.selector.CopyFrom(self.d.spec.selector)
        rs.spec.selector.match_labels[POD_TEMPLATE_HASH] = h
        rs.spec.template.CopyFrom(self.d.spec.template)
        rs.spec.template.metadata.labels[POD_TEMPLATE_HASH] = h
        rs.spec.min_ready_seconds = self.d.spec.min_ready_seconds
        rs.metadata.uid = f"<new {rs.metadata.name}>"
        rs.spec.replicas = 0
        self.rss[rs.metadata.uid] = rs
        self.new = rs
        size = self.new_rs_replicas()
        rs.spec.replicas = size
        rs.metadata.annotations[ru.DESIRED_REPLICAS] = str(ru.replicas(self.d))
        rs.metadata.annotations[ru.MAX_REPLICAS] = str(ru.replicas(self.d) +
                                                        ru.max_surge(self.d))
        self.created = rs
        self.d_annotations[ru.REVISION] = str(new_revision)
        if progress_deadline(self.d) is not None:
            set_condition(self.status.conditions, PROGRESSING, "True", "NewReplicaSetCreated",
                          f'Created new replica set "{rs.metadata.name}"', self.now)
        if size > 0:
            self.events.append(("ScalingReplicaSet",
                                f"Scaled up replica set {rs.metadata.name} to {size} from 0"))

    def new_rs_replicas(self) -> int:
        """NewRSNewReplicas."""
        want = ru.replicas(self.d)
        assert self.new is not None
        if not ru.is_rolling(self.d):
            return want
        current = ru.sum_spec(self.all)
        max_total = want + ru.max_surge(self.d)
        if current >= max_total:
            return ru.replicas(self.new)
        up = min(max_total - current, want - ru.replicas(self.new))
        return ru.replicas(self.new) + max(up, 0)

    # ---- strategies ------------------------------------------------------------------
    def is_scaling_event(self) -> bool:
        self.sync_revision(create=False)
        for rs in self.all:
            if ru.replicas(rs) > 0:
                desired = rs.metadata.annotations.get(ru.DESIRED_REPLICAS)
                if desired is not None and desired != str(ru.replicas(self.d)):
                    return True
        return False

    def proportional_scale(self) -> None:
        d = self.d
        want = ru.replicas(d)
        active = [rs for rs in self.all if ru.replicas(rs) > 0]
        latest = None
        if len(active) == 1:
            latest = active[0]
        elif not active:
            latest = self.new or (self.olds[-1] if self.olds else None)
        if latest is not None:
            if ru.replicas(latest) != want:
                self.scale(latest, want)
            return
        new = self.new
        if new is not None and ru.replicas(new) == want and \
                new.metadata.annotations.get(ru.DESIRED_REPLICAS) == str(want) and \
                new.status.available_replicas == want:
            for rs in self.olds:
                if ru.replicas(rs) > 0:
                    self.scale(rs, 0)
            return
        if not ru.is_rolling(d):
            return
        allowed = want + ru.max_surge(d) if want > 0 else 0
        to_add = allowed - ru.sum_spec(active)
        if to_add > 0:
            active.sort(key=lambda rs: (-ru.replicas(rs), -created(rs)))
            op = "up"
        elif to_add < 0:
            active.sort(key=lambda rs: (-ru.replicas(rs), created(rs)))
            op = "down"
        else:
            op = ""
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            if to_add != 0:
                proportion = self._proportion(rs, to_add, added)
                sizes[rs.metadata.uid] = ru.replicas(rs) + proportion
                added += proportion
            else:
                sizes[rs.metadata.uid] = ru.replicas(rs)
        for i, rs in enumerate(active):
            if i == 0 and to_add != 0:
                sizes[rs.metadata.uid] = max(sizes[rs.metadata.uid] + to_add - added, 0)
            self.scale(rs, sizes[rs.metadata.uid], op)

    def _proportion(self, rs: apps_pb2.ReplicaSet, to_add: int, added: int) -> int:
        if ru.replicas(rs) == 0 or to_add == 0 or to_add == added:
            return 0
        d = self.d
        if ru.replicas(d) == 0:
            fraction = -ru.replicas(rs)
        else:
            total = ru.replicas(d) + ru.max_surge(d)
            try:
                annotated = int(rs.metadata.annotations[ru.MAX_REPLICAS])
            except (KeyError, ValueError):
                annotated = d.status.replicas
            if annotated <= 0:
                fraction = 0
            else:
                exact = ru.replicas(rs) * total / annotated
                fraction = int(exact + 0.5) - ru.replicas(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def rolling(self) -> None:
        self.sync_revision(create=True)
        if self.reconcile_new():
            return
        if self.reconcile_old():
            return
        if self.complete(self.d.status):
            self.cleanup()

    def reconcile_new(self) -> bool:
        new = self.new
        assert new is not None
        want = ru.replicas(self.d)
        if ru.replicas(new) == want:
            return False
        if ru.replicas(new) > want:
            return self.scale(new, want, "down")
        return self.scale(new, self.new_rs_replicas(), "up")

    def reconcile_old(self) -> bool:
        new = self.new
        assert new is not None
        olds = [rs for rs in self.olds if ru.replicas(rs) > 0]
        if not olds:
            return False
        all_pods = ru.sum_spec(self.all)
        min_available = ru.replicas(self.d) - ru.max_unavailable(self.d)
        new_unavailable = ru.replicas(new) - new.status.available_replicas
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = 0
        for rs in olds:
            if cleaned >= max_scaled_down:
                break
            size = ru.replicas(rs)
            if size == 0 or size == rs.status.available_replicas:
                continue
            down = min(max_scaled_down - cleaned, size - rs.status.available_replicas)
            self.scale(rs, size - down, "down")
            cleaned += down
        available = ru.sum_status(self.all, "available_replicas")
        scaled = 0
        if available > min_available:
            total = available - min_available
            for rs in olds:
                if scaled >= total:
                    break
                size = ru.replicas(rs)
                if size == 0:
                    continue
                down = min(size, total - scaled)
                self.scale(rs, size - down, "down")
                scaled += down
        return cleaned + scaled > 0

    def recreate(self) -> None:
        self.sync_revision(create=False)
        scaled = False
        for rs in self.olds:
            if ru.replicas(rs) > 0:
                self.scale(rs, 0, "down")
                scaled = True
        if scaled or self.old_pods_running():
            return
        if self.new is None:
            self.sync_revision(create=True)
        assert self.new is not None
        if ru.replicas(self.new) != ru.replicas(self.d):
            self.scale(self.new, ru.replicas(self.d), "up")
        if self.complete(self.d.status):
            self.cleanup()

    def old_pods_running(self) -> bool:
        new_uid = self.new.metadata.uid if self.new is not None else None
        old_uids = {uid for uid in self.rss if uid != new_uid}
        for pod in self.pods:
            ref = controller_ref(pod)
            if ref is not None and ref.uid in old_uids and not is_finished(pod):
                return True
        return False

    def cleanup(self) -> None:
        limit = history_limit(self.d)
        cleanable = [rs for rs in self.olds if not is_terminating(rs)]
        extra = len(cleanable) - limit
        if extra <= 0:
            return
        cleanable.sort(key=lambda rs: (ru.revision(rs), created(rs)))
        for rs in cleanable[:extra]:
            orig = self.orig.get(rs.metadata.uid)
            if orig is None or rs.status.replicas != 0 or ru.replicas(rs) != 0 or \
                    ru.replicas(orig) != 0 or \
                    rs.metadata.generation > rs.status.observed_generation:
                continue
            self.result.add(Delete.of(orig))

    # ---- status -----------------------------------------------------------------------
    def complete(self, status: apps_pb2.DeploymentStatus) -> bool:
        want = ru.replicas(self.d)
        return (status.updated_replicas == want and status.replicas == want
                and status.available_replicas == want
                and status.observed_generation >= self.d.metadata.generation)

    def calculate_status(self) -> apps_pb2.DeploymentStatus:
        s = self.status
        rss = self.all
        s.observed_generation = self.d.metadata.generation
        s.replicas = ru.sum_status(rss, "replicas")
        s.updated_replicas = self.new.status.replicas if self.new is not None else 0
        s.ready_replicas = ru.sum_status(rss, "ready_replicas")
        s.available_replicas = ru.sum_status(rss, "available_replicas")
        s.unavailable_replicas = max(ru.sum_spec(rss) - s.available_replicas, 0)
        min_available = ru.replicas(self.d) - ru.max_unavailable(self.d)
        if s.available_replicas >= min_available:
            set_condition(s.conditions, AVAILABLE, "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", self.now)
        else:
            set_condition(s.conditions, AVAILABLE, "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", self.now)
        return s

    def paused_conditions(self) -> None:
        if progress_deadline(self.d) is None:
            return
        cond = get_condition(self.status.conditions, PROGRESSING)
        if cond is not None and cond.reason == "ProgressDeadlineExceeded":
            return
        paused_exists = cond is not None and cond.reason == "DeploymentPaused"
        if self.d.spec.paused and not paused_exists:
            set_condition(self.status.conditions, PROGRESSING, "Unknown", "DeploymentPaused",
                          "Deployment is paused", self.now)
        elif not self.d.spec.paused and paused_exists:
            set_condition(self.status.conditions, PROGRESSING, "Unknown", "DeploymentResumed",
                          "Deployment is resumed", self.now)

    def rollout_status(self) -> None:
        """syncRolloutStatus: Progressing from progress made, or its absence."""
        s = self.calculate_status()
        deadline = progress_deadline(self.d)
        if deadline is None:
            remove_condition(s.conditions, PROGRESSING)
            return
        cond = get_condition(s.conditions, PROGRESSING)
        complete_before = s.replicas == s.updated_replicas and cond is not None and \
            cond.reason == "NewReplicaSetAvailable"
        name = self.new.metadata.name if self.new is not None else ""
        if not complete_before:
            if self.complete(s):
                msg = f'ReplicaSet "{name}" has successfully progressed.' if name else \
                    "Deployment has successfully progressed."
                set_condition(s.conditions, PROGRESSING, "True", "NewReplicaSetAvailable", msg,
                              self.now)
            elif self._progressing(s):
                c = get_condition(s.conditions, PROGRESSING)
                transition = c.last_transition_time if c is not None and c.status == "True" \
                    else None
                remove_condition(s.conditions, PROGRESSING)
                set_condition(s.conditions, PROGRESSING, "True", "ReplicaSetUpdated",
                              f'ReplicaSet "{name}" is progressing.', self.now)
                if transition is not None:
                    new_c = get_condition(s.conditions, PROGRESSING)
                    assert new_c is not None
                    new_c.last_transition_time.CopyFrom(transition)
            elif self._timed_out(s, deadline):
                set_condition(s.conditions, PROGRESSING, "False", "ProgressDeadlineExceeded",
                              f'ReplicaSet "{name}" has timed out progressing.', self.now)
                self.events.append(("ProgressDeadlineExceeded",
                                    f'ReplicaSet "{name}" has timed out progressing.'))
        cond = get_condition(s.conditions, PROGRESSING)
        if cond is not None and cond.reason not in ("NewReplicaSetAvailable",
                                                    "ProgressDeadlineExceeded"):
            left = from_timestamp(cond.last_update_time) + deadline - self.now
            self.result.requeue(left + 0.5)

    def _progressing(self, s: apps_pb2.DeploymentStatus) -> bool:
        old = self.d.status
        return (s.updated_replicas > old.updated_replicas
                or (s.replicas - s.updated_replicas) < (old.replicas - old.updated_replicas)
                or s.ready_replicas > old.ready_replicas
                or s.available_replicas > old.available_replicas)

    def _timed_out(self, s: apps_pb2.DeploymentStatus, deadline: int) -> bool:
        cond = get_condition(s.conditions, PROGRESSING)
        if cond is None:
            return False
        if cond.reason == "ProgressDeadlineExceeded":
            return True
        if cond.reason == "NewReplicaSetAvailable":
            return False
        return from_timestamp(cond.last_update_time) + deadline < self.now

    # ---- actions ---------------------------------------------------------------------
    def emit_actions(self) -> None:
        r = self.result
        if self.created is not None:
            rs = copy(self.created)
            rs.metadata.uid = ""
            r.add(Create(rs, failed_event=event(self.d, "FailedCreate",
                                                f"Failed to create new replica set "
                                                f'"{rs.metadata.name}": {{error}}', "Warning")))
        for uid, rs in self.rss.items():
            orig = self.orig.get(uid)
            if orig is None:
                continue
            if rs.spec != orig.spec or rs.metadata != orig.metadata:
                r.add(Update(rs))
        if self.d_annotations != dict(self.d.metadata.annotations):
            d = copy(self.d)
            d.metadata.annotations.clear()
            d.metadata.annotations.update(self.d_annotations)
            r.add(Update(d))
        if self.status != self.d.status:
            d = copy(self.d)
            d.status.CopyFrom(self.status)
            r.add(UpdateStatus(d))
        for reason, message in self.events:
            r.add(Emit(event(self.d, reason, message,
                             "Warning" if reason == "ProgressDeadlineExceeded" else "Normal")))


def reconcile(d: apps_pb2.Deployment, replicasets: Iterable[apps_pb2.ReplicaSet],
              pods: Iterable[core_pb2.Pod], now: float) -> Result:
    result = Result()
    try:
        selector = selectors.from_proto(d.spec.selector, "spec.selector")
    except Invalid as err:
        result.why = f"invalid selector: {err}"
        return result
    if selector.empty:
        result.add(Emit(event(d, "SelectingAll",
                              "This deployment is selecting all pods. A non-empty selector "
                              "is required.", "Warning")))
        return result
    owned = claim_pods(d, selector, replicasets, result)
    s = _Sync(d, owned, list(pods), now, result)
    if is_terminating(d):
        s.sync_revision(create=False)
        s.calculate_status()
        s.emit_actions()
        result.why = "being deleted: status only"
        return result
    if d.spec.paused:
        s.sync_revision(create=False)
        s.proportional_scale()
        s.cleanup()
        s.paused_conditions()
        s.calculate_status()
        result.why = "paused"
    elif s.is_scaling_event():
        s.proportional_scale()
        s.paused_conditions()
        s.calculate_status()
        result.why = "scaling"
    else:
        s.paused_conditions()
        if ru.is_rolling(d):
            s.rolling()
            result.why = "rolling update"
        else:
            s.recreate()
            result.why = "recreate"
        s.rollout_status()
    s.emit_actions()
    return result


def collision(d: apps_pb2.Deployment, existing: apps_pb2.ReplicaSet | None) -> bool:
    """The new ReplicaSet's name is taken by one with another template (hash collision)."""
    return existing is not None and not ru.templates_equal(existing.spec.template,
                                                           d.spec.template)


class DeploymentController(Controller):
    name = "deployment"

    def setup(self) -> None:
        inf = self.ctx.informers
        inf["Deployment"].subscribe(Handlers(
            lambda d: self.queue.add(ns_key(d)),
            lambda old, new: self.queue.add(ns_key(new)),
            lambda d: None))
        inf["ReplicaSet"].subscribe(Handlers(self._rs, lambda old, new: self._rs_changed(old, new),
                                             self._rs))
        inf["Pod"].subscribe(Handlers(None, None, self._pod_deleted))

    def _rs(self, rs: apps_pb2.ReplicaSet) -> None:
        ref = controller_ref(rs)
        if ref is not None:
            if ref.kind == "Deployment":
                self.queue.add((rs.metadata.namespace, ref.name))
            return
        for d in self.ctx.informers["Deployment"].in_namespace(rs.metadata.namespace):
            try:
                if selectors.from_proto(d.spec.selector).matches(rs.metadata.labels):
                    self.queue.add(ns_key(d))
            except Invalid:
                continue

    def _rs_changed(self, old: apps_pb2.ReplicaSet, new: apps_pb2.ReplicaSet) -> None:
        old_ref = controller_ref(old)
        if old_ref is not None and old_ref.kind == "Deployment":
            self.queue.add((old.metadata.namespace, old_ref.name))
        self._rs(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        # Recreate waits for the old pods to be gone.
        ref = controller_ref(pod)
        if ref is None or ref.kind != "ReplicaSet":
            return
        rs = self.ctx.informers["ReplicaSet"].get(ref.name, pod.metadata.namespace)
        if rs is not None:
            self._rs(rs)

    def resync_keys(self) -> Iterable[tuple[str, str]]:
        return [ns_key(d) for d in self.ctx.informers["Deployment"].items()]

    def sync(self, key: tuple[str, str]) -> Result | None:
        ns, name = key
        d = self.ctx.informers["Deployment"].get(name, ns)
        if d is None:
            return None
        rss = self.ctx.informers["ReplicaSet"].in_namespace(ns)
        pods = self.ctx.informers["Pod"].in_namespace(ns) \
            if d.spec.strategy.type == "Recreate" else []
        return reconcile(d, rss, pods, self.ctx.clock.time())

    def after(self, key: tuple[str, str], result: Result, outcome: Any) -> None:
        """A create refused as AlreadyExists by a ReplicaSet with another template is a
        hash collision: count it in status so the next name differs (Kubernetes)."""
        creates = result.of_type(Create)
        if not creates or not outcome.stale or self.ctx.stop.is_set():
            return
        ns, name = key
        d = self.ctx.informers["Deployment"].get(name, ns)
        if d is None:
            return
        rs_name = creates[0].obj.metadata.name
        try:
            existing = self.ctx.client.get("ReplicaSet", rs_name, ns)
        except Exception:
            return
        if collision(d, existing) and not is_controlled_by_uid(existing, d.metadata.uid):
            new = copy(d)
            new.status.collision_count = (d.status.collision_count
                                          if d.status.HasField("collision_count") else 0) + 1
            self.ctx.executor().run([UpdateStatus(new)])


def is_controlled_by_uid(obj: Any, uid: str) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.uid == uid
