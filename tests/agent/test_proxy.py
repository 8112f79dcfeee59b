"""`corral logs`, `exec` and `top` end to end: the client asks the control plane's
Pods service, which forwards to this node's agent (NodeAgent on node_ip:10250)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from corral.errors import CorralError
from corral.v1 import api_pb2
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def test_logs_with_tail_follow_and_previous(host: AgentHost, ns: str) -> None:
    c = host.client
    script = "for i in 1 2 3 4 5; do echo line-$i; done; echo to-stderr >&2; exec sleep 1000"
    c.create(pu.pod("talker", ns, host.node_name, pu.container("main", "sh", "-c", script),
                    grace=0))
    pu.wait_pod(c, ns, "talker", pu.ready, "Ready")
    pu.wait_for("logs written", lambda: b"to-stderr" in b"".join(c.logs("talker", ns)))
    text = b"".join(c.logs("talker", ns)).decode()
    assert text.splitlines() == ["line-1", "line-2", "line-3", "line-4", "line-5", "to-stderr"]
    assert b"".join(c.logs("talker", ns, tail_lines=2)).decode().splitlines() == [
        "line-5", "to-stderr"]
    stamped = b"".join(c.logs("talker", ns, tail_lines=1, timestamps=True)).decode()
    assert stamped.split(" ", 1)[1].strip() == "to-stderr" and stamped[:4].isdigit()

    # Follow: lines written later arrive on the open stream.
    c.create(pu.pod("ticker", ns, host.node_name, pu.container(
        "main", "sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.3; done"),
        grace=0))
    pu.wait_pod(c, ns, "ticker", pu.ready, "Ready")
    seen: list[str] = []
    stream = c.logs("ticker", ns, follow=True)
    for chunk in stream:
        seen.extend(chunk.decode().split())
        if len(seen) >= 6:
            break
    stream.close()
    assert seen[:6] == [f"tick-{i}" for i in range(1, 7)]

    # --previous: the logs of the dead attempt of a restarted container.
    c.create(pu.pod("phoenix", ns, host.node_name, pu.container(
        "main", "sh", "-c", "echo life-$(date +%s%N); sleep 1; exit 1")))
    pu.wait_pod(c, ns, "phoenix", lambda p: pu.cstatus(p, "main").restart_count >= 1,
                "restarted once")
    prev = b"".join(c.logs("phoenix", ns, previous=True)).decode()
    assert prev.startswith("life-")
    with pytest.raises(CorralError, match="previous terminated container"):
        b"".join(c.logs("talker", ns, previous=True))


def test_logs_needs_a_container_name_for_two(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("pair", ns, host.node_name, pu.container("a", "sh", "-c", "echo A; sleep 999"),
                    pu.container("b", "sh", "-c", "echo B; sleep 999"), grace=0))
    pu.wait_pod(c, ns, "pair", pu.ready, "Ready")
    with pytest.raises(CorralError, match=r"choose one of: \[a b\]"):
        b"".join(c.logs("pair", ns))
    pu.wait_for("B logged", lambda: b"".join(c.logs("pair", ns, container="b")) == b"B\n")


def test_exec_with_stdin_and_exit_code(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("shell", ns, host.node_name, pu.container("main", "sleep", "1000"),
                    grace=0))
    p = pu.wait_pod(c, ns, "shell", pu.ready, "Ready")
    out, err, code = c.exec("shell", ns, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (out, err, code) == (b"out\n", b"err\n", 7)
    out, _, code = c.exec("shell", ns, ["sh", "-c", "tr a-z A-Z"], stdin=b"hello stdin\n")
    assert (out, code) == (b"HELLO STDIN\n", 0)
    out, _, code = c.exec("shell", ns, ["hostname"])
    assert (out.strip(), code) == (b"shell", 0)
    out, _, _ = c.exec("shell", ns, ["cat", "/etc/resolv.conf"])
    assert out.decode().splitlines()[:3] == [
        "nameserver 10.96.0.10", f"search {ns}.svc.cluster.local svc.cluster.local "
        "cluster.local", "options ndots:5"]
    out, _, _ = c.exec("shell", ns, ["cat", "/etc/hosts"])
    assert f"{p.status.pod_ip}\tshell" in out.decode()
    with pytest.raises(CorralError, match="not found"):
        c.exec("nope", ns, ["true"])


def test_exec_streams_stdin_interactively(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("cat", ns, host.node_name, pu.container("main", "sleep", "1000"), grace=0))
    pu.wait_pod(c, ns, "cat", pu.ready, "Ready")
    gate = threading.Event()
    start = api_pb2.ExecStart(namespace=ns, name="cat", command=["cat"], stdin=True)

    def requests():  # type: ignore[no-untyped-def]
        yield api_pb2.ExecRequest(start=start)
        yield api_pb2.ExecRequest(stdin=b"first\n")
        gate.wait(10)
        yield api_pb2.ExecRequest(stdin=b"second\n")
        yield api_pb2.ExecRequest(stdin_eof=True)

    got = b""
    code = None
    for resp in c.exec_stream(requests(), timeout=30):
        got += resp.stdout
        if b"first\n" in got:
            gate.set()  # the first line came back before the second was sent
        if resp.HasField("exit_code"):
            code = resp.exit_code
    assert got == b"first\nsecond\n" and code == 0


def test_top_pods_from_cgroups_matches_podman_stats(host: AgentHost, ns: str) -> None:
    c = host.client
    burner = pu.container("burn", "sh", "-c", "while :; do :; done")
    burner.resources.limits["cpu"] = "300m"
    idle = pu.container("idle", "sh", "-c",
                        "dd if=/dev/zero of=/dev/shm/blob bs=1M count=40 2>/dev/null; "
                        "exec sleep 1000")
    c.create(pu.pod("busy", ns, host.node_name, burner, idle, grace=0))
    p = pu.wait_pod(c, ns, "busy", pu.ready, "Ready")
    time.sleep(12)  # one sample period of the agent, so CPU is a rate over a full interval
    top = c.top(namespace=ns, name="busy")
    assert [(x.namespace, x.name, x.node_name) for x in top.pods] == [
        (ns, "busy", host.node_name)]
    usage = {x.name: x for x in top.pods[0].containers}
    assert 200 <= usage["burn"].cpu_millicores <= 330, usage["burn"]
    assert usage["idle"].cpu_millicores < 50
    assert usage["idle"].memory_bytes >= 40 * 1024 * 1024
    # Cross-check memory with Podman's own stats (same cgroup, read independently).
    cid = pu.cstatus(p, "idle").container_id.removeprefix("podman://")
    stats = json.loads(host.podman("stats", "--no-stream", "--format", "json", cid).stdout)
    mem_text = stats[0]["mem_usage"].split("/")[0].strip()
    value, unit = float(mem_text[:-2]), mem_text[-2:]
    podman_bytes = value * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert abs(podman_bytes - usage["idle"].memory_bytes) < 8e6, (mem_text, usage["idle"])
    # Top for the whole namespace lists the pod too.
    assert [x.name for x in c.top(namespace=ns).pods] == ["busy"]
