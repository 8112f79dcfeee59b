"""The gRPC surface of one replica (in process, over a MemoryStore): status codes,
request ids, size limits, watch streams, health, reflection, the Pods relay."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from controlplane.config import build
from controlplane.main import Replica
from controlplane.store.memory import MemoryStore
from corral import kinds
from corral.client import REQUEST_ID_HEADER, Client
from corral.errors import (
    AlreadyExists,
    Conflict,
    Expired,
    FailedPrecondition,
    Invalid,
    NotFound,
    TooLarge,
    Unavailable,
)
from corral.limits import MAX_OBJECT_BYTES, SERVER_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc
from tests.api.conftest import config_map, deployment, obj, pod


class SmallHistoryStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(name="cp-0", max_history=50)


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = build({"name": "cp-0", "raft_address": "127.0.0.1:7999", "listen": "127.0.0.1:0",
                 "socket": str(tmp_path / "api.sock"), "data_dir": str(tmp_path / "data"),
                 "raft_password_file": str(pw)})
    # Without the controllers: this tests the API alone (a scheduler would bind pods).
    r = Replica(cfg, store=SmallHistoryStore(), services=lambda ctx: [])
    r.start()
    try:
        deadline = time.monotonic() + 10
        while not r.server.serving:
            assert time.monotonic() < deadline, "replica never became ready"
            time.sleep(0.05)
        yield r
    finally:
        r.shutdown()


@pytest.fixture
def client(replica: Replica) -> Iterator[Client]:
    c = Client([replica.api_address], retry_for=2.0)
    try:
        yield c
    finally:
        c.close()


def test_status_codes(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get("pod", "missing", "default")
    client.create(pod())
    with pytest.raises(AlreadyExists):
        client.create(pod())
    bad = deployment(replicas=-1)
    with pytest.raises(Invalid) as info:
        client.create(bad)
    assert "spec.replicas" in str(info.value)
    stale = client.get("pod", "web", "default")
    stale.spec.containers[0].image = "busybox:2"
    client.update(stale)
    stale.spec.containers[0].image = "busybox:3"
    with pytest.raises(Conflict) as conflict:
        client.update(stale)
    assert "get it again" in str(conflict.value)
    fresh = client.get("pod", "web", "default")
    fresh.spec.containers[0].args.append("x")
    with pytest.raises(FailedPrecondition):
        client.update(fresh)
    with pytest.raises(FailedPrecondition):
        client.delete("namespace", "default")


def test_unix_socket_endpoint(replica: Replica) -> None:
    with Client([f"unix:{replica.config.socket}"]) as c:
        assert c.get("namespace", "default").status.phase == "Active"


def test_request_id_makes_a_retried_write_apply_once(replica: Replica) -> None:
    with grpc.insecure_channel(replica.api_address) as ch:
        stub = api_pb2_grpc.ResourcesStub(ch)
        req = api_pb2.CreateRequest(object=kinds.wrap(config_map(a="1")))
        md = [(REQUEST_ID_HEADER, "retry-me")]
        first = stub.Create(req, metadata=md)
        again = stub.Create(req, metadata=md)
        assert first == again
        with pytest.raises(grpc.RpcError) as info:
            stub.Create(req, metadata=[(REQUEST_ID_HEADER, "another")])
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_object_over_one_mib(client: Client) -> None:
    big = config_map(blob="x" * (MAX_OBJECT_BYTES + 1024))
    with pytest.raises(TooLarge) as info:
        client.create(big)
    assert "limit is 1048576 bytes" in str(info.value)
    with pytest.raises(NotFound):
        client.get("cm", "cfg", "default")


def test_watch_over_grpc(client: Client) -> None:
    _, rv = client.list("cm", "default")
    stream = client.watch("cm", "default", resource_version=rv)
    events = iter(stream)
    client.create(config_map(a="1"))
    client.delete("cm", "cfg", "default")
    first, second = next(events), next(events)
    assert (first.type, second.type) == ("ADDED", "DELETED")
    assert first.object.data["a"] == "1"
    assert int(second.resource_version) > int(first.resource_version)
    stream.cancel()
    assert list(events) == []


def test_watch_bookmarks_over_grpc(replica: Replica, client: Client) -> None:
    """Bookmarks come every 5 s (ApiSettings.bookmark_interval) on a quiet watch."""
    stream = client.watch("pod", "default", resource_version=str(replica.store.revision),
                          allow_bookmarks=True)
    started = time.monotonic()
    ev = next(iter(stream))
    assert ev.type == "BOOKMARK" and ev.resource_version
    assert time.monotonic() - started < 15
    stream.cancel()


def test_watch_too_old_is_out_of_range(client: Client) -> None:
    for i in range(60):
        client.create(config_map(name=f"c{i}"))
    with pytest.raises(Expired) as info:
        list(client.watch("cm", "default", resource_version="1"))
    assert "list again" in str(info.value)


def test_watch_streams_end_on_shutdown(replica: Replica) -> None:
    c = Client([replica.api_address], retry_for=1.0)
    streams = [c.watch("pod", "") for _ in range(20)]
    ended = threading.Barrier(21)
    results: list[Any] = []

    def consume(s: Any) -> None:
        try:
            results.append(list(s))
        except Exception as err:
            results.append(err)
        ended.wait(timeout=30)

    pool = ThreadPoolExecutor(max_workers=20)
    for s in streams:
        pool.submit(consume, s)
    time.sleep(0.5)
    started = time.monotonic()
    replica.shutdown()
    ended.wait(timeout=30)
    assert time.monotonic() - started < 10
    assert len(results) == 20
    pool.shutdown()
    c.close()


def test_health_and_reflection(replica: Replica) -> None:
    with grpc.insecure_channel(replica.api_address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="corral.v1.Resources"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"corral.v1.Resources", "corral.v1.Cluster", "corral.v1.Pods",
                "grpc.health.v1.Health"} <= services
        desc = db.FindFileContainingSymbol("corral.v1.Resources")
        assert desc.name == "corral/v1/api.proto"


def test_local_and_cluster_status(client: Client) -> None:
    local = client.local_status()
    assert local.name == "cp-0" and local.state == "leader"
    status = client.cluster_status()
    assert status.leader == "cp-0"
    assert [m.name for m in status.members] == ["cp-0"]


class _Unavailable(MemoryStore):
    def put(self, *args: Any, **kwargs: Any) -> Any:
        raise Unavailable("no quorum", leader="10.0.0.7:6443")


def test_unavailable_names_the_leader(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = build({"name": "cp-0", "raft_address": "127.0.0.1:7999", "listen": "127.0.0.1:0",
                 "data_dir": str(tmp_path / "data"), "raft_password_file": str(pw)})
    store = _Unavailable(name="cp-0")
    r = Replica(cfg, store=store, services=lambda ctx: [])
    r.server.start()
    try:
        with Client([r.api_address], retry_for=0.5) as c, pytest.raises(Unavailable) as info:
            c.create(config_map())
        assert "10.0.0.7:6443" in str(info.value)
    finally:
        r.server.stop(0)
        store.close()


# ---- the Pods relay -------------------------------------------------------------------

class FakeAgent(api_pb2_grpc.NodeAgentServicer):
    """Stands in for the node agent of issue 4: answers from memory."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.exec_stdin: list[bytes] = []

    def Logs(self, request: api_pb2.PodLogsRequest,
             context: grpc.ServicerContext) -> Iterator[api_pb2.LogChunk]:
        if request.name == "ghost":
            context.abort(grpc.StatusCode.NOT_FOUND, "no container for pod ghost")
        for i in range(3):
            yield api_pb2.LogChunk(data=f"{self.node}:{request.name}:{i}\n".encode())

    def Exec(self, request_iterator: Iterator[api_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[api_pb2.ExecResponse]:
        first = next(request_iterator)
        data = b"".join(r.stdin for r in request_iterator)
        yield api_pb2.ExecResponse(stdout=" ".join(first.start.command).encode() + b"|" + data)
        yield api_pb2.ExecResponse(exit_code=3)

    def Top(self, request: api_pb2.TopRequest,
            context: grpc.ServicerContext) -> api_pb2.TopResponse:
        pod = api_pb2.PodUsage(namespace="default", name=f"pod-on-{self.node}",
                               node_name=self.node)
        pod.containers.add(name="c", cpu_millicores=5, memory_bytes=1024)
        return api_pb2.TopResponse(pods=[pod])


@pytest.fixture
def agents() -> Iterator[dict[str, int]]:
    servers, ports = [], {}
    for node in ("n1", "n2"):
        server = grpc.server(ThreadPoolExecutor(max_workers=4), options=SERVER_OPTIONS)
        api_pb2_grpc.add_NodeAgentServicer_to_server(FakeAgent(node), server)
        ports[node] = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
    try:
        yield ports
    finally:
        for s in servers:
            s.stop(0)


def register_node(client: Client, name: str, port: int, ready: bool = True) -> None:
    node = obj({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    client.create(node)
    node = client.get("node", name)
    node.status.addresses.add(type="InternalIP", address="127.0.0.1")
    node.status.daemon_endpoints.kubelet_endpoint.port = port
    node.status.conditions.add(type="Ready", status="True" if ready else "False")
    client.update_status(node)


def test_pods_relay_to_the_node_agent(client: Client, agents: dict[str, int]) -> None:
    register_node(client, "n1", agents["n1"])
    register_node(client, "n2", agents["n2"])
    register_node(client, "n3", 1, ready=False)
    client.create(pod(name="p"))
    with pytest.raises(FailedPrecondition) as info:
        b"".join(client.logs("p", "default"))
    assert "not scheduled" in str(info.value)
    p = client.get("pod", "p", "default")
    p.spec.node_name = "n2"
    client.update(p)
    assert b"".join(client.logs("p", "default")) == b"n2:p:0\nn2:p:1\nn2:p:2\n"
    out, _, code = client.exec("p", "default", ["echo", "hi"], stdin=b"input")
    assert (out, code) == (b"echo hi|input", 3)
    top = client.top()
    assert [p.name for p in top.pods] == ["pod-on-n1", "pod-on-n2"]
    assert any("n3" in e and "not Ready" in e for e in top.errors)
    one = client.top(namespace="default", name="p")
    assert [p.node_name for p in one.pods] == ["n2"]


def test_pods_relay_keeps_the_agents_error_code(client: Client,
                                                agents: dict[str, int]) -> None:
    register_node(client, "n1", agents["n1"])
    p = pod(name="ghost")
    p.spec.node_name = "n1"
    client.create(p)
    with pytest.raises(NotFound) as info:
        b"".join(client.logs("ghost", "default"))
    assert "node n1: no container for pod ghost" in str(info.value)


def test_hundreds_of_watch_streams(replica: Replica, client: Client) -> None:
    """Each stream holds a worker thread: 300 at once all get the next event."""
    n = 300
    streams = [client.watch("cm", "default", resource_version=str(replica.store.revision))
               for _ in range(n)]
    got: list[str] = []
    lock = threading.Lock()

    def first(s: Any) -> None:
        for ev in s:
            with lock:
                got.append(ev.object.metadata.name)
            return

    pool = ThreadPoolExecutor(max_workers=n)
    futures = [pool.submit(first, s) for s in streams]
    time.sleep(1.0)
    client.create(config_map(name="broadcast"))
    for f in futures:
        f.result(timeout=60)
    assert got == ["broadcast"] * n
    for s in streams:
        s.cancel()
    pool.shutdown()
