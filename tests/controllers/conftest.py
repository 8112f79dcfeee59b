"""Fixtures for the controller tests against real control plane processes.

- `cp`: one 3-replica control plane per test module (tests/cluster.py) with
  fast node-failure timings, shared by the module's tests; each test works in
  a namespace of its own (`ns`), so they do not see each other's objects.
- `hollow(n, **kw)`: hollow nodes with a unique name prefix, stopped and their
  Node objects deleted after the test.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from corral import kinds
from corral.client import Client
from corral.hollow import HollowCluster, HollowConfig
from corral.v1 import core_pb2
from tests.cluster import Cluster

# Fast timings for the shared clusters; the defaults are tested in the lab.
FAST = {"node_monitor_grace_period": 3, "pod_eviction_timeout": 3, "job_backoff_base": 0.5,
        "job_backoff_max": 2, "event_ttl": 3600, "unschedulable_retry": 5}
_prefix = itertools.count()


def obj(manifest: dict[str, Any]) -> Any:
    info = kinds.by_kind(manifest["kind"])
    msg = info.message()
    json_format.ParseDict(manifest, msg)
    return msg


def wait_until(pred: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory,
       request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cp"), 3, extra_config={"controllers": FAST})
    # pytest does not raise a test's failure inside its fixtures: count the
    # session's failures instead, to show the logs when one of this module's fails.
    failed_before = request.session.testsfailed
    try:
        yield cluster
    finally:
        if request.session.testsfailed > failed_before:
            for r in cluster.replicas:
                print(cluster.tail(r, 60), file=sys.stderr)
        cluster.close()
        cluster.remove_files()


@pytest.fixture
def client(cp: Cluster) -> Client:
    return cp.client(retry_for=30.0)


@pytest.fixture
def ns(client: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{secrets.token_hex(3)}"
    n = core_pb2.Namespace(api_version="v1", kind="Namespace")
    n.metadata.name = name
    client.create(n)
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        evs, _ = client.list("Event", name)
        for e in sorted(evs, key=lambda e: e.last_timestamp.seconds):
            print(f"event {e.involved_object.kind}/{e.involved_object.name} {e.reason}: "
                  f"{e.message}", file=sys.stderr)
    try:
        client.delete("Namespace", name)
    except Exception:
        pass


@pytest.fixture
def hollow(cp: Cluster) -> Iterator[Callable[..., HollowCluster]]:
    made: list[HollowCluster] = []

    def make(nodes: int = 3, **kw: Any) -> HollowCluster:
        prefix = kw.pop("prefix", f"h{next(_prefix)}{secrets.token_hex(2)}-")
        cfg = HollowConfig(endpoints=cp.endpoints, nodes=nodes, prefix=prefix, **kw)
        h = HollowCluster(cfg, client=Client(cp.endpoints, retry_for=30.0))
        made.append(h)
        h.start()
        h.wait_synced(30)
        return h

    try:
        yield make
    finally:
        for h in made:
            try:
                h.stop()
                h.delete_nodes()
            finally:
                h.client.close()
