"""DurableJournal: group commit, checksums and torn tails, crash-safe truncation,
compaction and metadata."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store import journal as journal_mod
from controlplane.store.journal import HEADER_SIZE, DurableJournal, JournalCorrupt


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "raft.journal")


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every fdatasync/fsync the journal module makes, by fd."""
    calls: list[int] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(journal_mod.os, "fdatasync", fdatasync)
    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    yield calls


def entries(j: DurableJournal) -> list[tuple[bytes, int, int]]:
    return [j[i] for i in range(len(j))]


def fill(j: DurableJournal, first: int, n: int, term: int = 1) -> None:
    for i in range(first, first + n):
        j.add(f"cmd-{i}".encode(), i, term)


def test_entries_survive_reopen_and_group_commit_syncs_once(path: str, syncs: list[int]) -> None:
    j = DurableJournal(path)
    syncs.clear()
    fill(j, 1, 50)
    assert j.dirty and syncs == []  # add() only buffers
    size_before = os.path.getsize(path)
    assert size_before == HEADER_SIZE  # nothing written before sync()
    assert j.sync() is True
    assert len(syncs) == 1  # one fdatasync for 50 entries
    assert not j.dirty and j.sync() is False
    j._destroy()
    again = DurableJournal(path)
    assert entries(again) == [(f"cmd-{i}".encode(), i, 1) for i in range(1, 51)]
    again._destroy()


def test_torn_tail_is_dropped_and_cut(path: str, caplog: pytest.LogCaptureFixture) -> None:
    j = DurableJournal(path)
    fill(j, 1, 10)
    j.sync()
    j._destroy()
    full = os.path.getsize(path)
    with open(path, "r+b") as f:  # a record cut in half by a crash
        f.truncate(full - 3)
    with caplog.at_level(logging.WARNING):
        again = DurableJournal(path)
    assert [e[1] for e in entries(again)] == list(range(1, 10))
    assert "torn tail" in caplog.text
    assert os.path.getsize(path) < full - 3  # the partial record is gone from disk
    fill(again, 10, 1)
    again.sync()
    again._destroy()
    assert [e[1] for e in entries(DurableJournal(path))] == list(range(1, 11))


def test_checksum_mismatch_ends_the_journal(path: str) -> None:
    j = DurableJournal(path)
    fill(j, 1, 5)
    j.sync()
    offset = j._offsets[3]
    j._destroy()
    with open(path, "r+b") as f:
        f.seek(offset + 26)  # inside entry 4's command (24-byte header)
        f.write(b"X")
    again = DurableJournal(path)
    assert [e[1] for e in entries(again)] == [1, 2, 3]


def test_garbage_after_the_last_record_is_dropped(path: str) -> None:
    j = DurableJournal(path)
    fill(j, 1, 3)
    j.sync()
    j._destroy()
    with open(path, "ab") as f:
        f.write(os.urandom(100))
    assert [e[1] for e in entries(DurableJournal(path))] == [1, 2, 3]


def test_out_of_sequence_records_end_the_journal(path: str) -> None:
    j = DurableJournal(path)
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 3)
    j.add(b"c", 3, 2)  # a term going back: not a log Raft could have written
    j.sync()
    j._destroy()
    assert [e[1] for e in entries(DurableJournal(path))] == [1, 2]


def test_not_a_journal_is_refused(path: str) -> None:
    Path(path).write_bytes(b"hello world, definitely not a journal")
    with pytest.raises(JournalCorrupt, match="not a Corral journal"):
        DurableJournal(path)


def test_truncation_of_synced_entries_is_synced_before_new_appends(
    path: str, syncs: list[int]
) -> None:
    j = DurableJournal(path)
    fill(j, 1, 10, term=1)
    j.sync()
    syncs.clear()
    j.deleteEntriesFrom(5)  # keep entries 1..5 (list positions 0..4)
    assert len(syncs) == 1  # ftruncate made durable at once
    assert [e[1] for e in entries(j)] == [1, 2, 3, 4, 5]
    fill(j, 6, 3, term=2)
    j.sync()
    j._destroy()
    again = DurableJournal(path)
    assert [(e[1], e[2]) for e in entries(again)] == [(i, 1) for i in range(1, 6)] + [
        (6, 2), (7, 2), (8, 2),
    ]


def test_truncation_of_buffered_entries_only_trims_the_buffer(path: str, syncs: list[int]) -> None:
    j = DurableJournal(path)
    fill(j, 1, 3)
    j.sync()
    fill(j, 4, 4)
    syncs.clear()
    j.deleteEntriesFrom(5)  # drops buffered entries 6 and 7
    assert syncs == []
    j.sync()
    j._destroy()
    assert [e[1] for e in entries(DurableJournal(path))] == [1, 2, 3, 4, 5]


def test_compaction_rewrites_and_survives_reopen(path: str) -> None:
    j = DurableJournal(path)
    fill(j, 1, 100)
    j.sync()
    fill(j, 101, 2)  # buffered entries are kept too
    j.deleteEntriesTo(98)  # keep positions 98.. = entries 99..102
    assert [e[1] for e in entries(j)] == [99, 100, 101, 102]
    assert not j.dirty
    fill(j, 103, 1)
    j.sync()
    j._destroy()
    assert [e[1] for e in entries(DurableJournal(path))] == [99, 100, 101, 102, 103]
    assert not os.path.exists(path + ".compact")


def test_clear_then_snapshot_entries(path: str) -> None:
    j = DurableJournal(path)
    fill(j, 1, 10)
    j.sync()
    j.clear()
    j.add(b"x", 500, 3)
    j.add(b"y", 501, 3)
    j.sync()
    j._destroy()
    assert entries(DurableJournal(path)) == [(b"x", 500, 3), (b"y", 501, 3)]


def test_term_and_vote_are_durable_before_set_current_term_returns(
    path: str, syncs: list[int]
) -> None:
    j = DurableJournal(path)
    syncs.clear()
    j.setCurrentTerm(7, "127.0.0.1:9000")
    assert len(syncs) >= 2  # the temporary file and the folder
    meta = json.loads(Path(path + ".meta").read_text())
    assert meta["term"] == 7 and meta["votedFor"] == "127.0.0.1:9000"
    # No _destroy(): as after a crash.
    again = DurableJournal(path)
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "127.0.0.1:9000")


def test_commit_index_is_lazy_and_never_beyond_the_journal(path: str) -> None:
    j = DurableJournal(path)
    fill(j, 1, 5)
    j.setRaftCommitIndex(5)
    j.onOneSecondTimer()  # stores it, after syncing the entries it names
    j._destroy()
    again = DurableJournal(path)
    assert again.getRaftCommitIndex() == 5
    again.deleteEntriesFrom(2)  # only entries 1, 2 left
    assert again.getRaftCommitIndex() == 2


def test_unreadable_meta_is_refused(path: str) -> None:
    DurableJournal(path)._destroy()
    Path(path + ".meta").write_text("{not json")
    with pytest.raises(JournalCorrupt, match="term"):
        DurableJournal(path)
