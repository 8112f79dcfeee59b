"""A pod's status computed from what runs, as kubelet computes it. Pure.

Inputs: the pod (spec, and its current status to keep start time and the
transition times of conditions that did not change), the pod's containers as
Podman reports them (records.py), what the pod worker knows that Podman does not
(why a container is waiting: ErrImagePull, CrashLoopBackOff, ...), the probe
results, the pod's IP and the time. Output: a PodStatus. The same inputs give
byte-identical output, so the status manager can write only on change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from corral.v1 import core_pb2, meta_pb2
from nodeagent.records import ContainerRecord, latest_by_name

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TERMINAL = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ProbeView:
    """What the prober says about one container (by its current container id)."""

    started: bool = True
    ready: bool = True


@dataclass
class PodFacts:
    records: Sequence[ContainerRecord]
    waiting: Mapping[str, Waiting] = field(default_factory=dict)
    probes: Mapping[str, ProbeView] = field(default_factory=dict)
    pod_ip: str = ""
    host_ip: str = ""
    now: float = 0.0
    # Set by the worker when it ends the pod itself (activeDeadlineSeconds, ...).
    terminal_phase: str = ""
    reason: str = ""
    message: str = ""


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(seconds))
    return ts


def container_id(rec: ContainerRecord) -> str:
    return f"podman://{rec.id}"


def _terminated(rec: ContainerRecord) -> core_pb2.ContainerStateTerminated:
    if rec.oom_killed:
        reason = "OOMKilled"
    elif rec.exit_code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    term = core_pb2.ContainerStateTerminated(exit_code=rec.exit_code, reason=reason,
                                             container_id=container_id(rec))
    if rec.exit_code > 128:
        term.signal = rec.exit_code - 128
    if rec.started_at:
        term.started_at.CopyFrom(_ts(rec.started_at))
    if rec.finished_at:
        term.finished_at.CopyFrom(_ts(rec.finished_at))
    return term


def container_status(spec: core_pb2.Container, recs: Sequence[ContainerRecord],
                     waiting: Waiting | None, probe: ProbeView | None,
                     default_waiting: str) -> core_pb2.ContainerStatus:
    st = core_pb2.ContainerStatus(name=spec.name, image=spec.image)
    latest = recs[0] if recs else None
    previous = recs[1] if len(recs) > 1 else None
    if latest is None:
        w = waiting or Waiting(default_waiting)
        st.state.waiting.reason = w.reason
        st.state.waiting.message = w.message
        st.started = False
        return st
    st.restart_count = latest.attempt
    st.image_id = latest.image_id
    st.container_id = container_id(latest)
    if latest.running:
        if latest.started_at:
            st.state.running.started_at.CopyFrom(_ts(latest.started_at))
        else:
            st.state.running.SetInParent()
        if previous is not None and previous.exited:
            st.last_state.terminated.CopyFrom(_terminated(previous))
        view = probe or ProbeView()
        st.started = view.started
        st.ready = view.started and view.ready
    elif latest.exited:
        if waiting is not None:
            # Waiting to restart: the dead container becomes lastState.
            st.state.waiting.reason = waiting.reason
            st.state.waiting.message = waiting.message
            st.last_state.terminated.CopyFrom(_terminated(latest))
        else:
            st.state.terminated.CopyFrom(_terminated(latest))
            if previous is not None and previous.exited:
                st.last_state.terminated.CopyFrom(_terminated(previous))
        st.started = False
    else:
        w = waiting or Waiting("ContainerCreating")
        st.state.waiting.reason = w.reason
        st.state.waiting.message = w.message
        st.started = False
        if previous is not None and previous.exited:
            st.last_state.terminated.CopyFrom(_terminated(previous))
    return st


def init_done(pod: core_pb2.Pod, records: Sequence[ContainerRecord]) -> bool:
    """All init containers succeeded, or app containers already ran (then the init
    containers may have been removed: kubelet's rule)."""
    if any(not r.init for r in records):
        return True
    by_name = latest_by_name(records, init=True)
    for spec in pod.spec.init_containers:
        recs = by_name.get(spec.name)
        if not recs or not (recs[0].exited and recs[0].exit_code == 0):
            return False
    return True


def phase(pod: core_pb2.Pod, statuses: Sequence[core_pb2.ContainerStatus],
          init_statuses: Sequence[core_pb2.ContainerStatus], initialized: bool) -> str:
    """Kubernetes' getPhase."""
    policy = pod.spec.restart_policy or "Always"
    if not initialized:
        for st in init_statuses:
            term = st.state.terminated if st.state.HasField("terminated") else None
            if term is not None and term.exit_code != 0 and policy == "Never":
                return FAILED
        return PENDING
    running = waiting = stopped = succeeded = 0
    for st in statuses:
        state = st.state
        if state.HasField("running"):
            running += 1
        elif state.HasField("terminated"):
            stopped += 1
            if state.terminated.exit_code == 0:
                succeeded += 1
        elif state.HasField("waiting"):
            if st.last_state.HasField("terminated"):
                stopped += 1
            else:
                waiting += 1
        else:
            waiting += 1
    if waiting > 0:
        return PENDING
    if running > 0:
        return RUNNING
    if stopped > 0:
        if policy == "Always":
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        if policy == "Never":
            return FAILED
        return RUNNING
    return PENDING


def _condition(previous: Mapping[str, meta_pb2.Condition], ctype: str, ok: bool, now: float,
               reason: str = "", message: str = "") -> meta_pb2.Condition:
    status = "True" if ok else "False"
    cond = meta_pb2.Condition(type=ctype, status=status)
    if not ok:
        cond.reason = reason
        cond.message = message
    before = previous.get(ctype)
    if before is not None and before.status == status and before.HasField("last_transition_time"):
        cond.last_transition_time.CopyFrom(before.last_transition_time)
    else:
        cond.last_transition_time.CopyFrom(_ts(now))
    return cond


def compute(pod: core_pb2.Pod, facts: PodFacts) -> core_pb2.PodStatus:
    old = pod.status
    previous = {c.type: c for c in old.conditions}
    initialized = init_done(pod, facts.records)

    init_by_name = latest_by_name(facts.records, init=True)
    init_statuses = []
    for spec in pod.spec.init_containers:
        recs = init_by_name.get(spec.name, [])
        init_statuses.append(container_status(spec, recs, facts.waiting.get("init:" + spec.name),
                                              None, "PodInitializing"))
        init_statuses[-1].ready = bool(recs) and recs[0].exited and recs[0].exit_code == 0
        init_statuses[-1].ClearField("started")
    app_by_name = latest_by_name(facts.records, init=False)
    statuses = []
    for spec in pod.spec.containers:
        default = "ContainerCreating" if initialized else "PodInitializing"
        statuses.append(container_status(spec, app_by_name.get(spec.name, []),
                                         facts.waiting.get(spec.name),
                                         facts.probes.get(spec.name), default))

    ph = facts.terminal_phase or phase(pod, statuses, init_statuses, initialized)
    if old.phase in TERMINAL:
        ph = old.phase  # a pod never leaves Succeeded or Failed

    status = core_pb2.PodStatus(phase=ph, host_ip=facts.host_ip)
    if facts.pod_ip:
        status.pod_ip = facts.pod_ip
        status.pod_ips.add(ip=facts.pod_ip)
    elif old.pod_ip:
        status.pod_ip = old.pod_ip
        status.pod_ips.extend(old.pod_ips)
    if old.HasField("start_time"):
        status.start_time.CopyFrom(old.start_time)
    else:
        status.start_time.CopyFrom(_ts(facts.now))
    if facts.reason:
        status.reason = facts.reason
        status.message = facts.message
    elif ph == old.phase and old.reason:
        status.reason = old.reason
        status.message = old.message

    not_init = [s.name for s, spec in zip(init_statuses, pod.spec.init_containers, strict=True)
                if not s.ready]
    not_ready = [s.name for s in statuses if not s.ready]
    terminal = ph in TERMINAL
    status.conditions.append(_condition(previous, "PodScheduled", True, facts.now))
    status.conditions.append(_condition(
        previous, "Initialized", initialized, facts.now, "ContainersNotInitialized",
        f"containers with incomplete status: [{' '.join(not_init)}]"))
    ready = initialized and not not_ready and not terminal
    reason = "PodCompleted" if terminal else "ContainersNotReady"
    message = "" if terminal else f"containers with unready status: [{' '.join(not_ready)}]"
    status.conditions.append(_condition(previous, "ContainersReady", ready, facts.now,
                                        reason, message))
    status.conditions.append(_condition(previous, "Ready", ready, facts.now, reason, message))
    status.init_container_statuses.extend(init_statuses)
    status.container_statuses.extend(statuses)
    return status
