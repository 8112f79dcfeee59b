"""What a replica restarts with: its snapshot, the journal after it, and the commit
index it recorded, before it hears from any peer.

The crash window covered here: a snapshot is renamed into place by the
background writer, and the journal entries it covers are dropped only at a later
tick. A replica stopped in between must keep every journal entry after the
snapshot (pysyncobj would clear the whole journal because its first entries are
not the snapshot's last two, losing acknowledged entries on that replica).

And the commit index a replica restarts with (the journal header's copy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from controlplane.store.base import Change
from controlplane.store.raft import RaftStore
from controlplane.store.raftnode import RaftTuning
from corral.client import Client
from corral.v1 import core_pb2
from tests.cluster import running_cluster
from tests.store.conftest import Cluster, wait_for

pytestmark = pytest.mark.integration

MakeCluster = Callable[..., Cluster]


def pod(name: str) -> Change:
    return Change("Pod", "default", name, data=b"p" * 50)


def snapshot_without_compaction(store: RaftStore) -> int:
    """Take a snapshot on `store` but skip the journal compaction that follows it, as a
    crash right after the snapshot's rename would. Returns the snapshot's index."""
    node = store.node
    skipped: list[Any] = []
    node.journal.deleteEntriesTo = skipped.append  # type: ignore[method-assign]
    before = node._snapshot_index
    store.force_snapshot()
    wait_for(lambda: skipped, 20, "the snapshot and the (skipped) compaction")
    assert node._snapshot_index > before
    return int(node._snapshot_index)


def test_a_replica_stopped_between_snapshot_and_compaction_keeps_its_journal(
        make_raft_cluster: MakeCluster) -> None:
    c = make_raft_cluster(tuning=RaftTuning(snapshot_min_entries=100_000))
    c.leader().put(Change("Namespace", "", "default"), request_id="seed")
    leader = c.leader()
    for i in range(40):
        leader.put(pod(f"a{i}"))
    rev_at_snapshot, _ = c.wait_converged()
    victim = next(s for s in c.live() if s is not leader)
    index = snapshot_without_compaction(victim)
    for i in range(30):
        leader.put(pod(f"b{i}"))
    rev, digest = c.wait_converged()
    assert rev == rev_at_snapshot + 30
    last = victim.node.journal.last_index
    assert last >= index + 30
    n = c.index(victim)
    for i in range(3):
        c.stop(i)

    # Alone (no peer to catch up from), it restarts from its snapshot and its journal.
    again = c.start(n)
    wait_for(lambda: again.node.status.updated > 0, 10, "the first tick")
    assert again.node.journal.last_index == last, "journal entries after the snapshot were lost"
    wait_for(lambda: again.revision >= rev, 10, "its own journal to be applied")
    assert again.digest() == (rev, digest)


def test_a_killed_replica_restarts_with_every_write_it_knew_committed(tmp_path: Path) -> None:
    """SIGKILL right after a burst of writes, then the old leader restarted alone (no
    quorum, so no leader can tell it anything): it applies, from its own journal,
    every write acknowledged before the kill. The commit index it goes by is kept in
    the journal's header at every change (the synced metadata copy lags up to 1 s)."""
    with running_cluster(tmp_path, 3) as cluster:
        leader = cluster.leader()
        client = cluster.client(leader.name, timeout=10.0)
        names = [f"burst-{i}" for i in range(60)]
        for name in names:
            cm = core_pb2.ConfigMap()
            cm.metadata.name = name
            cm.metadata.namespace = "default"
            client.create(cm)
        rev = leader.local_status().revision
        for r in cluster.replicas:
            r.kill()
        leader.start()

        def revision() -> int:
            try:
                return int(leader.local_status(timeout=1.0).revision)
            except grpc.RpcError:
                return -1

        wait_for(lambda: revision() >= 0, 30, "the restarted replica's API")
        time.sleep(0.5)  # its first ticks apply what its journal says is committed
        assert revision() == rev
        with Client([leader.api_address], retry_for=10.0) as c:
            items, _ = c.list("ConfigMap", "default", stale=True)
        assert set(names) <= {o.metadata.name for o in items}
