"""The lab with node agents (`--components controlplane,agent`): the code path that
switches on each host's `corral-agent` with the config the lab writes.

- `up` waits for every Node Ready (a heartbeat posted after the agent started);
  each Node carries its host's address; the agent's configuration is what the
  lab wrote (pod namespaces under the host's prefix, containers under its cgroup).
- A power loss kills the agent and everything it started (its Podman service);
  `start --wait` brings the node back with a fresh heartbeat.
- The config files the lab writes are accepted by the real processes' parsers.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from corral.lab import Lab, health
from corral.lab import cgroups as labcg
from corral.lab.lab import write_files
from corral.lab.spec import AGENT, CONTROLPLANE, LabSpec, plan

pytestmark = pytest.mark.lab

WITH_AGENTS = (CONTROLPLANE, AGENT)


def test_rendered_configs_are_accepted_by_the_real_processes(tmp_path: Path) -> None:
    from controlplane import config as cp_config
    from nodeagent import config as agent_config

    p = plan(LabSpec(name="demo", hosts=4, control_plane=3, components=WITH_AGENTS), tmp_path)
    p.dir.mkdir(parents=True)
    write_files(p)
    p.images.mkdir()  # up imports the image there before any agent starts
    cp = cp_config.load(["--config", str(p.host("h2").process(CONTROLPLANE).config)])
    assert cp.name == "h2" and cp.api_address == "10.250.0.12:6443"
    assert set(cp.peers) == {"h1", "h2", "h3"}
    agent = agent_config.load(str(p.host("h4").process(AGENT).config))
    assert agent.node_ip == "10.250.0.14" and agent.netns_prefix == "corral-demo-h4-"
    assert agent.cgroup_parent == "/corral-lab-demo/h4/pods"
    assert agent.podman.additional_image_stores == (str(p.images),)


def test_agents_register_ready_nodes_and_come_back_after_a_power_loss(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(hosts=3, control_plane=3, components=WITH_AGENTS)
    with lab.client() as c:
        nodes, _ = c.list("Node")
    by_name = {n.metadata.name: n for n in nodes}
    assert set(by_name) == {"h1", "h2", "h3"}
    for h in lab.plan.hosts:
        addrs = {a.type: a.address for a in by_name[h.name].status.addresses}
        assert addrs.get("InternalIP") == h.ip
        assert health.node_ready(by_name[h.name])
        assert by_name[h.name].metadata.labels["corral.dev/lab"] == lab.name

    # The agent's own children (its Podman service) live in the host's cgroup.
    h2 = lab.plan.host("h2")
    deadline = time.monotonic() + 20
    while len(labcg.pids(lab.backend, h2.cgroup)) < 3:
        assert time.monotonic() < deadline, "no Podman service under h2's agent"
        time.sleep(0.1)
    tree = labcg.pids(lab.backend, h2.cgroup)
    assert any("podman" in " ".join(psutil.Process(p).cmdline()) for p in tree)

    loss = lab.kill("h2")
    assert tree <= loss.killed
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in tree)

    started_at = time.time()
    assert sorted(lab.start("h2", wait=True, timeout=60)) == [AGENT, CONTROLPLANE]
    with lab.client() as c:
        node = c.get("Node", "h2")
    assert health.node_ready(node, since=started_at - 1.0)
    # The service died with the host: the new agent finds no live one left over (a
    # killed service may still be a zombie waiting for PID 1, which is not one).
    log = h2.process(AGENT).log.read_text(errors="replace")
    assert "left by an earlier agent" not in log, log
