"""Snapshot files: one pickled payload behind a checksummed header, synced to disk.

Layout: `CORRALS\\x01` (8 bytes), payload length (u64), crc32 of the payload
(u32), then the payload (pickle protocol 5). A file that is short or fails its
checksum is refused with `SnapshotCorrupt` rather than half-loaded.

Writers (`write`) fsync the file before returning, so the rename that follows
(pysyncobj's, or ours) never exposes an unsynced snapshot; `make_durable`
fsyncs a file someone else wrote (pysyncobj writes a snapshot received from
the leader without fsync) and its folder.

Threading: plain functions, no shared state.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from typing import Any

from controlplane.store.journal import fsync_dir

MAGIC = b"CORRALS\x01"
_HEADER = struct.Struct("<8sQI")


class SnapshotCorrupt(Exception):
    """A snapshot file that is not complete or not ours."""


def write(path: str, payload: Any) -> int:
    """Pickle `payload` into `path` and fsync it. Returns the file size."""
    body = pickle.dumps(payload, protocol=5)
    header = _HEADER.pack(MAGIC, len(body), zlib.crc32(body))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (header, body):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return _HEADER.size + len(body)


def read(path: str) -> Any:
    """The payload of a snapshot file; raises SnapshotCorrupt if it is damaged."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < _HEADER.size:
        raise SnapshotCorrupt(f"{path}: {len(raw)} bytes, shorter than a snapshot header")
    magic, length, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise SnapshotCorrupt(f"{path}: not a Corral snapshot (bad magic {magic!r})")
    body = memoryview(raw)[_HEADER.size :]
    if len(body) != length:
        raise SnapshotCorrupt(f"{path}: payload is {len(body)} bytes, the header says {length}")
    if zlib.crc32(body) != crc:
        raise SnapshotCorrupt(f"{path}: checksum mismatch")
    return pickle.loads(body)


def make_durable(path: str) -> None:
    """fsync a file written without it, and the folder that holds its name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
