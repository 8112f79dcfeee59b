"""The follower's append rule and the leader's nextIndex, fed messages directly
(no tick thread), against pysyncobj 0.3.17's own behaviour."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer
from pysyncobj.monotonic import monotonic as sync_monotonic
from pysyncobj.node import TCPNode

from controlplane.store.raftnode import RaftNode, RaftTuning
from corral.errors import Invalid, Unavailable
from tests.store.conftest import PASSWORD, free_port

T1 = 1


def ae(prev: int, prev_term: int, entries: list[tuple[bytes, int, int]], commit: int,
       term: int = T1) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": commit,
            "entries": entries, "prevLogIdx": prev, "prevLogTerm": prev_term}


def run(first: int, last: int, term: int = T1) -> list[tuple[bytes, int, int]]:
    return [(b"\x01cmd%d" % i, i, term) for i in range(first, last + 1)]


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[RaftNode, TCPNode]]:
    leader_addr = f"127.0.0.1:{free_port()}"
    node = RaftNode(
        f"127.0.0.1:{free_port()}", [leader_addr], data_dir=str(tmp_path / "n"),
        password=PASSWORD, consumers=[SyncObjConsumer()],
        capture_state=lambda: None, restore_state=lambda s: None,
    )
    sent: list[dict[str, Any]] = []
    node.sent = sent  # type: ignore[attr-defined]
    node._SyncObj__transport.send = lambda to, message: sent.append(message) or True
    leader = TCPNode(leader_addr)
    # Term 1 first: a term change syncs the journal (meta), which would hide deferral.
    node._SyncObj__onMessageReceived(leader, ae(1, 0, [], commit=1))
    sent.clear()
    try:
        yield node, leader
    finally:
        node.stop()


def log_of(node: RaftNode) -> list[tuple[int, int]]:
    j = node.journal
    return [(j[i][1], j[i][2]) for i in range(len(j))]


def test_duplicates_never_truncate(follower: tuple[RaftNode, TCPNode],
                                   caplog: pytest.LogCaptureFixture) -> None:
    node, leader = follower
    recv = node._SyncObj__onMessageReceived
    recv(leader, ae(1, 0, run(2, 6), commit=6))
    before = log_of(node)
    with caplog.at_level(logging.WARNING):
        recv(leader, ae(1, 0, run(2, 3), commit=6))  # a stale duplicate
        recv(leader, ae(3, T1, run(4, 5), commit=6))
    assert log_of(node) == before == [(1, 0)] + [(i, T1) for i in range(2, 7)]
    assert node.journal.stats.truncations == 0
    assert node._SyncObj__raftCommitIndex == 6
    assert "truncating" not in caplog.text and "CRITICAL" not in caplog.text


def test_conflict_truncates_from_the_first_conflicting_entry(
    follower: tuple[RaftNode, TCPNode],
) -> None:
    node, leader = follower
    recv = node._SyncObj__onMessageReceived
    recv(leader, ae(1, 0, run(2, 5), commit=1))
    # A new leader (term 2) holds entries 2..3 of term 1 and its own 4.
    recv(leader, ae(1, 0, [*run(2, 3), (b"\x01new4", 4, 2)], commit=1, term=2))
    assert log_of(node) == [(1, 0), (2, 1), (3, 1), (4, 2)]
    assert node.journal[-1][0] == b"\x01new4"


def test_commit_index_stops_at_the_last_entry_of_the_message(
    follower: tuple[RaftNode, TCPNode],
) -> None:
    node, leader = follower
    recv = node._SyncObj__onMessageReceived
    recv(leader, ae(1, 0, run(2, 5), commit=1))  # 2..5 uncommitted, maybe stale
    recv(leader, ae(1, 0, run(2, 2), commit=5))
    # Only entry 2 is known to match the leader's log: commit no further.
    assert node._SyncObj__raftCommitIndex == 2


def test_mismatched_prev_is_refused_without_touching_the_log(
    follower: tuple[RaftNode, TCPNode],
) -> None:
    node, leader = follower
    recv = node._SyncObj__onMessageReceived
    recv(leader, ae(1, 0, run(2, 3), commit=1))
    recv(leader, ae(3, 5, run(4, 4), commit=3))  # wrong prevLogTerm
    recv(leader, ae(9, 1, run(10, 10), commit=3))  # beyond the log
    assert log_of(node) == [(1, 0), (2, 1), (3, 1)]
    node._durable_point()
    replies = node.sent  # type: ignore[attr-defined]
    assert [(m["success"], m["reset"], m["next_node_idx"]) for m in replies[-2:]] == [
        (False, True, 3), (False, True, 4),
    ]


def test_acknowledgements_wait_for_the_sync(follower: tuple[RaftNode, TCPNode]) -> None:
    node, leader = follower
    node._SyncObj__onMessageReceived(leader, ae(1, 0, run(2, 4), commit=1))
    node._SyncObj__onMessageReceived(leader, ae(4, T1, run(5, 5), commit=1))
    assert node.journal.dirty
    assert node.sent == []  # type: ignore[attr-defined]
    syncs = node.journal.stats.syncs
    node._durable_point()
    assert not node.journal.dirty
    assert node.journal.stats.syncs == syncs + 1  # one sync for both messages
    assert [m["next_node_idx"] for m in node.sent] == [5, 6]  # type: ignore[attr-defined]


def test_stock_pysyncobj_truncates_applied_duplicates(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Pins the behaviour RaftNode corrects: if this starts failing, pysyncobj changed."""
    leader = TCPNode(f"127.0.0.1:{free_port()}")
    me = f"127.0.0.1:{free_port()}"
    plain = SyncObj(me, [leader.address], SyncObjConf(autoTick=False, bindAddress=me))
    try:
        recv = plain._SyncObj__onMessageReceived
        recv(leader, ae(1, 0, run(2, 6), commit=6))
        plain._SyncObj__applyLogEntries()
        with caplog.at_level(logging.CRITICAL):
            recv(leader, ae(1, 0, run(2, 3), commit=6))
        assert "truncating already-applied log entries" in caplog.text
        assert plain._SyncObj__raftLog[-1][1] == 3  # acknowledged entries 4..6 are gone
    finally:
        plain._doDestroy()


def test_leader_next_index_does_not_regress_on_success(tmp_path: Path) -> None:
    peer = TCPNode(f"127.0.0.1:{free_port()}")
    node = RaftNode(
        f"127.0.0.1:{free_port()}", [peer.address], data_dir=str(tmp_path / "l"),
        password=PASSWORD, consumers=[SyncObjConsumer()],
        capture_state=lambda: None, restore_state=lambda s: None,
    )
    try:
        node._SyncObj__raftState = 2  # leader, as after an election
        node._SyncObj__raftNextIndex[peer] = 50
        node._SyncObj__raftMatchIndex[peer] = 10
        node._SyncObj__lastResponseTime[peer] = 0
        recv = node._SyncObj__onMessageReceived
        recv(peer, {"type": "next_node_idx", "next_node_idx": 21, "reset": False, "success": True})
        assert node._SyncObj__raftMatchIndex[peer] == 20
        assert node._SyncObj__raftNextIndex[peer] == 50
        recv(peer, {"type": "next_node_idx", "next_node_idx": 30, "reset": True, "success": False})
        assert node._SyncObj__raftNextIndex[peer] == 30  # a refusal still moves it back
    finally:
        node.stop()


def test_password_is_required(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match=r"raft\.password"):
        RaftNode(f"127.0.0.1:{free_port()}", [], data_dir=str(tmp_path), password="",
                 consumers=[], capture_state=lambda: None, restore_state=lambda s: None)


def test_wildcard_and_busy_addresses_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="wildcard"):
        RaftNode(f"0.0.0.0:{free_port()}", [], data_dir=str(tmp_path), password=PASSWORD,
                 consumers=[], capture_state=lambda: None, restore_state=lambda s: None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(Unavailable, match="cannot bind the Raft address"):
            RaftNode(f"127.0.0.1:{port}", [], data_dir=str(tmp_path), password=PASSWORD,
                     consumers=[], capture_state=lambda: None, restore_state=lambda s: None)


def test_bad_tuning_names_the_field() -> None:
    with pytest.raises(Invalid, match=r"raft\.election_timeout_min"):
        RaftTuning(heartbeat=0.2, election_timeout_min=0.3).validate()


def test_losing_the_leader_connection_brings_the_election_forward(
    follower: tuple[RaftNode, TCPNode],
) -> None:
    node, leader = follower
    node._peers_up.add(str(leader.id))
    node._SyncObj__raftElectionDeadline = sync_monotonic() + 100  # far away
    node._SyncObj__onNodeDisconnected(leader)
    assert node._SyncObj__raftLeader is None  # new commands fail fast, not forwarded
    left = node._SyncObj__raftElectionDeadline - sync_monotonic()
    # 5-50% of the minimum election timeout, on pysyncobj's own clock.
    assert 0 < left <= 0.5 * node._tuning.election_timeout_min + 0.01
