"""The agent's pod statuses are the truth again after someone else wrote them.

The node lifecycle controller marks a silent node's pods not Ready. When the
node is heard from again nothing changed on it, so only a comparison with the
store's copy can tell the agent that its status must be written again.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from corral.v1 import core_pb2
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def not_ready_copy(p: core_pb2.Pod, node: str) -> core_pb2.Pod:
    """What the node lifecycle controller writes for a pod of a silent node."""
    new = core_pb2.Pod()
    new.CopyFrom(p)
    for c in new.status.conditions:
        if c.type == "Ready":
            c.status = "False"
            c.reason = "NodeNotReady"
            c.message = f"node {node} is not ready"
    return new


def test_status_written_behind_the_agents_back_is_repaired(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("steady", ns, host.node_name, pu.container("main", "sleep", "3600"),
                    grace=0))
    p = pu.wait_pod(c, ns, "steady", pu.ready, "Ready")
    truth = p.status.SerializeToString(deterministic=True)
    t0 = time.monotonic()
    written = c.update_status(not_ready_copy(p, host.node_name))
    assert pu.condition(written, "Ready") == "False"
    period = float(host.config["status_period"])
    # (The agent may have repaired it before we look: it reacts to the watch event.)
    repaired = pu.wait_pod(c, ns, "steady", pu.ready, "Ready again", timeout=period + 5)
    took = time.monotonic() - t0
    assert took <= period + 2, took
    assert int(repaired.metadata.resource_version) > int(written.metadata.resource_version)
    assert repaired.status.SerializeToString(deterministic=True) == truth


def test_pods_marked_not_ready_while_the_agent_was_silent_are_ready_again(
        host: AgentHost, ns: str) -> None:
    """The real thing: the agent is frozen past node_monitor_grace_period (10 s), the
    node lifecycle controller marks the node Unknown and its pods not Ready, then the
    agent runs again (before the eviction at 30 s) and puts the truth back."""
    c = host.client
    c.create(pu.pod("patient", ns, host.node_name, pu.container("main", "sleep", "3600"),
                    grace=0))
    before = pu.wait_pod(c, ns, "patient", pu.ready, "Ready")
    assert host.proc is not None
    os.kill(host.proc.pid, signal.SIGSTOP)  # the agent only: containers keep running
    try:
        pu.wait_pod(c, ns, "patient",
                    lambda p: pu.condition(p, "Ready") == "False" and any(
                        x.reason == "NodeNotReady" for x in p.status.conditions),
                    "marked not Ready by the node lifecycle controller", timeout=25)
    finally:
        os.kill(host.proc.pid, signal.SIGCONT)
    t0 = time.monotonic()
    period = float(host.config["status_period"])
    after = pu.wait_pod(c, ns, "patient", pu.ready, "Ready again", timeout=period + 10)
    took = time.monotonic() - t0
    assert took <= period + 5, took
    # The same container kept running all along: nothing restarted.
    st_before, st_after = pu.cstatus(before, "main"), pu.cstatus(after, "main")
    assert (st_after.container_id, st_after.restart_count) == (st_before.container_id, 0)
    pu.wait_for("node Ready again", lambda: pu.condition(
        c.get("Node", host.node_name), "Ready") == "True", timeout=period + 5)
