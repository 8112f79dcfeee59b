"""Snapshot files: frames round trip (records stored once), damage detection,
and a background write that loses to a snapshot installed meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pysyncobj import SyncObjConsumer
from pysyncobj.config import SERIALIZER_STATE

from controlplane.store import snapshotfile
from controlplane.store.base import MUST_NOT_EXIST, Change, MemberInfo
from controlplane.store.raftnode import RaftNode
from controlplane.store.snapshotfile import SnapshotCorrupt
from controlplane.store.state import StoreState
from corral.errors import AlreadyExists
from tests.store.conftest import PASSWORD, free_port

RAFT = ((b"\x01", 41, 3), (b"\x01", 40, 3), {"127.0.0.1:1"})


def busy_state(n: int = 5000) -> StoreState:
    s = StoreState(max_history=3000)
    s.put(Change("Namespace", "", "default"))
    s.put(Change("Namespace", "", "gone"))
    for i in range(n):
        s.put(Change("Pod", "default", f"p{i % 1500}", data=os.urandom(64),
                     labels=(("i", str(i)),)), request_id=f"r{i}")
    s.put(Change("ConfigMap", "gone", "c"), request_id="ns-child")
    s.delete_namespace("gone", request_id="del-ns")
    with pytest.raises(AlreadyExists):
        s.put(Change("Namespace", "", "default"), MUST_NOT_EXIST, request_id="failed")
    s.set_member(MemberInfo("cp0", "127.0.0.1:1", "127.0.0.1:2", "/s"))
    return s


def test_round_trip_keeps_everything_and_stores_records_once(tmp_path: Path) -> None:
    s = busy_state()
    path = str(tmp_path / "snap")
    size = snapshotfile.write(path, snapshotfile.encode(s.snapshot(), RAFT))
    raft, snap = snapshotfile.decode(snapshotfile.read(path))
    assert raft == RAFT
    other = StoreState(max_history=3000)
    other.restore(snap)
    assert other.digest() == s.digest()
    assert other.events_after(other.history_start) == s.events_after(s.history_start)
    assert other.members() == s.members()
    assert other.outcome("del-ns") == s.outcome("del-ns")
    assert other.outcome("failed") == s.outcome("failed")
    assert size == os.path.getsize(path)
    # History events that hold a current record refer to it instead of copying it.
    captured = s.snapshot()
    current = {id(r) for r in captured["records"]}
    expected = sum(1 for e in captured["history"] if id(e.record) in current)
    frames = list(snapshotfile.encode(captured, RAFT))
    refs = sum(1 for tag, items in frames[1:] if tag == "history"
               for _, rec, _, _ in items if rec[0] == "r")
    assert refs == expected > 1000


def test_frames_are_small_enough_to_let_other_threads_run(tmp_path: Path) -> None:
    frames = list(snapshotfile.encode(busy_state().snapshot(), RAFT))
    assert len(frames) > 5
    assert all(len(items) <= snapshotfile.CHUNK for tag, items in frames[1:])


@pytest.mark.parametrize("damage", ["cut", "flip", "no-end", "magic"])
def test_damaged_files_are_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "snap"
    snapshotfile.write(str(path), snapshotfile.encode(busy_state(500).snapshot(), RAFT))
    raw = bytearray(path.read_bytes())
    if damage == "cut":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "no-end":
        raw = raw[: raw.rfind(b"\x80\x05") - 12]  # drop the end frame
    else:
        raw[:8] = b"NOTASNAP"
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorrupt):
        snapshotfile.read(str(path))


def test_a_damaged_snapshot_stops_the_start(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    (data / "raft.snapshot").write_bytes(b"CORRALS\x02garbage")
    with pytest.raises(SnapshotCorrupt):
        RaftNode(f"127.0.0.1:{free_port()}", [], data_dir=str(data), password=PASSWORD,
                 consumers=[SyncObjConsumer()], capture_state=lambda: None,
                 restore_state=lambda s: None)


def test_background_write_loses_to_an_installed_snapshot(tmp_path: Path) -> None:
    node = RaftNode(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{free_port()}"],
                    data_dir=str(tmp_path / "n"), password=PASSWORD,
                    consumers=[SyncObjConsumer()], capture_state=lambda: None,
                    restore_state=lambda s: None)
    try:
        captured = busy_state(100).snapshot()
        node._write_snapshot(captured, RAFT, node._snap_generation)
        assert node._snapshot_state() == SERIALIZER_STATE.SUCCESS
        assert snapshotfile.decode(snapshotfile.read(node._snapshot_path))[0] == RAFT
        stale = node._snap_generation
        node._snap_generation += 1  # as _read_snapshot does when the leader's arrives
        before = Path(node._snapshot_path).read_bytes()
        node._write_snapshot(captured, ((b"\x01", 99, 3), (b"\x01", 98, 3), set()), stale)
        assert node._snapshot_state() == SERIALIZER_STATE.FAILED
        assert Path(node._snapshot_path).read_bytes() == before
        assert not os.path.exists(node._snapshot_path + ".writing")
    finally:
        node.stop()
