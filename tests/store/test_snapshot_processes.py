"""Snapshots with real corral-controlplane processes, set through the config's
`raft:` section: under writes the journal stays bounded (entries and bytes), a
replica down long enough to need the leader's snapshot catches up from it, and
replicas SIGKILLed and restarted come back from snapshot + journal with the
same digest."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from controlplane.store import inspect
from corral.client import Client
from corral.v1 import core_pb2
from tests.cluster import Cluster, ReplicaProcess
from tests.store.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SNAPSHOT_EVERY = 150  # raft.snapshot_min_entries
WRITES = 1500  # ten times the threshold
PAYLOAD = 400  # bytes of data per ConfigMap


def configmap(name: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = "default"
    cm.data["payload"] = "x" * PAYLOAD
    return cm


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    # make_cluster (tests/conftest.py) prints every replica's log tail if the test fails.
    return make_cluster(3, extra_config={
        "raft": {"snapshot_min_entries": SNAPSHOT_EVERY, "snapshot_min_seconds": 3600}})


def journal_bytes(r: ReplicaProcess) -> int:
    return os.stat(r.data_dir / "raft.journal").st_size


def names_on(r: ReplicaProcess) -> set[str]:
    with Client([r.api_address], retry_for=30.0) as c:
        items, _ = c.list("ConfigMap", "default", stale=True)
    return {o.metadata.name for o in items}


def test_snapshots_bound_the_journal_install_on_a_lagger_and_survive_sigkill(
        cluster: Cluster) -> None:
    lagger = cluster.followers()[0]
    lagger.kill()
    up = [r for r in cluster.replicas if r is not lagger]

    # Writes, while sampling the live replicas' journals.
    peak_entries = peak_bytes = 0
    errors: list[BaseException] = []
    client = cluster.client(*(r.name for r in up), timeout=10.0)

    def write(part: int) -> None:
        try:
            for i in range(WRITES // 4):
                client.create(configmap(f"s-{part}-{i}"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for r in up:
            peak_entries = max(peak_entries, r.local_status().log_entries)
            peak_bytes = max(peak_bytes, journal_bytes(r))
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert not errors, errors[0]

    # Bounded: the threshold plus what arrives while a snapshot is written, far
    # below the 1,500 entries (and their bytes) written.
    entry_bytes = PAYLOAD + 250
    print(f"peak journal: {peak_entries} entries, {peak_bytes} bytes")
    assert peak_entries < 4 * SNAPSHOT_EVERY
    assert peak_bytes < 4 * SNAPSHOT_EVERY * entry_bytes * 2
    leader = cluster.leader()
    leader_rev = leader.local_status().revision
    assert leader_rev >= WRITES

    # The lagger's log ends long before the leader's first entry: it gets the snapshot.
    lagger.start()
    cluster.wait_ready(replicas=[lagger])
    wait_for(lambda: lagger.local_status().revision >= leader_rev, 60, "the lagger to catch up")
    assert "state loaded from the snapshot" in lagger.log_text()
    want = {f"s-{p}-{i}" for p in range(4) for i in range(WRITES // 4)}
    assert want <= names_on(lagger)

    # Everyone converged; let the commit index reach the metadata (once a second),
    # then SIGKILL all three: their folders hold snapshot + journal alike.
    wait_for(lambda: len({r.local_status().revision for r in cluster.replicas}) == 1, 60,
             "the same revision everywhere")
    time.sleep(1.5)
    for r in cluster.replicas:
        r.kill()
    images = {r.name: inspect.load(str(r.data_dir)) for r in cluster.replicas}
    for name, img in images.items():
        assert img.snapshot_index > 1, f"{name} has no snapshot"
        assert img.log_first > 1, f"{name}'s journal was never compacted"
    assert len({(i.revision, i.digest) for i in images.values()}) == 1, {
        n: (i.revision, i.digest, i.snapshot_index) for n, i in images.items()}

    # Restarted from those folders they serve the same state.
    cluster.start()
    rev = next(iter(images.values())).revision
    for r in cluster.replicas:
        wait_for(lambda r=r: r.local_status().revision >= rev, 60, f"{r.name} to reload")
        assert want <= names_on(r)
