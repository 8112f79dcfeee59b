"""What to do next for one pod: the reconcile diff between its spec and its
containers, as kubelet's computePodActions. Pure.

`plan()` looks at the pod, the pod's containers as Podman reports them, the
crash back-off and the liveness verdicts, and returns the actions that close
the gap (start, kill, remove), why each container waits, and when to look again.
The pod worker executes the actions and calls `plan()` again: running it twice
on the same facts gives the same answer, so it is safe after any crash.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from corral.v1 import core_pb2
from nodeagent.backoff import Backoff
from nodeagent.podstatus import FAILED, Waiting
from nodeagent.records import ContainerRecord, latest_by_name, spec_hash

# Dead attempts kept per container: the latest (its exit code is the status)
# and the one before (lastState, `logs --previous`).
KEEP_DEAD = 2


@dataclass(frozen=True)
class Start:
    spec: core_pb2.Container
    init: bool
    attempt: int
    # The dead container this one replaces (for the back-off record).
    replaces: ContainerRecord | None = None


@dataclass(frozen=True)
class StartExisting:
    """A container that was created but never started (an agent crash in between)."""

    record: ContainerRecord


@dataclass(frozen=True)
class Kill:
    record: ContainerRecord
    grace: int
    reason: str


@dataclass(frozen=True)
class Remove:
    record: ContainerRecord
    reason: str


Action = Start | StartExisting | Kill | Remove


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    # Container name ("init:NAME" for init containers) -> why it waits.
    waiting: dict[str, Waiting] = field(default_factory=dict)
    # Look again after this many seconds (a back-off ending); None: on the next event.
    requeue_after: float | None = None
    # Set when the pod ends now (activeDeadlineSeconds).
    terminal_phase: str = ""
    reason: str = ""
    message: str = ""

    def wake_in(self, seconds: float) -> None:
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def grace_of(pod: core_pb2.Pod) -> int:
    if pod.metadata.HasField("deletion_grace_period_seconds"):
        return max(0, pod.metadata.deletion_grace_period_seconds)
    if pod.spec.HasField("termination_grace_period_seconds"):
        return max(0, pod.spec.termination_grace_period_seconds)
    return 30


def _probe_grace(pod: core_pb2.Pod, spec: core_pb2.Container) -> int:
    for probe in (spec.liveness_probe, spec.startup_probe):
        if probe.HasField("termination_grace_period_seconds"):
            return max(0, probe.termination_grace_period_seconds)
    return grace_of(pod)


def _should_restart(policy: str, rec: ContainerRecord) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return rec.exit_code != 0
    return False


def _backoff_message(delay: float, name: str, pod: core_pb2.Pod) -> str:
    meta = pod.metadata
    return (f"back-off {int(delay)}s restarting failed container={name} "
            f"pod={meta.name}_{meta.namespace}({meta.uid})")


def _collect_garbage(plan: Plan, pod: core_pb2.Pod, records: Sequence[ContainerRecord]) -> None:
    wanted_init = {c.name for c in pod.spec.init_containers}
    wanted_app = {c.name for c in pod.spec.containers}
    for init, wanted in ((True, wanted_init), (False, wanted_app)):
        for name, recs in latest_by_name(records, init=init).items():
            if name not in wanted:
                for rec in recs:
                    if rec.running:
                        plan.actions.append(Kill(rec, grace_of(pod), "not in the pod's spec"))
                    plan.actions.append(Remove(rec, "not in the pod's spec"))
                continue
            dead = [r for r in recs[1:] if not r.running]
            for rec in dead[KEEP_DEAD - 1:]:
                plan.actions.append(Remove(rec, "old attempt"))
            # Two running attempts of one container (should never happen): keep the newest.
            for rec in recs[1:]:
                if rec.running:
                    plan.actions.append(Kill(rec, 0, "a newer attempt exists"))


def plan(pod: core_pb2.Pod, records: Sequence[ContainerRecord], *, now: float,
         backoff: Backoff, liveness_failed: Collection[str] = ()) -> Plan:
    """The actions for a pod that is not being deleted. `liveness_failed` holds the
    ids of containers whose liveness (or startup) probe says restart."""
    out = Plan()
    policy = pod.spec.restart_policy or "Always"
    uid = pod.metadata.uid
    _collect_garbage(out, pod, records)

    if pod.status.phase in ("Succeeded", "Failed"):
        for rec in records:
            if rec.running:
                out.actions.append(Kill(rec, grace_of(pod), f"pod is {pod.status.phase}"))
        return out

    deadline = pod.spec.active_deadline_seconds if pod.spec.HasField(
        "active_deadline_seconds") else None
    if deadline is not None and pod.status.HasField("start_time"):
        started = pod.status.start_time.seconds
        if now >= started + deadline:
            out.terminal_phase = FAILED
            out.reason = "DeadlineExceeded"
            out.message = "Pod was active on the node longer than the specified deadline"
            for rec in records:
                if rec.running:
                    out.actions.append(Kill(rec, grace_of(pod), "active deadline exceeded"))
            return out
        out.wake_in(started + deadline - now)

    init_by_name = latest_by_name(records, init=True)
    app_by_name = latest_by_name(records, init=False)
    if not app_by_name:
        for spec in pod.spec.init_containers:
            recs = init_by_name.get(spec.name, [])
            latest = recs[0] if recs else None
            if latest is None:
                out.actions.append(Start(spec, True, 0))
                return out
            if latest.running:
                return out
            if not latest.exited:
                out.actions.append(StartExisting(latest))
                return out
            if latest.exit_code == 0:
                continue
            if policy == "Never":
                return out  # the pod fails (podstatus.phase)
            key = (uid, "init:" + spec.name)
            ran_for = max(0.0, latest.finished_at - latest.started_at)
            remaining = backoff.remaining(key, latest.finished_at, ran_for, now)
            if remaining > 0:
                out.waiting["init:" + spec.name] = Waiting(
                    "CrashLoopBackOff", _backoff_message(backoff.delay(key), spec.name, pod))
                out.wake_in(remaining)
                return out
            out.actions.append(Start(spec, True, latest.attempt + 1, latest))
            return out

    for spec in pod.spec.containers:
        recs = app_by_name.get(spec.name, [])
        latest = recs[0] if recs else None
        if latest is None:
            out.actions.append(Start(spec, False, 0))
            continue
        if latest.running:
            if latest.spec_hash and latest.spec_hash != spec_hash(spec):
                out.actions.append(Kill(latest, grace_of(pod),
                                        "container spec changed, will be restarted"))
            elif latest.id in liveness_failed:
                out.actions.append(Kill(latest, _probe_grace(pod, spec),
                                        "failed liveness probe, will be restarted"))
            continue
        if not latest.exited:
            out.actions.append(StartExisting(latest))
            continue
        changed = bool(latest.spec_hash) and latest.spec_hash != spec_hash(spec)
        if not _should_restart(policy, latest) and not (changed and policy != "Never"):
            continue
        key = (uid, spec.name)
        ran_for = max(0.0, latest.finished_at - latest.started_at)
        remaining = backoff.remaining(key, latest.finished_at, ran_for, now)
        if remaining > 0:
            out.waiting[spec.name] = Waiting(
                "CrashLoopBackOff", _backoff_message(backoff.delay(key), spec.name, pod))
            out.wake_in(remaining)
            continue
        out.actions.append(Start(spec, False, latest.attempt + 1, latest))
    return out
