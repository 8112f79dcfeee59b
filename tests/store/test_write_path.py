"""The write path's shortcuts: the leader's commit rule (its own entries count only
once synced, so a majority of durable copies commits, as Raft thesis §10.2.1
allows), and writer threads that append their command themselves when the tick
thread is idle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObjConsumer

from controlplane.store.base import Change
from controlplane.store.raftnode import RaftNode
from tests.store.conftest import PASSWORD, Cluster, free_port, wait_for

_LEADER = 2
MakeCluster = Callable[..., Cluster]


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[RaftNode]:
    """A RaftNode of three, not started, made leader of term 2 by hand."""
    node = RaftNode(
        f"127.0.0.1:{free_port()}", [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
        data_dir=str(tmp_path / "n"), password=PASSWORD, consumers=[SyncObjConsumer()],
        capture_state=lambda: None, restore_state=lambda s: None,
    )
    node._SyncObj__raftState = _LEADER  # type: ignore[attr-defined]
    node._SyncObj__raftCurrentTerm = 2  # type: ignore[attr-defined]
    try:
        yield node
    finally:
        node.stop()


def set_match(node: RaftNode, *indexes: int) -> None:
    peers = sorted(node._SyncObj__otherNodes, key=lambda n: n.id)  # type: ignore[attr-defined]
    node._SyncObj__raftMatchIndex = dict(zip(peers, indexes, strict=True))  # type: ignore[attr-defined]


def commit(node: RaftNode) -> int:
    return int(node._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]


def test_the_leader_counts_itself_only_up_to_its_synced_entries(leader: RaftNode) -> None:
    j = leader.journal
    j.add(b"\x00a", 2, 2)
    j.add(b"\x00b", 3, 2)  # buffered, not yet on disk
    assert j.synced_index == 1
    set_match(leader, 3, 0)
    leader._advance_commit()
    assert commit(leader) == 1  # one follower + an unsynced leader is not a majority
    j.sync()
    assert j.synced_index == 3
    leader._advance_commit()
    assert commit(leader) == 3


def test_two_followers_commit_without_the_leaders_sync(leader: RaftNode) -> None:
    j = leader.journal
    j.add(b"\x00a", 2, 2)
    set_match(leader, 2, 2)
    leader._advance_commit()
    assert commit(leader) == 2


def test_entries_of_an_older_term_commit_only_under_one_of_this_term(leader: RaftNode) -> None:
    j = leader.journal
    j.add(b"\x00old", 2, 1)
    j.sync()
    set_match(leader, 2, 0)
    leader._advance_commit()
    assert commit(leader) == 1
    j.add(b"\x01", 3, 2)  # this term's no-op
    j.sync()
    set_match(leader, 3, 0)
    leader._advance_commit()
    assert commit(leader) == 3


@pytest.mark.integration
def test_a_writer_thread_appends_its_own_command_when_the_tick_thread_is_idle(
        make_raft_cluster: MakeCluster) -> None:
    c = make_raft_cluster()
    leader = c.leader()
    leader.put(Change("Namespace", "", "default"), request_id="seed")
    node = leader.node
    who: list[str] = []
    real = node._checkCommandsToApply

    def spy() -> Any:
        if node._SyncObj__commandsQueue._FastQueue__queue:  # type: ignore[attr-defined]
            who.append(threading.current_thread().name)
        return real()

    node._checkCommandsToApply = spy  # type: ignore[method-assign]
    me = threading.current_thread().name
    for i in range(50):
        leader.put(Change("ConfigMap", "default", f"c{i}", data=b"x"))
        # Until the tick thread has finished the last write's round and waits in
        # poll() (where it holds no tick lock): back to back, on a busy machine,
        # it often had not (a full-suite run saw 6 of 50).
        wait_for(lambda: not node._tick_lock.locked(), 5, "the tick thread in poll()")
    assert who.count(me) >= 10, who
    assert c.wait_converged()[0] == 51


def test_a_write_waiter_keeps_its_first_answer_and_times_out_unanswered() -> None:
    from controlplane.store.raft import _CLOSED, _Waiter

    waiter = _Waiter()
    assert waiter.wait(0.01) is False  # nobody answered
    answered = threading.Event()

    def wait() -> None:
        if waiter.wait(5.0):
            answered.set()

    t = threading.Thread(target=wait)
    t.start()
    waiter.done("record", 0)
    # close() answering too (another thread, later) must not change the outcome.
    waiter.done(None, _CLOSED)
    t.join(5)
    assert answered.is_set()
    assert (waiter.result, waiter.error) == ("record", 0)
    assert waiter.wait(0.01) is False  # the answer is taken once
