"""Streams that clients leave: `logs -f` and interactive `exec` cut in mid-stream.

Asked directly on the agent's NodeAgent port (node_ip:10250), as the control
plane's forwarder asks it. A cut stream must end on the agent at once: the
agent keeps answering Logs and Exec for every pod, and after the cut no thread,
no Podman connection and no socket of the agent is left behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from corral.v1 import api_pb2, api_pb2_grpc
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration

FOLLOWERS = 24  # per round; 3 rounds = 72, more than the agent's 64 gRPC workers


def agent_pid(host: AgentHost) -> int:
    # nsenter without --fork execs the agent: the Popen's PID is the agent's.
    assert host.proc is not None
    return host.proc.pid


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def sockets_of(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def settle(what: str, value: Callable[[], int], limit: int, timeout: float = 30.0) -> int:
    """Wait until value() <= limit; return the last value (asserting on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = value()
        if got <= limit:
            return got
        assert time.monotonic() < deadline, f"{what}: {got} > {limit} after {timeout:.0f}s"
        time.sleep(0.5)


def exec_once(stub: api_pb2_grpc.NodeAgentStub, ns: str, pod: str, *argv: str,
              timeout: float = 15.0) -> tuple[bytes, int]:
    start = api_pb2.ExecStart(namespace=ns, name=pod, command=list(argv))
    out, code = b"", None
    for resp in stub.Exec(iter([api_pb2.ExecRequest(start=start)]), timeout=timeout):
        out += resp.stdout
        if resp.HasField("exit_code"):
            code = resp.exit_code
    assert code is not None
    return out, code


def open_followers(stub: api_pb2_grpc.NodeAgentStub, ns: str, pods: list[str],
                   count: int) -> list[grpc.Future]:
    """`count` Logs follows spread over `pods`, each past its first chunk (so the
    agent is blocked reading Podman's stream for every one of them)."""
    calls = []
    for i in range(count):
        call = stub.Logs(api_pb2.PodLogsRequest(namespace=ns, name=pods[i % len(pods)],
                                                follow=True), timeout=300)
        first = next(call)
        assert first.data, first
        calls.append(call)
    return calls


def open_execs(stub: api_pb2_grpc.NodeAgentStub, ns: str, pod: str,
               count: int) -> list[tuple[grpc.Future, threading.Event]]:
    """`count` execs that printed one line and then wait: half `exec -i cat` (waiting
    for more stdin), half a long sleep without stdin (nothing more to say)."""
    out = []
    for i in range(count):
        gate = threading.Event()
        if i % 2:
            start = api_pb2.ExecStart(namespace=ns, name=pod, command=["cat"], stdin=True)
            lines = [b"hello\n"]
        else:
            start = api_pb2.ExecStart(namespace=ns, name=pod, command=[
                "sh", "-c", "echo hello; exec sleep 3600"])
            lines = []

        def requests(gate: threading.Event = gate, start: api_pb2.ExecStart = start,
                     lines: list[bytes] = lines) -> Iterator[api_pb2.ExecRequest]:
            yield api_pb2.ExecRequest(start=start)
            for line in lines:
                yield api_pb2.ExecRequest(stdin=line)
            gate.wait(300)  # never sends EOF: the client just goes away

        call = stub.Exec(requests(), timeout=300)
        assert next(call).stdout == b"hello\n"
        out.append((call, gate))
    return out


def test_many_followers_cut_at_once_leave_the_agent_answering_without_leaks(
        host: AgentHost, ns: str) -> None:
    c = host.client
    # "quiet" writes one line and then nothing: a follower of it blocks in a read
    # that only the cut can end. "chatty" writes all the time.
    c.create(pu.pod("quiet", ns, host.node_name,
                    pu.container("main", "sh", "-c", "echo ready; exec sleep 3600"), grace=0))
    c.create(pu.pod("chatty", ns, host.node_name, pu.container(
        "main", "sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"),
        grace=0))
    for name in ("quiet", "chatty"):
        pu.wait_pod(c, ns, name, pu.ready, "Ready")
    pu.wait_for("quiet logged", lambda: b"".join(c.logs("quiet", ns)) == b"ready\n")

    pid = agent_pid(host)
    address = f"{host.node_ip}:{host.config.get('agent_port', 10250)}"
    control = grpc.insecure_channel(address)
    stub = api_pb2_grpc.NodeAgentStub(control)
    try:
        assert exec_once(stub, ns, "quiet", "echo", "before") == (b"before\n", 0)
        base_sockets = sockets_of(pid)
        threads_after_first = 0
        for round_ in range(3):
            cut_by_cancel = grpc.insecure_channel(address)
            cut_by_close = grpc.insecure_channel(address)
            cancelled = open_followers(api_pb2_grpc.NodeAgentStub(cut_by_cancel), ns,
                                       ["quiet", "chatty"], FOLLOWERS // 2)
            closed = open_followers(api_pb2_grpc.NodeAgentStub(cut_by_close), ns,
                                    ["quiet", "chatty"], FOLLOWERS // 2)
            sessions = open_execs(api_pb2_grpc.NodeAgentStub(cut_by_cancel), ns, "quiet", 6)
            # Each stream holds a connection to Podman (the pool may lend an idle one).
            assert sockets_of(pid) >= base_sockets + FOLLOWERS

            # All cut at once: half cancelled, half by their client going away.
            for call in cancelled:
                call.cancel()
            for call, _gate in sessions:
                call.cancel()
            cut_by_close.close()
            assert all(call.code() == grpc.StatusCode.CANCELLED for call in closed)
            for _call, gate in sessions:
                gate.set()

            # The agent answers at once, for every pod, in every way.
            t0 = time.monotonic()
            assert exec_once(stub, ns, "quiet", "echo", f"round {round_}") == (
                f"round {round_}\n".encode(), 0)
            assert exec_once(stub, ns, "chatty", "true") == (b"", 0)
            logs = b"".join(c.data for c in stub.Logs(
                api_pb2.PodLogsRequest(namespace=ns, name="quiet"), timeout=15))
            assert logs == b"ready\n"
            top = stub.Top(api_pb2.TopRequest(namespace=ns), timeout=15)
            assert sorted(p.name for p in top.pods) == ["chatty", "quiet"]
            assert time.monotonic() - t0 < 20

            # Every follower's Podman connection is closed again.
            settle(f"round {round_}: agent sockets", lambda: sockets_of(pid), base_sockets + 1)
            cut_by_cancel.close()
            # The interactive `cat`s saw their stdin close and ended.
            settle(f"round {round_}: cat processes in the pod", lambda: int(exec_once(
                stub, ns, "quiet", "sh", "-c", "ps | grep -c '[c]at$' || true")[0] or b"0"),
                0)
            if round_ == 0:
                # gRPC keeps idle workers; what matters is that later rounds add none.
                time.sleep(2)
                threads_after_first = threads_of(pid)
        settle("agent threads after three rounds", lambda: threads_of(pid),
               threads_after_first + 4)
    finally:
        control.close()
