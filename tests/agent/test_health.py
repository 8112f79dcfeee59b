"""Crash loops, probes and containers killed from outside, on real Podman.

The agent under test has a fast back-off (base 1 s, max 8 s; see agentfixture.py)
so the Kubernetes sequence is visible in seconds.
"""

from __future__ import annotations

import time

import pytest
from google.protobuf import struct_pb2

from corral.v1 import core_pb2
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def test_crashing_container_backs_off_and_counts_restarts(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("crash", ns, host.node_name,
                    pu.container("main", "sh", "-c", "echo dying; exit 3")))
    restarts: dict[int, float] = {}
    backoff_seen: list[str] = []

    def observe(p: core_pb2.Pod) -> bool:
        st = pu.cstatus(p, "main")
        restarts.setdefault(st.restart_count, time.monotonic())
        if st.state.waiting.reason == "CrashLoopBackOff":
            backoff_seen.append(st.state.waiting.message)
        return st.restart_count >= 4 and bool(backoff_seen)
    p = pu.wait_pod(c, ns, "crash", observe, "4 restarts with CrashLoopBackOff",
                    timeout=90)
    st = pu.cstatus(p, "main")
    assert st.last_state.terminated.exit_code == 3
    assert st.last_state.terminated.reason == "Error"
    assert "back-off" in backoff_seen[0] and "restarting failed container=main" in \
        backoff_seen[0]
    assert p.status.phase == "Running"  # restartPolicy Always keeps it Running
    # The waits grow: restart 3 -> 4 waits (2 s, then 4 s) longer than 0 -> 1 (at once).
    gap_first = restarts[1] - restarts[0]
    gap_late = restarts[4] - restarts[3]
    assert gap_late > gap_first + 1.0, restarts
    events, _ = c.list("Event", ns)
    assert any(e.reason == "BackOff" and e.involved_object.name == "crash" for e in events)


def _probe_pod(name: str, ns: str, node: str, command: str, **probes: core_pb2.Probe
               ) -> core_pb2.Pod:
    container = pu.container("main", "sh", "-c", command)
    for field, probe in probes.items():
        getattr(container, field).CopyFrom(probe)
    return pu.pod(name, ns, node, container, grace=1)


def exec_probe(*command: str, period: int = 1, failures: int = 2) -> core_pb2.Probe:
    return core_pb2.Probe(exec=core_pb2.ExecAction(command=list(command)),
                          period_seconds=period, failure_threshold=failures)


def test_failing_liveness_probe_restarts_the_container(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(_probe_pod("live", ns, host.node_name,
                        "touch /tmp/alive; sleep 3; rm /tmp/alive; exec sleep 1000",
                        liveness_probe=exec_probe("test", "-f", "/tmp/alive")))
    p = pu.wait_pod(c, ns, "live", pu.running, "Running")
    first_id = pu.cstatus(p, "main").container_id
    p = pu.wait_pod(c, ns, "live", lambda p: pu.cstatus(p, "main").restart_count >= 1,
                    "restarted by the liveness probe", timeout=40)
    st = pu.cstatus(p, "main")
    assert st.container_id != first_id
    assert st.last_state.terminated.exit_code in (137, 143)
    events, _ = c.list("Event", ns)
    assert any(e.reason == "Killing" and "liveness probe" in e.message for e in events)


def test_http_liveness_probe_keeps_a_healthy_container(host: AgentHost, ns: str) -> None:
    c = host.client
    probe = core_pb2.Probe(http_get=core_pb2.HTTPGetAction(
        path="/", port=struct_pb2.Value(string_value="http")), period_seconds=1,
        failure_threshold=2)
    container = pu.container("main", "sh", "-c",
                             "mkdir -p /www; echo ok > /www/index.html; "
                             "exec httpd -f -p 8080 -h /www", liveness_probe=probe)
    container.ports.add(name="http", container_port=8080)
    c.create(pu.pod("healthy", ns, host.node_name, container, grace=1))
    pu.wait_pod(c, ns, "healthy", pu.ready, "Ready")
    time.sleep(5)
    assert pu.cstatus(c.get("Pod", "healthy", ns), "main").restart_count == 0


def test_readiness_gates_ready(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(_probe_pod("ready", ns, host.node_name,
                        "sleep 3; touch /tmp/ready; sleep 5; rm /tmp/ready; exec sleep 1000",
                        readiness_probe=exec_probe("test", "-f", "/tmp/ready", failures=1)))
    p = pu.wait_pod(c, ns, "ready", pu.running, "Running")
    assert pu.condition(p, "Ready") == "False"
    assert pu.condition(p, "ContainersReady") == "False"
    assert not pu.cstatus(p, "main").ready
    p = pu.wait_pod(c, ns, "ready", pu.ready, "Ready", timeout=20)
    assert pu.cstatus(p, "main").ready
    p = pu.wait_pod(c, ns, "ready", lambda p: not pu.ready(p) and pu.running(p),
                    "not Ready again", timeout=20)
    assert pu.cstatus(p, "main").restart_count == 0  # readiness never restarts


def test_startup_probe_holds_liveness_back(host: AgentHost, ns: str) -> None:
    c = host.client
    # Liveness alone would kill this container (no /tmp/live for 4 s); the startup
    # probe keeps it from running until /tmp/started exists.
    c.create(_probe_pod(
        "slow", ns, host.node_name,
        "sleep 4; touch /tmp/started /tmp/live; exec sleep 1000",
        startup_probe=exec_probe("test", "-f", "/tmp/started", failures=20),
        liveness_probe=exec_probe("test", "-f", "/tmp/live", failures=1)))
    p = pu.wait_pod(c, ns, "slow", pu.running, "Running")
    assert not pu.cstatus(p, "main").started
    p = pu.wait_pod(c, ns, "slow", lambda p: bool(pu.cstatus(p, "main").started), "started",
                    timeout=30)
    assert pu.ready(p)
    time.sleep(3)
    assert pu.cstatus(c.get("Pod", "slow", ns), "main").restart_count == 0


def test_podman_kill_from_outside_gets_restarted_quickly(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("victim", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=0))
    p = pu.wait_pod(c, ns, "victim", pu.ready, "Ready")
    cid = pu.cstatus(p, "main").container_id.removeprefix("podman://")
    killed = time.monotonic()
    host.podman("kill", cid)
    p = pu.wait_pod(c, ns, "victim",
                    lambda p: pu.cstatus(p, "main").restart_count == 1 and pu.ready(p),
                    "restarted after podman kill", timeout=30)
    took = time.monotonic() - killed
    st = pu.cstatus(p, "main")
    assert st.container_id.removeprefix("podman://") != cid
    assert st.last_state.terminated.exit_code == 137
    # The event stream, not the periodic relist (5 s here), noticed it.
    assert took < 4.0, f"restart took {took:.1f}s"
