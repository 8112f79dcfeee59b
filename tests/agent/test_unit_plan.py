"""Unit tests (no cluster, no Podman): the reconcile diff, back-off and pod status."""

from __future__ import annotations

from dataclasses import replace

from corral.v1 import core_pb2
from nodeagent import plan, podstatus
from nodeagent.backoff import Backoff
from nodeagent.records import EXITED, RUNNING, ContainerRecord, spec_hash

NOW = 1_800_000_000.0


def make_pod(*names: str, init: tuple[str, ...] = (), policy: str = "Always",
             uid: str = "uid-1") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = "p"
    p.metadata.namespace = "ns"
    p.metadata.uid = uid
    p.spec.restart_policy = policy
    for n in init:
        p.spec.init_containers.add(name=n, image="img:1")
    for n in names:
        p.spec.containers.add(name=n, image="img:1")
    return p


def rec(pod: core_pb2.Pod, name: str, *, state: str = RUNNING, attempt: int = 0,
        exit_code: int = 0, started: float = NOW - 100, finished: float = 0.0,
        init: bool = False, cid: str = "") -> ContainerRecord:
    specs = pod.spec.init_containers if init else pod.spec.containers
    spec = next(c for c in specs if c.name == name)
    return ContainerRecord(
        id=cid or f"{name}-{attempt}", podman_name=f"{name}_{attempt}",
        pod_uid=pod.metadata.uid, pod_namespace="ns", pod_name="p", name=name, init=init,
        attempt=attempt, spec_hash=spec_hash(spec), state=state, exit_code=exit_code,
        started_at=started, finished_at=finished if state == EXITED else 0.0,
        image="img:1", image_id="sha", grace_seconds=30)


def kinds_of(p: plan.Plan) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def bo() -> Backoff:
    return Backoff(10, 300, 600)


# ---- back-off ----------------------------------------------------------------------------
def test_backoff_sequence_matches_kubelet() -> None:
    b = Backoff(10, 300, 600)
    key = ("u", "c")
    waits = []
    finished = 0.0
    for _ in range(8):
        now = finished + 1  # the container crashed one second after its start
        remaining = b.remaining(key, finished, 1.0, now)
        waits.append(round(remaining + 1))
        b.restarted(key, finished)
        finished = now + remaining + 1
    assert waits == [1, 10, 20, 40, 80, 160, 300, 300]


def test_backoff_resets_after_a_long_run_and_forgets_pods() -> None:
    b = Backoff(10, 300, 600)
    key = ("u", "c")
    b.restarted(key, 0.0)
    b.restarted(key, 5.0)
    assert b.delay(key) == 20
    assert b.remaining(key, 1000.0, ran_for=601.0, now=1000.0) == 0.0
    assert b.delay(key) == 0
    b.restarted(key, 0.0)
    b.forget_pod("u")
    assert b.delay(key) == 0


# ---- plan ---------------------------------------------------------------------------------
def test_new_pod_starts_every_container() -> None:
    pod = make_pod("a", "b")
    p = plan.plan(pod, [], now=NOW, backoff=bo())
    assert [(type(a).__name__, a.spec.name, a.attempt) for a in p.actions] == [
        ("Start", "a", 0), ("Start", "b", 0)]


def test_running_pod_needs_nothing() -> None:
    pod = make_pod("a")
    assert plan.plan(pod, [rec(pod, "a")], now=NOW, backoff=bo()).actions == []


def test_init_containers_run_one_at_a_time_in_order() -> None:
    pod = make_pod("app", init=("i1", "i2"))
    p = plan.plan(pod, [], now=NOW, backoff=bo())
    assert [(a.spec.name, a.init) for a in p.actions] == [("i1", True)]
    running = [rec(pod, "i1", init=True)]
    assert plan.plan(pod, running, now=NOW, backoff=bo()).actions == []
    done = [rec(pod, "i1", init=True, state=EXITED, finished=NOW - 1)]
    p = plan.plan(pod, done, now=NOW, backoff=bo())
    assert [(a.spec.name, a.init) for a in p.actions] == [("i2", True)]
    both = [*done, rec(pod, "i2", init=True, state=EXITED, finished=NOW - 1)]
    p = plan.plan(pod, both, now=NOW, backoff=bo())
    assert [(a.spec.name, a.init) for a in p.actions] == [("app", False)]


def test_failed_init_container_never_policy_stops_and_pod_fails() -> None:
    pod = make_pod("app", init=("i1",), policy="Never")
    recs = [rec(pod, "i1", init=True, state=EXITED, exit_code=1, finished=NOW - 1)]
    assert plan.plan(pod, recs, now=NOW, backoff=bo()).actions == []
    status = podstatus.compute(pod, podstatus.PodFacts(records=recs, now=NOW))
    assert status.phase == "Failed"


def test_crash_restarts_at_once_then_backs_off() -> None:
    pod = make_pod("a")
    b = bo()
    dead = rec(pod, "a", state=EXITED, exit_code=3, finished=NOW - 1)
    p = plan.plan(pod, [dead], now=NOW, backoff=b)
    assert [(type(a).__name__, a.attempt) for a in p.actions] == [("Start", 1)]
    b.restarted(("uid-1", "a"), dead.finished_at)
    dead2 = rec(pod, "a", attempt=1, state=EXITED, exit_code=3, finished=NOW)
    p = plan.plan(pod, [dead2, dead], now=NOW + 2, backoff=b)
    assert p.actions == []
    assert p.waiting["a"].reason == "CrashLoopBackOff"
    assert p.waiting["a"].message == "back-off 10s restarting failed container=a pod=p_ns(uid-1)"
    assert p.requeue_after == 8.0
    p = plan.plan(pod, [dead2, dead], now=NOW + 10, backoff=b)
    assert [(type(a).__name__, a.attempt) for a in p.actions] == [("Start", 2)]


def test_restart_policy_decides_on_exit() -> None:
    for policy, code, restarts in (("Always", 0, True), ("OnFailure", 0, False),
                                   ("OnFailure", 1, True), ("Never", 1, False)):
        pod = make_pod("a", policy=policy)
        dead = rec(pod, "a", state=EXITED, exit_code=code, finished=NOW - 1)
        p = plan.plan(pod, [dead], now=NOW, backoff=bo())
        assert (kinds_of(p) == ["Start"]) is restarts, (policy, code)


def test_liveness_failure_and_spec_change_kill() -> None:
    pod = make_pod("a")
    pod.spec.termination_grace_period_seconds = 7
    live = rec(pod, "a")
    p = plan.plan(pod, [live], now=NOW, backoff=bo(), liveness_failed={live.id})
    assert kinds_of(p) == ["Kill"] and p.actions[0].grace == 7
    changed = replace(live, spec_hash="other")
    p = plan.plan(pod, [changed], now=NOW, backoff=bo())
    assert kinds_of(p) == ["Kill"]
    assert "spec changed" in p.actions[0].reason


def test_old_attempts_are_removed_keeping_the_previous_one() -> None:
    pod = make_pod("a")
    recs = [rec(pod, "a", attempt=i, state=EXITED, exit_code=1, finished=NOW - 10 + i)
            for i in range(4)]
    recs.append(rec(pod, "a", attempt=4))
    p = plan.plan(pod, recs, now=NOW, backoff=bo())
    removed = sorted(a.record.attempt for a in p.actions if isinstance(a, plan.Remove))
    assert removed == [0, 1, 2]


def test_containers_not_in_spec_are_killed_and_removed() -> None:
    pod = make_pod("a")
    stray = replace(rec(pod, "a"), name="ghost", id="ghost-0")
    p = plan.plan(pod, [rec(pod, "a"), stray], now=NOW, backoff=bo())
    assert [(type(a).__name__, a.record.id) for a in p.actions] == [
        ("Kill", "ghost-0"), ("Remove", "ghost-0")]


def test_created_but_never_started_is_started() -> None:
    pod = make_pod("a")
    created = replace(rec(pod, "a"), state="created", started_at=0.0)
    assert kinds_of(plan.plan(pod, [created], now=NOW, backoff=bo())) == ["StartExisting"]


def test_active_deadline_ends_the_pod() -> None:
    pod = make_pod("a")
    pod.spec.active_deadline_seconds = 30
    pod.status.start_time.FromSeconds(int(NOW - 31))
    p = plan.plan(pod, [rec(pod, "a")], now=NOW, backoff=bo())
    assert p.terminal_phase == "Failed" and p.reason == "DeadlineExceeded"
    assert kinds_of(p) == ["Kill"]
    pod.status.start_time.FromSeconds(int(NOW - 10))
    p = plan.plan(pod, [rec(pod, "a")], now=NOW, backoff=bo())
    assert p.actions == [] and p.requeue_after == 20


def test_terminal_pod_starts_nothing() -> None:
    pod = make_pod("a", policy="Never")
    pod.status.phase = "Succeeded"
    dead = rec(pod, "a", state=EXITED, finished=NOW - 1)
    assert plan.plan(pod, [dead], now=NOW, backoff=bo()).actions == []


# ---- pod status ---------------------------------------------------------------------------------
def conds(status: core_pb2.PodStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions}


def test_status_running_ready_and_identical_on_recompute() -> None:
    pod = make_pod("a", "b")
    recs = [rec(pod, "a"), rec(pod, "b")]
    facts = podstatus.PodFacts(records=recs, pod_ip="10.244.1.5", host_ip="10.0.0.1", now=NOW)
    st = podstatus.compute(pod, facts)
    assert st.phase == "Running" and st.pod_ip == "10.244.1.5"
    assert conds(st) == {"PodScheduled": "True", "Initialized": "True",
                         "ContainersReady": "True", "Ready": "True"}
    assert st.container_statuses[0].container_id == "podman://a-0"
    pod.status.CopyFrom(st)
    again = podstatus.compute(pod, replace(facts, now=NOW + 50))
    assert again.SerializeToString(deterministic=True) == st.SerializeToString(
        deterministic=True)


def test_status_readiness_gates_ready_and_startup_gates_started() -> None:
    pod = make_pod("a")
    facts = podstatus.PodFacts(records=[rec(pod, "a")], now=NOW,
                               probes={"a": podstatus.ProbeView(started=True, ready=False)})
    st = podstatus.compute(pod, facts)
    assert st.phase == "Running" and conds(st)["Ready"] == "False"
    assert st.conditions[3].message == "containers with unready status: [a]"
    facts.probes = {"a": podstatus.ProbeView(started=False, ready=False)}
    st = podstatus.compute(pod, facts)
    assert not st.container_statuses[0].started


def test_status_crash_loop_shows_waiting_and_last_state() -> None:
    pod = make_pod("a")
    dead = rec(pod, "a", attempt=2, state=EXITED, exit_code=3, finished=NOW - 1)
    w = podstatus.Waiting("CrashLoopBackOff", "back-off 20s")
    st = podstatus.compute(pod, podstatus.PodFacts(records=[dead], waiting={"a": w}, now=NOW))
    cs = st.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.reason == "Error"
    assert cs.restart_count == 2
    assert st.phase == "Running"  # restartPolicy Always: still Running


def test_status_phases_for_completion() -> None:
    for policy, codes, phase in (("Never", (0, 0), "Succeeded"), ("Never", (0, 1), "Failed"),
                                 ("OnFailure", (0, 0), "Succeeded")):
        pod = make_pod("a", "b", policy=policy)
        recs = [rec(pod, n, state=EXITED, exit_code=c, finished=NOW - 1)
                for n, c in zip(("a", "b"), codes, strict=True)]
        st = podstatus.compute(pod, podstatus.PodFacts(records=recs, now=NOW))
        assert st.phase == phase, (policy, codes)
        assert conds(st)["Ready"] == "False"
        assert st.conditions[3].reason == "PodCompleted"


def test_status_keeps_transition_times_and_start_time() -> None:
    pod = make_pod("a")
    first = podstatus.compute(pod, podstatus.PodFacts(records=[], now=NOW))
    assert first.phase == "Pending"
    assert first.container_statuses[0].state.waiting.reason == "ContainerCreating"
    pod.status.CopyFrom(first)
    later = podstatus.compute(pod, podstatus.PodFacts(records=[rec(pod, "a")], now=NOW + 30))
    ready = next(c for c in later.conditions if c.type == "Ready")
    scheduled = next(c for c in later.conditions if c.type == "PodScheduled")
    assert ready.last_transition_time.seconds == int(NOW + 30)
    assert scheduled.last_transition_time.seconds == int(NOW)
    assert later.start_time.seconds == int(NOW)


def test_status_oom_and_signal() -> None:
    pod = make_pod("a", policy="Never")
    dead = replace(rec(pod, "a", state=EXITED, exit_code=137, finished=NOW - 1),
                   oom_killed=True)
    st = podstatus.compute(pod, podstatus.PodFacts(records=[dead], now=NOW))
    term = st.container_statuses[0].state.terminated
    assert (term.reason, term.signal) == ("OOMKilled", 9)


def test_status_app_containers_wait_for_init() -> None:
    pod = make_pod("app", init=("i1",))
    st = podstatus.compute(pod, podstatus.PodFacts(records=[rec(pod, "i1", init=True)],
                                                   now=NOW))
    assert st.phase == "Pending"
    assert conds(st)["Initialized"] == "False"
    assert st.container_statuses[0].state.waiting.reason == "PodInitializing"
