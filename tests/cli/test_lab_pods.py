"""The pod verbs end to end in a real lab (three hosts as network namespaces, real
agents running real Podman containers): `logs`, `exec`, `exec -i`, `top pods`,
`drain` and `uncordon`, each as the real `corral` script with the client config
the lab wrote."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.lab import Lab
from tests.labfixture import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CORRAL = str(Path(sys.executable).parent / "corral")

TALKER = """\
apiVersion: v1
kind: Namespace
metadata: {name: talk}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: talker, namespace: talk}
spec:
  replicas: 3
  selector: {matchLabels: {app: talker}}
  template:
    metadata: {labels: {app: talker}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, "echo hello; echo second; exec sleep 3600"]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(show_logs=False) as made:
        yield made


@pytest.fixture(scope="module")
def corral(lab: Lab) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(HOME="/nonexistent", CORRAL_CONFIG=str(lab.plan.client_config))

    def run(*args: str, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CORRAL, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)

    return run


def running_pods(corral: Callable[..., subprocess.CompletedProcess[str]]) -> list[dict]:
    r = corral("get", "pods", "-n", "talk", "-o", "json")
    return [p for p in json.loads(r.stdout)["items"]
            if p.get("status", {}).get("phase") == "Running"
            and "deletionTimestamp" not in p["metadata"]]


def test_logs_exec_top_drain(lab: Lab, corral: Callable[..., subprocess.CompletedProcess[str]]
                             ) -> None:
    r = corral("apply", "-f", "-", stdin=TALKER)
    assert r.returncode == 0, r.stderr
    r = corral("rollout", "status", "deployment/talker", "-n", "talk", "--timeout", "120s")
    assert r.returncode == 0, r.stdout + r.stderr
    pods = running_pods(corral)
    assert len(pods) == 3
    pod = pods[0]["metadata"]["name"]

    r = corral("logs", pod, "-n", "talk")
    assert (r.returncode, r.stdout) == (0, "hello\nsecond\n"), r.stderr
    r = corral("logs", f"pod/{pod}", "-n", "talk", "-c", "main", "--tail", "1")
    assert r.stdout == "second\n", r.stderr

    r = corral("exec", pod, "-n", "talk", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    lines = "".join(f"line {i}\n" for i in range(200))
    r = corral("exec", "-i", pod, "-n", "talk", "--", "wc", "-l", stdin=lines)
    assert (r.returncode, r.stdout.strip()) == (0, "200"), r.stderr

    deadline = time.monotonic() + 60
    while True:  # the agents sample usage periodically: the first answer may be empty
        r = corral("top", "pods", "-n", "talk")
        names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
        if sorted(names) == sorted(p["metadata"]["name"] for p in pods):
            break
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(2)
    assert r.stdout.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]

    node = pods[0]["spec"]["nodeName"]
    r = corral("drain", node, "--ignore-daemonsets", "--timeout", "90s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == f"node/{node} drained"
    assert f"pod/{pod} evicted" in r.stdout
    r = corral("get", "nodes")
    assert any(line.split()[:2] == [node, "Ready,SchedulingDisabled"]
               for line in r.stdout.splitlines())
    deadline = time.monotonic() + 120
    while True:  # the ReplicaSet replaces the evicted pod on another node
        pods = running_pods(corral)
        if len(pods) == 3 and all(p["spec"]["nodeName"] != node for p in pods):
            break
        assert time.monotonic() < deadline, corral("get", "pods", "-n", "talk",
                                                   "-o", "wide").stdout
        time.sleep(2)
    r = corral("uncordon", node)
    assert r.stdout == f"node/{node} uncordoned\n"


# Nodes whose agent served a `logs -f` that was then cut.
FOLLOWED: set[str] = set()


def follow_logs(lab: Lab, pod: dict) -> None:
    """`corral logs -f`: the lines so far arrive and the stream stays open; then the
    user leaves (the process is killed, as Ctrl-C would end it)."""
    name = pod["metadata"]["name"]
    FOLLOWED.add(pod["spec"]["nodeName"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(HOME="/nonexistent", CORRAL_CONFIG=str(lab.plan.client_config))
    follower = subprocess.Popen([CORRAL, "logs", "-f", name, "-n", "talk"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    try:
        assert [lines.get(timeout=30), lines.get(timeout=30)] == ["hello\n", "second\n"]
        time.sleep(1)
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.communicate(timeout=10)


def fresh_pod(corral: Callable[..., subprocess.CompletedProcess[str]]) -> dict:
    """A running pod on a node no earlier `logs -f` was cut on."""
    pods = [p for p in running_pods(corral) if p["spec"]["nodeName"] not in FOLLOWED]
    assert pods, "no running pod left on a node not yet followed"
    return pods[0]


def test_logs_follow(lab: Lab, corral: Callable[..., subprocess.CompletedProcess[str]]
                     ) -> None:
    follow_logs(lab, fresh_pod(corral))


def test_node_still_answers_after_a_log_follower_left(
        lab: Lab, corral: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    pod = fresh_pod(corral)
    follow_logs(lab, pod)
    r = corral("exec", pod["metadata"]["name"], "-n", "talk", "--", "echo", "still here",
               timeout=30)
    assert (r.returncode, r.stdout) == (0, "still here\n"), r.stderr
