"""Job reconcile: completions, parallelism, failures, deadlines, TTL."""

from __future__ import annotations

from controlplane.controllers import job as jobs
from controlplane.controllers.actions import Create, Delete
from controlplane.controllers.clock import to_timestamp
from controlplane.controllers.podutil import condition_true, get_condition, is_active

from .objects import NOW
from .objects import job as make_job
from .world import World


def step(w: World, *, outcome: str = "Succeeded", backoff: float = 0.0) -> None:
    for j in w.list("Job"):
        w.apply(jobs.reconcile(j, w.list("Pod"), w.now, backoff_base=backoff,
                               backoff_max=backoff * 8))
    w.kubelet()
    w.now += 1


def finish_running(w: World, phase: str, n: int | None = None) -> None:
    done = 0
    for key, pod in sorted(w.objects.items()):
        if key[0] == "Pod" and pod.status.phase == "Running" and (n is None or done < n):
            pod.status.phase = phase
            cs = pod.status.container_statuses.add(name="main")
            cs.state.terminated.exit_code = 0 if phase == "Succeeded" else 1
            cs.state.terminated.finished_at.CopyFrom(to_timestamp(w.now))
            done += 1


def active(w: World) -> int:
    return sum(1 for p in w.list("Pod") if is_active(p))


def test_five_completions_two_at_a_time():
    w = World(NOW)
    w.add(make_job("batch", completions=5, parallelism=2))
    peak = 0
    for _ in range(10):
        step(w)
        peak = max(peak, active(w))
        finish_running(w, "Succeeded")
    j = w.get("Job", "batch")
    assert peak == 2
    assert j.status.succeeded == 5 and j.status.active == 0
    assert condition_true(j.status.conditions, "Complete")
    assert j.status.completion_time.seconds and j.status.start_time.seconds
    assert len(w.list("Pod")) == 5
    pod = w.list("Pod")[0]
    assert pod.metadata.labels["job-name"] == "batch"
    assert pod.metadata.labels["controller-uid"] == j.metadata.uid
    assert "Completed: Job completed" in w.events


def test_backoff_limit_fails_the_job():
    w = World(NOW)
    w.add(make_job("flaky", backoff_limit=2))
    for _ in range(8):
        step(w)
        finish_running(w, "Failed")
    j = w.get("Job", "flaky")
    cond = get_condition(j.status.conditions, "Failed")
    assert (cond.status, cond.reason) == ("True", "BackoffLimitExceeded")
    assert j.status.failed == 3
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in w.events


def test_failed_pods_are_replaced_after_a_doubling_back_off():
    j = make_job("flaky", backoff_limit=5)
    w = World(NOW)
    w.add(j)
    step(w, backoff=10)
    finish_running(w, "Failed")
    result = jobs.reconcile(w.get("Job", "flaky"), w.list("Pod"), w.now, backoff_base=10)
    assert result.of_type(Create) == [] and 8.5 < result.requeue_after <= 10
    w.now += 10
    result = jobs.reconcile(w.get("Job", "flaky"), w.list("Pod"), w.now, backoff_base=10)
    assert len(result.of_type(Create)) == 1


def test_on_failure_counts_restarts():
    j = make_job("retry", backoff_limit=2)
    j.spec.template.spec.restart_policy = "OnFailure"
    w = World(NOW)
    w.add(j)
    step(w)
    pod = next(iter(p for k, p in w.objects.items() if k[0] == "Pod"))
    pod.status.container_statuses.add(name="main", restart_count=2)
    step(w)
    assert condition_true(w.get("Job", "retry").status.conditions, "Failed")


def test_active_deadline():
    j = make_job("slow")
    j.spec.active_deadline_seconds = 30
    w = World(NOW)
    w.add(j)
    step(w)
    result = jobs.reconcile(w.get("Job", "slow"), w.list("Pod"), w.now)
    assert 28 < result.requeue_after <= 30.1
    w.now += 31
    step(w)
    j = w.get("Job", "slow")
    cond = get_condition(j.status.conditions, "Failed")
    assert cond.reason == "DeadlineExceeded"
    assert active(w) == 0


def test_ttl_after_finished_deletes_the_job():
    j = make_job("short")
    j.spec.ttl_seconds_after_finished = 5
    w = World(NOW)
    w.add(j)
    step(w)
    finish_running(w, "Succeeded")
    step(w)
    assert condition_true(w.get("Job", "short").status.conditions, "Complete")
    result = jobs.reconcile(w.get("Job", "short"), w.list("Pod"), w.now)
    assert result.of_type(Delete) == [] and 3 < result.requeue_after <= 5.1
    w.now += 6
    result = jobs.reconcile(w.get("Job", "short"), w.list("Pod"), w.now)
    deletes = result.of_type(Delete)
    assert [(d.kind, d.name, d.propagation_policy) for d in deletes] == [
        ("Job", "short", "Foreground")]


def test_work_queue_mode_and_suspend():
    j = make_job("queue", completions=None, parallelism=3)
    w = World(NOW)
    w.add(j)
    step(w)
    assert active(w) == 3
    finish_running(w, "Succeeded", n=1)
    step(w)
    assert not condition_true(w.get("Job", "queue").status.conditions, "Complete")
    assert active(w) == 2
    finish_running(w, "Succeeded")
    step(w)
    assert condition_true(w.get("Job", "queue").status.conditions, "Complete")
    s = make_job("paused", completions=2, parallelism=2)
    s.spec.suspend = True
    result = jobs.reconcile(s, [], NOW)
    assert result.of_type(Create) == []
