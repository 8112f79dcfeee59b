"""`corral logs`, `corral exec` and `corral top pods` through the control plane's pod
proxy to a node agent.

The node agent here is a stand-in that runs each exec as a real local process and
serves logs from a list (the real agent is engineer E's and is tested in the lab):
what is under test is the CLI's side — the request it sends, stdin streaming,
stdout/stderr kept apart, the exit code, tail and container selection — through
the real API server and its real forwarding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from corral.client import Client
from corral.v1 import api_pb2, api_pb2_grpc, core_pb2
from tests.cli.conftest import Result

CORRAL = str(Path(sys.executable).parent / "corral")
LOG_LINES = [b"line one\n", b"line two\n", b"line three\n"]


class StandInAgent(api_pb2_grpc.NodeAgentServicer):
    def __init__(self) -> None:
        self.requests: list[api_pb2.PodLogsRequest] = []
        self.exec_starts: list[api_pb2.ExecStart] = []

    def Logs(self, request: api_pb2.PodLogsRequest,
             context: grpc.ServicerContext) -> Iterator[api_pb2.LogChunk]:
        self.requests.append(request)
        lines = LOG_LINES[-request.tail_lines:] if request.HasField("tail_lines") else LOG_LINES
        for line in lines:
            yield api_pb2.LogChunk(data=line)

    def Exec(self, request_iterator: Iterator[api_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[api_pb2.ExecResponse]:
        start = next(request_iterator).start
        self.exec_starts.append(start)
        proc = subprocess.Popen(list(start.command), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

        def feed() -> None:
            assert proc.stdin is not None
            try:
                if start.stdin:
                    for req in request_iterator:
                        if req.stdin:
                            proc.stdin.write(req.stdin)
                            proc.stdin.flush()
                        if req.stdin_eof:
                            break
            finally:
                proc.stdin.close()

        threading.Thread(target=feed, daemon=True).start()
        err_box: list[bytes] = []
        reader = threading.Thread(target=lambda: err_box.append(proc.stderr.read()))  # type: ignore[union-attr]
        reader.start()
        while chunk := os.read(proc.stdout.fileno(), 4096):
            yield api_pb2.ExecResponse(stdout=chunk)
        reader.join()
        code = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        yield api_pb2.ExecResponse(stderr=err_box[0], exit_code=code)

    def Top(self, request: api_pb2.TopRequest,
            context: grpc.ServicerContext) -> api_pb2.TopResponse:
        usage = api_pb2.PodUsage(namespace="default", name="p", node_name="n1")
        usage.containers.add(name="main", cpu_millicores=7, memory_bytes=3 * 2**20)
        return api_pb2.TopResponse(pods=[usage])


@pytest.fixture
def agent(memserver: str) -> Iterator[StandInAgent]:
    servicer = StandInAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_pb2_grpc.add_NodeAgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = Client([memserver])
    try:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = "n1"
        client.create(node)
        node = client.get("Node", "n1")
        node.status.addresses.add(type="InternalIP", address="127.0.0.1")
        node.status.daemon_endpoints.kubelet_endpoint.port = port
        node.status.conditions.add(type="Ready", status="True")
        client.update_status(node)
        pod = core_pb2.Pod(api_version="v1", kind="Pod")
        pod.metadata.name = "p"
        pod.metadata.namespace = "default"
        pod.spec.node_name = "n1"
        pod.spec.containers.add(name="main", image="localhost/busybox:latest")
        pod.spec.containers.add(name="side", image="localhost/busybox:latest")
        client.create(pod)
        yield servicer
    finally:
        client.close()
        server.stop(grace=None)


def corral(memserver: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({"CORRAL_SERVER": memserver, "HOME": "/nonexistent"})
    return subprocess.run([CORRAL, *args], input=stdin, capture_output=True, env=env,
                          timeout=60, check=False)


def test_exec_keeps_streams_apart_and_exits_with_the_commands_code(
        memserver: str, agent: StandInAgent) -> None:
    r = corral(memserver, "exec", "p", "-c", "side", "--", "sh", "-c",
               "echo to-out; echo to-err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"to-out\n", b"to-err\n")
    start = agent.exec_starts[-1]
    assert (start.namespace, start.name, start.container) == ("default", "p", "side")
    assert list(start.command) == ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]
    assert not start.stdin


def test_exec_i_streams_stdin(memserver: str, agent: StandInAgent) -> None:
    data = b"".join(f"row {i}\n".encode() for i in range(5000))
    r = corral(memserver, "exec", "-i", "pod/p", "--", "wc", "-l", stdin=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"5000"
    assert agent.exec_starts[-1].stdin


def test_exec_needs_a_command(cli: Callable[..., Result], agent: StandInAgent) -> None:
    r = cli("exec", "p")
    assert r.code == 1 and "give the command after --" in r.err
    r = cli("exec", "p", "ls")
    assert r.code == 1 and "use corral exec POD -- CMD" in r.err


def test_logs_tail_container_previous(memserver: str, agent: StandInAgent) -> None:
    r = corral(memserver, "logs", "p", "-c", "main")
    assert (r.returncode, r.stdout) == (0, b"".join(LOG_LINES))
    r = corral(memserver, "logs", "p", "--tail", "1", "-p", "--timestamps")
    assert r.stdout == b"line three\n"
    req = agent.requests[-1]
    assert (req.tail_lines, req.previous, req.timestamps, req.follow) == (1, True, True, False)
    r = corral(memserver, "logs", "nope")
    assert r.returncode == 1 and r.stderr.startswith(b"error: ") and b"not found" in r.stderr


def test_top_pods(cli: Callable[..., Result], agent: StandInAgent) -> None:
    r = cli("top", "pods")
    assert r.out.splitlines() == ["NAME   CPU(cores)   MEMORY(bytes)", "p      7m           3Mi"]
    r = cli("top", "pods", "--containers", "-A")
    assert r.out.splitlines()[1].split() == ["default", "p", "main", "7m", "3Mi"]
