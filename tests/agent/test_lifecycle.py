"""Termination, agent restarts and runtime trouble, on real Podman.

These tests kill and restart the module's agent, so they have an agent (and a
control plane) of their own (module-scoped fixtures).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from corral.v1 import core_pb2
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration

# A Podman service silent for 8 s is killed and restarted by the agent's watchdog.
AGENT_CONFIG = {"podman": {"restart_unhealthy_after": 8}}


def hostpath(name: str, path: Path) -> core_pb2.Volume:
    return core_pb2.Volume(name=name, host_path=core_pb2.HostPathVolumeSource(
        path=str(path), type="DirectoryOrCreate"))


def test_graceful_termination_sigterm_first(host: AgentHost, ns: str) -> None:
    """A container that handles SIGTERM ends early; the pod goes once it did."""
    c = host.client
    out = host.root / f"term-{ns}"
    script = ("trap 'echo got-term > /out/term; sleep 1; exit 0' TERM; "
              "while :; do sleep 0.2; done")
    c.create(pu.pod("polite", ns, host.node_name,
                    pu.container("main", "sh", "-c", script,
                                 volume_mounts=[core_pb2.VolumeMount(name="out",
                                                                     mount_path="/out")]),
                    volumes=(hostpath("out", out),), grace=20))
    pu.wait_pod(c, ns, "polite", pu.ready, "Ready")
    start = time.monotonic()
    c.delete("Pod", "polite", ns)
    pu.wait_gone(c, ns, "polite", timeout=30)
    took = time.monotonic() - start
    assert (out / "term").read_text().strip() == "got-term"
    assert 1.0 <= took < 10.0, f"pod removed after {took:.1f}s (grace 20 s, exit after 1 s)"


def test_grace_period_then_sigkill(host: AgentHost, ns: str) -> None:
    """A container that ignores SIGTERM (sleep as PID 1) is killed when the grace ends."""
    c = host.client
    c.create(pu.pod("stubborn", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=4))
    pu.wait_pod(c, ns, "stubborn", pu.ready, "Ready")
    start = time.monotonic()
    c.delete("Pod", "stubborn", ns)
    pu.wait_gone(c, ns, "stubborn", timeout=30)
    took = time.monotonic() - start
    assert 4.0 <= took < 9.0, f"pod removed after {took:.1f}s with a 4 s grace period"


def test_delete_with_grace_zero_override(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("quick", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=30))
    pu.wait_pod(c, ns, "quick", pu.ready, "Ready")
    start = time.monotonic()
    # grace 1 on the request overrides the pod's 30 s (deletionGracePeriodSeconds).
    c.delete("Pod", "quick", ns, grace_period_seconds=1)
    pu.wait_gone(c, ns, "quick", timeout=30)
    assert time.monotonic() - start < 8.0


def _ids(p: core_pb2.Pod) -> dict[str, tuple[str, int]]:
    return {s.name: (s.container_id, s.restart_count) for s in p.status.container_statuses}


def test_agent_sigkill_and_restart_adopts_running_pods(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("keep", ns, host.node_name,
                    pu.container("web", "httpd", "-f", "-p", "8080"),
                    pu.container("side", "sleep", "1000"), grace=1))
    crash = pu.pod("crashy", ns, host.node_name, pu.container("main", "sh", "-c", "exit 1"))
    c.create(crash)
    before = pu.wait_pod(c, ns, "keep", pu.ready, "Ready")
    crashy = pu.wait_pod(c, ns, "crashy", lambda p: pu.cstatus(p, "main").restart_count >= 2,
                         "restarted twice")
    podman_before = {x["Id"]: x["StartedAt"] for x in json.loads(
        host.podman("ps", "--format", "json").stdout)}

    cidr = c.get("Node", host.node_name).spec.pod_cidr
    host.kill()
    assert not host.running
    # Containers keep running without their agent.
    time.sleep(1)
    host.start()
    host.wait_ready()
    time.sleep(6)  # more than a relist period of the new agent

    assert c.get("Node", host.node_name).spec.pod_cidr == cidr  # same name, same CIDR
    after = c.get("Pod", "keep", ns)
    assert _ids(after) == _ids(before)
    assert after.status.pod_ip == before.status.pod_ip
    assert pu.ready(after)
    podman_after = {x["Id"]: x["StartedAt"] for x in json.loads(
        host.podman("ps", "--format", "json").stdout)}
    for cid, _ in _ids(before).values():
        raw = cid.removeprefix("podman://")
        assert podman_after.get(raw) == podman_before.get(raw), "container was restarted"
    assert host.http_get(f"http://{after.status.pod_ip}:8080/")[0] == 404
    # The restart count of the crash-looping pod carried over (it lives in labels).
    again = c.get("Pod", "crashy", ns)
    assert pu.cstatus(again, "main").restart_count >= pu.cstatus(crashy, "main").restart_count


def test_pod_deleted_while_agent_down_is_cleaned_up(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("orphan", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=1))
    p = pu.wait_pod(c, ns, "orphan", pu.ready, "Ready")
    uid = p.metadata.uid
    host.stop()
    c.delete("Pod", "orphan", ns, grace_period_seconds=0)  # force: removed at once
    pu.wait_gone(c, ns, "orphan", timeout=10)
    assert Path(f"/run/netns/{host.netns_prefix}{uid}").exists()
    host.start()
    host.wait_ready()

    def cleaned() -> bool:
        ps = json.loads(host.podman("ps", "-a", "--format", "json").stdout or "[]")
        mine = [x for x in ps if x.get("Labels", {}).get("io.corral.pod.uid") == uid]
        allocations = json.loads((host.state / "ipam.json").read_text())["allocations"]
        return (not mine and uid not in allocations.values()
                and not Path(f"/run/netns/{host.netns_prefix}{uid}").exists()
                and not (host.state / "pods" / uid).exists())
    pu.wait_for("orphaned pod cleaned up", cleaned, timeout=30)


def test_runtime_hang_sets_runtime_unhealthy_and_the_watchdog_restarts_it(
        host: AgentHost, ns: str) -> None:
    """SIGSTOP the agent's Podman service: calls time out, the node says so, the
    watchdog kills and restarts the service, pods keep running and new ones start."""
    c = host.client
    c.create(pu.pod("before", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=0))
    before = pu.wait_pod(c, ns, "before", pu.ready, "Ready")
    pid = int((host.state / "podman-service.pid").read_text().split()[0])

    def condition(ctype: str) -> str:
        node = c.get("Node", host.node_name)
        return next((x.status for x in node.status.conditions if x.type == ctype), "")

    os.kill(pid, signal.SIGSTOP)
    try:
        pu.wait_for("RuntimeUnhealthy True",
                    lambda: condition("RuntimeUnhealthy") == "True", timeout=30)
        node = c.get("Node", host.node_name)
        ready = next(x for x in node.status.conditions if x.type == "Ready")
        assert ready.status == "False" and "container runtime is down" in ready.message
        # The lease is still renewed: the agent itself is alive.
        first = c.get("Lease", host.node_name, "corral-system").spec.renew_time.ToNanoseconds()
        pu.wait_for("lease renewed during the hang", lambda: c.get(
            "Lease", host.node_name, "corral-system").spec.renew_time.ToNanoseconds() > first,
            timeout=10)
        # No SIGCONT: the watchdog must replace the hung service by itself.
        pu.wait_for("RuntimeUnhealthy False again",
                    lambda: condition("RuntimeUnhealthy") == "False"
                    and condition("Ready") == "True", timeout=60)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    new_pid = int((host.state / "podman-service.pid").read_text().split()[0])
    assert new_pid != pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # The pod kept running through the service's restart (same container).
    time.sleep(2)
    after = c.get("Pod", "before", ns)
    assert pu.cstatus(after, "main").container_id == pu.cstatus(before, "main").container_id
    assert pu.ready(after)
    c.create(pu.pod("after", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=0))
    pu.wait_pod(c, ns, "after", pu.ready, "Ready", timeout=40)


@pytest.mark.parametrize("reboot", [False, True], ids=["processes-killed", "rebooted"])
def test_all_processes_of_the_node_killed_then_agent_restarted(host: AgentHost, ns: str,
                                                               reboot: bool) -> None:
    """Power loss of the node's processes: agent, its Podman service, conmon and the
    containers all SIGKILLed (and, for a reboot, the volatile state gone as the lab
    does it: Podman's run root and tmp dir, runc's state). The new agent restarts the
    pod in a new container, counted as a restart, with the same IP."""
    from tests.agent.agentfixture import _kill_cgroup

    c = host.client
    name = f"phoenix-{int(reboot)}"
    c.create(pu.pod(name, ns, host.node_name, pu.container("main", "sleep", "100000"),
                    grace=0))
    before = pu.wait_pod(c, ns, name, pu.ready, "Ready")
    old_id = pu.cstatus(before, "main").container_id
    service = int((host.state / "podman-service.pid").read_text().split()[0])
    host.kill()
    try:
        os.kill(service, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _kill_cgroup(host.cgroup_parent)
    if reboot:
        import shutil
        ids = [x["Id"] for x in json.loads(host.podman_local(
            "ps", "-a", "--format", "json").stdout or "[]")]
        shutil.rmtree(host.state / "run", ignore_errors=True)
        for cid in ids:
            shutil.rmtree(Path("/run/runc") / cid, ignore_errors=True)
    host.start()
    host.wait_ready()
    after = pu.wait_pod(c, ns, name,
                        lambda p: pu.ready(p) and pu.cstatus(p, "main").container_id != old_id,
                        "running again in a new container", timeout=60)
    assert after.status.pod_ip == before.status.pod_ip
    st = pu.cstatus(after, "main")
    assert st.restart_count == 1
    assert st.last_state.terminated.exit_code == 137
