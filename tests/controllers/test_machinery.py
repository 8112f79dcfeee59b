"""The controller machinery: config validation, the work queue, the hollow agent's pure plan."""

from __future__ import annotations

import threading
import time

import pytest

from controlplane.controllers.config import ControllersConfig
from controlplane.controllers.workqueue import WorkQueue
from corral.configfile import ConfigError
from corral.hollow import PodState, plan_pod

from .objects import NOW, pod


def test_config_defaults_and_budget():
    cfg = ControllersConfig.from_mapping(None)
    assert (cfg.node_monitor_grace_period, cfg.pod_eviction_timeout) == (10.0, 20.0)
    assert cfg.node_failure_budget == 30.0
    cfg = ControllersConfig.from_mapping({"pod_eviction_timeout": 5, "disabled": ["eventttl"],
                                          "in_process": False})
    assert cfg.pod_eviction_timeout == 5.0 and not cfg.enabled("eventttl") and not cfg.in_process


@pytest.mark.parametrize("data, where", [
    ({"node_grace": 3}, "controllers.node_grace"),
    ({"pod_eviction_timeout": -1}, "controllers.pod_eviction_timeout"),
    ({"pod_eviction_timeout": "20s"}, "controllers.pod_eviction_timeout"),
    ({"workers": 0}, "controllers.workers"),
    ({"disabled": ["schedular"]}, "controllers.disabled"),
    ({"in_process": "yes"}, "controllers.in_process"),
    ({"volume_root": ""}, "controllers.volume_root"),
    ({"job_backoff_base": 10, "job_backoff_max": 1}, "controllers.job_backoff_max"),
])
def test_config_errors_name_the_key(data, where):
    with pytest.raises(ConfigError) as err:
        ControllersConfig.from_mapping(data)
    assert err.value.key == where and str(err.value).startswith(f"{where}: ")


def test_work_queue_collapses_and_never_hands_a_key_to_two_workers():
    q = WorkQueue("t")
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    key = q.get(timeout=1)
    assert key == "a"
    q.add("a")  # while processing: marked dirty, not handed out again
    assert q.get(timeout=1) == "b"
    assert q.get(timeout=0.1) is None
    q.done("a")
    assert q.get(timeout=1) == "a"
    q.done("a")
    q.done("b")
    q.shutdown()


def test_work_queue_delays_and_backs_off():
    q = WorkQueue("t", base_delay=0.05)
    start = time.monotonic()
    q.add_after("x", 0.2)
    assert q.get(timeout=2) == "x"
    assert time.monotonic() - start >= 0.19
    q.done("x")
    delays = [q.retry("y") for _ in range(3)]
    assert delays == [0.05, 0.1, 0.2]
    q.forget("y")
    assert q.retry("y") == 0.05
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=2)))
    t.start()
    t.join(3)
    assert got == ["y"]
    q.shutdown()


def test_hollow_pod_lifecycle_plan():
    p = pod("p", node_name="n1")
    p.metadata.annotations["corral.dev/hollow-ready-seconds"] = "2"
    st = PodState(seen=NOW, ip="10.244.0.5")
    plan = plan_pod(p, st, "10.0.0.1", NOW, 0.0)
    assert plan.status.phase == "Running" and plan.status.pod_ip == "10.244.0.5"
    assert not any(c.type == "Ready" and c.status == "True" for c in plan.status.conditions)
    assert 1.9 < plan.later <= 2.0
    p.status.CopyFrom(plan.status)
    plan = plan_pod(p, st, "10.0.0.1", NOW + 2.5, 0.0)
    assert any(c.type == "Ready" and c.status == "True" for c in plan.status.conditions)
    p.status.CopyFrom(plan.status)
    assert plan_pod(p, st, "10.0.0.1", NOW + 3, 0.0).status is None  # nothing new to write


def test_hollow_job_pods_finish_or_restart():
    p = pod("j", node_name="n1")
    p.spec.restart_policy = "Never"
    p.metadata.annotations.update({"corral.dev/hollow-exit-seconds": "1",
                                   "corral.dev/hollow-exit-code": "2"})
    st = PodState(seen=NOW, ip="10.244.0.6")
    plan_pod(p, st, "h", NOW, 0.0)
    plan = plan_pod(p, st, "h", NOW + 1.5, 0.0)
    assert plan.status.phase == "Failed"
    assert plan.status.container_statuses[0].state.terminated.exit_code == 2
    q = pod("k", node_name="n1")
    q.spec.restart_policy = "OnFailure"
    q.metadata.annotations.update({"corral.dev/hollow-exit-seconds": "1",
                                   "corral.dev/hollow-exit-code": "1"})
    st = PodState(seen=NOW, ip="10.244.0.7")
    plan_pod(q, st, "h", NOW, 0.0)
    plan = plan_pod(q, st, "h", NOW + 1.5, 0.0)
    assert plan.status.phase == "Running" and plan.status.container_statuses[0].restart_count == 1
    gone = pod("g", node_name="n1")
    gone.metadata.deletion_timestamp.seconds = int(NOW)
    assert plan_pod(gone, st, "h", NOW, 0.0).delete
