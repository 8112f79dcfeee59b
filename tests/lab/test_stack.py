"""The whole stack in the lab (control plane, agent and netproxy on every host) and
what the lab promises about it: the example application runs and answers on its
Service address from a host; a host's power loss kills its containers too (and
their conmon monitors and mounts), `start` brings its pod back; `down` leaves no
container, mount or process of the lab (checked by the fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from corral.lab import Lab, mounts
from corral.lab import cgroups as labcg

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CORRAL = str(Path(sys.executable).parent / "corral")


def corral(lab: Lab, *args: str) -> str:
    env = dict(os.environ, CORRAL_CONFIG=str(lab.plan.client_config))
    env.pop("CORRAL_SERVER", None)
    res = subprocess.run([CORRAL, *args], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=60)
    assert res.returncode == 0, f"corral {' '.join(args)}: {res.stderr}"
    return res.stdout


def running_pods(lab: Lab) -> dict[str, str]:
    """pod name -> node, for the demo's Running pods."""
    with lab.client() as c:
        pods, _ = c.list("Pod", "demo")
    return {p.metadata.name: p.spec.node_name for p in pods
            if p.status.phase == "Running" and not p.metadata.HasField("deletion_timestamp")}


def wait_until(what: str, cond, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def http_get_from(lab: Lab, host: str, ip: str, port: int, path: str) -> str:
    argv, env = lab.exec_argv(host, ["busybox", "nc", "-w", "3", ip, str(port)])
    res = subprocess.run(argv, env=env, input=f"GET {path} HTTP/1.0\r\n\r\n",
                         capture_output=True, text=True, timeout=10)
    return res.stdout


def test_example_app_runs_and_a_power_loss_takes_its_containers_down_too(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(hosts=3)
    corral(lab, "apply", "-f", "examples/web.yaml")
    wait_until("3 Running pods", lambda: len(running_pods(lab)) == 3)
    with lab.client() as c:
        vip = c.get("Service", "web", "demo").spec.cluster_ip
    # A host reaches the Service by its virtual IP (netproxy's NAT, lab routing).
    wait_until("the Service answering from h1",
               lambda: "Hello from Corral" in http_get_from(lab, "h1", vip, 80, "/index.html"),
               timeout=30)

    victim = sorted(running_pods(lab).values())[0]
    host = lab.plan.host(victim)
    pods_tree = labcg.pids(lab.backend, host.pod_cgroup)
    cmdlines = [" ".join(psutil.Process(p).cmdline()) for p in pods_tree]
    assert any("conmon" in c for c in cmdlines), f"no conmon under {host.pod_cgroup}"
    assert any("httpd" in c for c in cmdlines), f"no container under {host.pod_cgroup}"
    assert mounts.under(host.storage), "a running container has its root mounted"

    loss = lab.kill(victim)
    assert pods_tree <= loss.killed
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pods_tree)
    assert mounts.under(host.storage) == []
    assert not host.run.exists()

    lab.start(victim, wait=True, timeout=60)
    wait_until(f"a Running pod on {victim} again",
               lambda: victim in running_pods(lab).values() and len(running_pods(lab)) == 3)
    assert labcg.pids(lab.backend, host.pod_cgroup), "its containers run again"
