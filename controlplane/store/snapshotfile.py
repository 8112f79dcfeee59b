"""Snapshot files: the store's state as a stream of checksummed frames, synced to disk.

Layout: `CORRALS\\x02`, then frames of `<length u64><crc32 u32><pickle>`; the
first frame is ("meta", {...}), the last ("end", number of frames before it).
A file that is short, fails a checksum or lacks its end frame is refused with
`SnapshotCorrupt` rather than half-loaded.

Why frames: a snapshot of a large store is written by a background thread
(raftnode.py) while the Raft tick thread keeps running. One `pickle.dumps` of
the whole state holds the GIL for its whole duration (hundreds of ms for
tens of thousands of objects, longer than an election timeout); frames of a
few thousand items each let the tick thread in between.

What the frames hold (`encode`/`decode`): records as plain tuples (a frozen
dataclass pickles through Python-level code, ~4x slower); history events and
remembered write results refer to a record by its position when they hold
the very record that is current, so a record's bytes are stored once.

Writers fsync before the rename that publishes the file; `make_durable`
fsyncs a file someone else wrote (pysyncobj writes a snapshot received from
the leader without fsync) and its folder.

Threading: plain functions, no shared state; `encode` only reads the captured
snapshot, whose objects are immutable.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from controlplane.store.base import Event, MemberInfo, Record
from controlplane.store.journal import fsync_dir

MAGIC = b"CORRALS\x02"
_FRAME = struct.Struct("<QI")
CHUNK = 2000
FORMAT = 2


class SnapshotCorrupt(Exception):
    """A snapshot file that is not complete or not ours."""


# ---- frames on disk ---------------------------------------------------------------------
def write(path: str, frames: Iterable[Any]) -> int:
    """Write `frames` (picklable objects) to `path`, fsync it. Returns the size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0

    def put(data: bytes) -> None:
        nonlocal size
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            size += n
            view = view[n:]

    try:
        put(MAGIC)
        for frame in _with_end(frames):
            body = pickle.dumps(frame, protocol=5)
            put(_FRAME.pack(len(body), zlib.crc32(body)))
            put(body)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _with_end(frames: Iterable[Any]) -> Iterator[Any]:
    n = 0
    for frame in frames:
        n += 1
        yield frame
    yield ("end", n)


def read(path: str) -> list[Any]:
    """Every frame of a snapshot file; raises SnapshotCorrupt if it is damaged."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[: len(MAGIC)] != MAGIC:
        raise SnapshotCorrupt(f"{path}: not a Corral snapshot (bad magic {raw[:8]!r})")
    off = len(MAGIC)
    frames: list[Any] = []
    view = memoryview(raw)
    while off < len(raw):
        if len(raw) - off < _FRAME.size:
            raise SnapshotCorrupt(f"{path}: cut inside a frame header at offset {off}")
        length, crc = _FRAME.unpack_from(raw, off)
        body = view[off + _FRAME.size : off + _FRAME.size + length]
        if len(body) != length:
            raise SnapshotCorrupt(f"{path}: cut inside frame {len(frames)}")
        if zlib.crc32(body) != crc:
            raise SnapshotCorrupt(f"{path}: checksum mismatch in frame {len(frames)}")
        frame = pickle.loads(body)
        off += _FRAME.size + length
        if isinstance(frame, tuple) and frame and frame[0] == "end":
            if frame[1] != len(frames) or off != len(raw):
                raise SnapshotCorrupt(f"{path}: end frame does not match the frames read")
            return frames
        frames.append(frame)
    raise SnapshotCorrupt(f"{path}: no end frame (the file is incomplete)")


def make_durable(path: str) -> None:
    """fsync a file written without it, and the folder that holds its name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


# ---- the store's state as frames ----------------------------------------------------------
def _rec(r: Record) -> tuple[Any, ...]:
    return (r.kind, r.namespace, r.name, r.data, r.revision, r.create_revision,
            r.labels, r.fields, r.unique)


def _unrec(t: tuple[Any, ...]) -> Record:
    return Record(*t)


def encode(state: dict[str, Any], raft: Any) -> Iterator[Any]:
    """Frames for a captured `StoreState.snapshot()` and pysyncobj's raft data."""
    records: list[Record] = state["records"]
    position = {id(r): i for i, r in enumerate(records)}

    def ref(r: Record | None) -> Any:
        if r is None:
            return None
        i = position.get(id(r))
        return ("r", i) if i is not None else _rec(r)

    def outcome(value: tuple[str, Any]) -> tuple[str, Any]:
        status, result = value
        if status != "ok":
            return value
        if isinstance(result, Record):
            return ("ok", ("rec", ref(result)))
        if isinstance(result, tuple) and all(isinstance(x, Record) for x in result):
            return ("ok", ("recs", [ref(x) for x in result]))
        return value

    yield ("meta", {
        "format": FORMAT,
        "raft": raft,
        "revision": state["revision"],
        "history_start": state["history_start"],
        "members": [(m.name, m.raft_address, m.api_address, m.socket) for m in state["members"]],
        "version": state["version"],
    })
    for i in range(0, len(records), CHUNK):
        yield ("records", [_rec(r) for r in records[i : i + CHUNK]])
    history: list[Event] = state["history"]
    for i in range(0, len(history), CHUNK):
        yield ("history", [(e.type, ref(e.record), ref(e.prev), e.revision)
                           for e in history[i : i + CHUNK]])
    dedup: list[tuple[str, Any]] = state["dedup"]
    for i in range(0, len(dedup), CHUNK):
        yield ("dedup", [(rid, outcome(v)) for rid, v in dedup[i : i + CHUNK]])


def decode(frames: list[Any]) -> tuple[Any, dict[str, Any]]:
    """(raft data, a dict for `StoreState.restore`) from the frames of `read`."""
    if not frames or frames[0][0] != "meta" or frames[0][1].get("format") != FORMAT:
        raise SnapshotCorrupt("the snapshot does not start with a meta frame of format 2")
    meta = frames[0][1]
    records: list[Record] = []
    history: list[Event] = []
    dedup: list[tuple[str, Any]] = []

    def deref(x: Any) -> Record | None:
        if x is None:
            return None
        if x[0] == "r" and len(x) == 2:
            return records[x[1]]
        return _unrec(x)

    def outcome(value: tuple[str, Any]) -> tuple[str, Any]:
        status, result = value
        if status == "ok" and isinstance(result, tuple) and result and result[0] == "rec":
            return ("ok", deref(result[1]))
        if status == "ok" and isinstance(result, tuple) and result and result[0] == "recs":
            return ("ok", tuple(deref(x) for x in result[1]))
        return value

    for tag, items in frames[1:]:
        if tag == "records":
            records.extend(_unrec(t) for t in items)
        elif tag == "history":
            for etype, rec, prev, rev in items:
                record = deref(rec)
                assert record is not None
                history.append(Event(etype, record, deref(prev), rev))
        elif tag == "dedup":
            dedup.extend((rid, outcome(v)) for rid, v in items)
        else:
            raise SnapshotCorrupt(f"unknown snapshot frame {tag!r}")
    state = {
        "version": meta["version"],
        "revision": meta["revision"],
        "records": records,
        "history_start": meta["history_start"],
        "history": history,
        "dedup": dedup,
        "members": [MemberInfo(*m) for m in meta["members"]],
    }
    return meta["raft"], state
