"""What a replica restarts with: its snapshot, the journal after it, and the commit
index it recorded, before it hears from any peer.

The crash window covered here: a snapshot is renamed into place by the
background writer, and the journal entries it covers are dropped only at a later
tick. A replica stopped in between must keep every journal entry after the
snapshot (pysyncobj would clear the whole journal because its first entries are
not the snapshot's last two, losing acknowledged entries on that replica)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from controlplane.store.base import Change
from controlplane.store.raft import RaftStore
from controlplane.store.raftnode import RaftTuning
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
