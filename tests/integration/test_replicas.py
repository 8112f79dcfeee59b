"""Three real corral-controlplane processes on loopback (tests/cluster.py).

What the API half of issue 2 promises across replicas: read-your-write on
another replica, writes resuming after the leader is SIGKILLed with every
acknowledged write on every replica, nothing acknowledged lost when all three
are SIGKILLed and restarted, a replica restarted after 1,000 writes catching
up, watches on followers, health, reflection, cluster status, SIGTERM.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from corral.client import Client
from corral.errors import AlreadyExists, CorralError, Timeout, Unavailable
from corral.v1 import core_pb2
from tests.cluster import Cluster, ReplicaProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cm(name: str, **data: str) -> core_pb2.ConfigMap:
    m = core_pb2.ConfigMap()
    m.metadata.name = name
    m.metadata.namespace = "default"
    m.data.update(data)
    return m


def names_on(replica: ReplicaProcess, stale: bool = True) -> set[str]:
    with replica.client(retry_for=5.0) as c:
        items, _ = c.list("cm", "default", stale=stale)
    return {o.metadata.name for o in items}


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def caught_up(cluster: Cluster) -> bool:
    revs = set()
    for r in cluster.replicas:
        try:
            revs.add(r.local_status(timeout=1.0).revision)
        except grpc.RpcError:
            return False
    return len(revs) == 1


class Writer:
    """Creates ConfigMaps w-0, w-1, ... through every endpoint until stopped;
    remembers which ones were acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.client = cluster.client(retry_for=30.0, timeout=10.0)
        self.acked: list[str] = []
        self.ack_times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"w-{i}"
            try:
                self.client.create(cm(name, i=str(i)))
                self._ack(name)
                i += 1
            except AlreadyExists:
                # An earlier attempt whose answer was lost did land.
                self._ack(name)
                i += 1
            except Timeout as err:
                self.errors.append(f"{name}: {err}")  # outcome unknown: try the same name
            except CorralError as err:
                self.errors.append(f"{name}: {type(err).__name__}: {err}")
                time.sleep(0.05)

    def _ack(self, name: str) -> None:
        self.acked.append(name)
        self.ack_times.append(time.monotonic())

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_every_replica_serves_and_has_the_system_namespaces(controlplane: Cluster) -> None:
    for r in controlplane.replicas:
        assert r.health() == "SERVING"
        with r.client() as c:
            names = {n.metadata.name for n in c.list("namespace")[0]}
        assert {"default", "corral-system"} <= names


def test_health_and_reflection_on_every_replica(controlplane: Cluster) -> None:
    for r in controlplane.replicas:
        with grpc.insecure_channel(r.api_address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
            assert {"corral.v1.Resources", "corral.v1.Cluster", "corral.v1.Pods",
                    "grpc.health.v1.Health"} <= services
        # The unix socket serves the same API.
        with Client([f"unix:{r.socket}"]) as c:
            assert c.get("namespace", "default").metadata.name == "default"


def test_read_your_write_on_another_replica(controlplane: Cluster) -> None:
    reps = controlplane.replicas
    clients = [r.client() for r in reps]
    try:
        for i in range(30):
            writer, reader = clients[i % 3], clients[(i + 1) % 3]
            written = writer.create(cm(f"ryw-{i}", v=str(i)))
            got = reader.get("cm", f"ryw-{i}", "default")
            assert got.data["v"] == str(i)
            assert got.metadata.resource_version == written.metadata.resource_version
            # An update through a third replica is seen by the first at once too.
            got.data["v"] = f"{i}-b"
            clients[(i + 2) % 3].update(got)
            assert writer.get("cm", f"ryw-{i}", "default").data["v"] == f"{i}-b"
    finally:
        for c in clients:
            c.close()


def test_cluster_status_from_any_replica(controlplane: Cluster) -> None:
    leader = controlplane.leader()
    for r in controlplane.replicas:
        with r.client() as c:
            st = c.cluster_status()
        assert [m.name for m in st.members] == ["cp-0", "cp-1", "cp-2"]
        assert st.leader == leader.name
        assert all(m.reachable for m in st.members)
        assert {m.leader for m in st.members} == {leader.name}
        assert len({m.term for m in st.members}) == 1
        assert st.commit_index > 0
        assert not st.warnings
    follower = controlplane.followers()[0]
    follower.kill()
    other = next(r for r in controlplane.replicas if r.running)
    with other.client() as c:
        st = c.cluster_status()
    down = next(m for m in st.members if m.name == follower.name)
    assert not down.reachable and down.error
    assert any(follower.name in w and "unreachable" in w for w in st.warnings)


def test_watch_on_a_follower_sees_writes_made_through_the_leader(
        controlplane: Cluster) -> None:
    leader = controlplane.leader()
    follower = controlplane.followers()[0]
    with follower.client() as fc, leader.client() as lc:
        _, rv = fc.list("cm", "default")
        stream = fc.watch("cm", "default", resource_version=rv)
        events = iter(stream)
        for i in range(5):
            lc.create(cm(f"watched-{i}"))
        got = [next(events) for _ in range(5)]
        stream.cancel()
    assert [e.object.metadata.name for e in got] == [f"watched-{i}" for i in range(5)]
    assert [e.type for e in got] == ["ADDED"] * 5
    revs = [int(e.resource_version) for e in got]
    assert revs == sorted(revs)


def test_leader_sigkill_while_writing(controlplane: Cluster) -> None:
    writer = Writer(controlplane).start()
    wait_until(lambda: len(writer.acked) >= 50, 30, "50 writes before the kill")
    leader = controlplane.leader()
    killed_at = time.monotonic()
    leader.kill()
    acked_before = len(writer.acked)
    wait_until(lambda: len(writer.acked) >= acked_before + 50, 60,
               "writes to resume after the leader was killed")
    resumed = next(t for t in writer.ack_times[acked_before:] if t > killed_at)
    writer.stop()
    new_leader = controlplane.leader()
    assert new_leader is not leader
    leader.start()
    controlplane.wait_ready()
    wait_until(lambda: caught_up(controlplane), 60, "every replica at the same revision")
    acked = set(writer.acked)
    for r in controlplane.replicas:
        missing = acked - names_on(r)
        assert not missing, f"{r.name} lacks acknowledged writes {sorted(missing)[:10]}"
    print(f"writes resumed {resumed - killed_at:.2f}s after the leader was killed; "
          f"{len(acked)} acknowledged; errors seen by the writer: {len(writer.errors)}")


def test_sigkill_all_and_restart_loses_nothing(controlplane: Cluster) -> None:
    with controlplane.client() as c:
        acked = []
        for i in range(200):
            c.create(cm(f"durable-{i}", v=str(i)))
            acked.append(f"durable-{i}")
    for r in controlplane.replicas:
        r.kill()
    controlplane.start()
    wait_until(lambda: caught_up(controlplane), 60, "every replica at the same revision")
    for r in controlplane.replicas:
        present = names_on(r)
        assert set(acked) <= present, f"{r.name} lost {sorted(set(acked) - present)[:10]}"
    with controlplane.client() as c:
        assert c.get("cm", "durable-199", "default").data["v"] == "199"


def test_replica_restarted_after_1000_writes_catches_up(controlplane: Cluster) -> None:
    victim = controlplane.followers()[0]
    victim.kill()
    survivors = [r.name for r in controlplane.replicas if r.running]
    with controlplane.client(*survivors) as c:
        for i in range(1000):
            c.create(cm(f"bulk-{i}"))
        _, rv = c.list("cm", "default")
    victim.start()
    controlplane.wait_ready(replicas=[victim])
    wait_until(lambda: victim.local_status().revision >= int(rv), 90,
               f"{victim.name} to reach revision {rv}")
    present = names_on(victim, stale=True)
    assert {f"bulk-{i}" for i in range(1000)} <= present


def test_sigterm_stops_gracefully_and_ends_watches(controlplane: Cluster) -> None:
    victim = controlplane.replicas[2]
    c = victim.client(retry_for=1.0)
    stream = c.watch("cm", "default")
    result: list[Any] = []

    def consume() -> None:
        try:
            result.append(list(stream))
        except CorralError as err:
            result.append(err)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    code = victim.stop(grace=20)
    assert code == 0, controlplane.tail(victim)
    t.join(timeout=10)
    assert not t.is_alive(), "the watch stream must end when its replica stops"
    assert time.monotonic() - started < 15
    assert "stopped" in victim.log_text()
    c.close()


def test_without_quorum_calls_fail_fast_with_unavailable(controlplane: Cluster) -> None:
    with controlplane.client() as c:
        c.create(cm("before"))
    leader = controlplane.leader()
    survivor = controlplane.followers()[0]
    for r in controlplane.replicas:
        if r is not survivor:
            r.kill()
    wait_until(lambda: survivor.health() == "NOT_SERVING", 15, "health to say NOT_SERVING")
    with survivor.client(retry_for=0.5, timeout=15.0) as c:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            c.create(cm("after"))
        assert time.monotonic() - started < 5
        assert "no quorum" in str(info.value)
        with pytest.raises(Unavailable):
            c.get("cm", "before", "default")
        # A stale read still answers from this replica's own state.
        assert c.get("cm", "before", "default", stale=True).metadata.name == "before"
    leader.start()
    controlplane.wait_ready(replicas=[survivor, leader])
    with survivor.client() as c:
        c.create(cm("after"))


def test_secret_values_stay_out_of_errors_and_every_replica_log(controlplane: Cluster) -> None:
    """Issue 2: Secret values never appear in logs or error messages. Written
    through a follower (forwarded to the leader, applied on all three), then
    refused on several paths whose errors name the object and the field."""
    value = b"corral-test-secret-7f3a9c"
    encoded = base64.b64encode(value).decode()

    def secret(name: str, **data: bytes) -> core_pb2.Secret:
        s = core_pb2.Secret()
        s.metadata.name = name
        s.metadata.namespace = "default"
        for k, v in data.items():
            s.data[k] = v
        return s

    follower = controlplane.followers()[0]
    errors: list[str] = []
    with follower.client() as c:
        made = c.create(secret("creds", password=value))
        stale = core_pb2.Secret()
        stale.CopyFrom(made)
        made.data["password"] = value + b"-2"
        c.update(made)
        # Each refusal with the code a client acts on; the last one is over the
        # 1 MiB object cap but under the gRPC message limit (1 MiB + 64 KiB), so
        # it reaches the server's own check.
        cases = [(stale, "ABORTED"),
                 (secret("creds", password=value), "ALREADY_EXISTS"),
                 (secret("bad-key", **{"pass word": value}), "INVALID_ARGUMENT"),
                 (secret("Bad_Name", password=value), "INVALID_ARGUMENT"),
                 (secret("huge", password=value * 42_000), "INVALID_ARGUMENT")]
        for bad, code in cases:
            with pytest.raises(CorralError) as info:
                (c.update if bad is stale else c.create)(bad)
            assert info.value.code.name == code, info.value
            errors.append(str(info.value))
        c.delete("secret", "creds", "default")
    assert "at most 1048576 bytes" in errors[-1], errors[-1]
    for text in errors + [r.log_text() for r in controlplane.replicas]:
        assert value.decode() not in text and encoded not in text
