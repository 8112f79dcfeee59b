"""A durable Raft journal for pysyncobj: synced before it counts, checksummed, crash-safe.

pysyncobj 0.3.17's own `FileJournal` writes entries into an mmap and never
calls msync/fsync, and renames its metadata into place without fsync: an
acknowledged write survives SIGKILL but not a power loss. `DurableJournal`
implements the same `pysyncobj.journal.Journal` interface with:

- group commit: `add()` only buffers; `sync()` writes everything buffered and
  calls fdatasync once. The Raft node (`raftnode.py`) calls `sync()` before
  the leader counts its own entries towards commit and before a follower
  acknowledges entries, so one sync covers every entry of a tick;
- records `<len u32><crc32 u32><idx u64><term u64><command>`, the CRC over
  length, index, term and command: on load, the first record that is short,
  fails its CRC, or breaks the log's shape (indexes consecutive, terms never
  decreasing) ends the journal, and the file is cut there. Nothing after the
  last completed `sync()` was ever acknowledged, so a torn tail is safe to drop;
- truncation (`deleteEntriesFrom`, a follower dropping conflicting entries):
  `ftruncate` + fdatasync before any new record may land on the same offsets,
  so a crash leaves the old or the new length, never old and new records
  interleaved (a file-size change is one journaled metadata update);
- compaction (`deleteEntriesTo`, after a snapshot): the kept entries are
  written to a new file, fsynced, renamed over the journal, and the folder is
  fsynced. The folder is fsynced first too: that makes the snapshot's own
  rename (done by pysyncobj just before) durable before any entry it covers
  is dropped;
- the commit index in the header, rewritten (unsynced) at every change: it
  survives a process kill, so a restarted replica applies what it knew
  committed without waiting for a leader;
- term/vote metadata (and the commit index) in `<journal>.meta`: written to a
  temporary file, fsynced, renamed, folder fsynced, before `setCurrentTerm`
  returns, i.e. before pysyncobj sends a vote or a vote request.

Threading: not thread-safe. pysyncobj calls every method from its tick
thread; `stats()` may be read from any thread (plain ints).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from pysyncobj.journal import Journal

log = logging.getLogger(__name__)

MAGIC = b"CORRALJ\x01"
HEADER_SIZE = 16  # MAGIC + the commit index (u64; 0 in journals written before it was kept)
_COMMIT = struct.Struct("<Q")
_REC = struct.Struct("<IIQQ")  # command length, crc32, index, term
_CRC_FIELDS = struct.Struct("<IQQ")
MAX_COMMAND = 1 << 30

Entry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj stores them


class JournalCorrupt(Exception):
    """The journal or its metadata cannot be read as written by this module."""


@dataclass
class JournalStats:
    syncs: int = 0
    synced_bytes: int = 0
    truncations: int = 0
    compactions: int = 0
    dropped_tail_bytes: int = 0


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in `path` durable (POSIX needs the folder synced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically and durably: tmp, fsync, rename, fsync folder."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    crc = zlib.crc32(command, zlib.crc32(_CRC_FIELDS.pack(len(command), idx, term)))
    return _REC.pack(len(command), crc, idx, term) + command


class DurableJournal(Journal):
    """See the module docstring. `path` is the journal file; its folder must exist."""

    def __init__(self, path: str) -> None:
        self._path = os.path.abspath(path)
        self._dir = os.path.dirname(self._path)
        self._meta_path = self._path + ".meta"
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._pending = bytearray()
        self._file_end = HEADER_SIZE  # bytes in the file (written, maybe not synced)
        self._unsynced = False  # written with pwrite but not yet fdatasync'ed
        self._n_synced = 0  # leading entries known to be on stable storage
        self.stats = JournalStats()
        created = not os.path.exists(self._path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if created:
            _write_all(self._fd, MAGIC + bytes(HEADER_SIZE - len(MAGIC)), 0)
            os.fsync(self._fd)
            fsync_dir(self._dir)
        self._load()
        self._n_synced = len(self._entries)
        self._term, self._voted_for, self._commit = self._load_meta()
        self._commit = max(self._commit, self._header_commit)
        self._meta_dirty = False

    # ---- loading ---------------------------------------------------------------------
    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
            raise JournalCorrupt(
                f"{self._path} is not a Corral journal (bad header); move it away to start "
                f"this replica empty, it will catch up from the others"
            )
        self._header_commit = _COMMIT.unpack_from(data, len(MAGIC))[0]
        off = HEADER_SIZE
        prev: Entry | None = None
        reason = ""
        while off < size:
            if size - off < _REC.size:
                reason = "a short record header"
                break
            length, crc, idx, term = _REC.unpack_from(data, off)
            end = off + _REC.size + length
            if length > MAX_COMMAND or end > size:
                reason = "a record longer than the file"
                break
            command = bytes(data[off + _REC.size : end])
            if zlib.crc32(command, zlib.crc32(_CRC_FIELDS.pack(length, idx, term))) != crc:
                reason = "a checksum mismatch"
                break
            if prev is not None and (idx != prev[1] + 1 or term < prev[2]):
                reason = f"entry {idx} (term {term}) out of sequence after {prev[1]}"
                break
            entry = (command, idx, term)
            self._entries.append(entry)
            self._offsets.append(off)
            prev = entry
            off = end
        if off < size:
            dropped = size - off
            log.warning(
                "journal %s: dropped a torn tail of %d bytes at offset %d (%s) after entry %s; "
                "nothing after the last sync was acknowledged",
                self._path, dropped, off, reason, prev[1] if prev else "none",
            )
            self.stats.dropped_tail_bytes = dropped
            os.ftruncate(self._fd, off)
            os.fsync(self._fd)
        self._file_end = off

    def _load_meta(self) -> tuple[int, Any, int]:
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return 0, None, 1
        try:
            meta = json.loads(raw)
            return int(meta["term"]), meta["votedFor"], int(meta["commitIndex"])
        except (ValueError, KeyError, TypeError) as e:
            raise JournalCorrupt(
                f"{self._meta_path} is unreadable ({e}); it holds this replica's Raft term "
                f"and vote, which must not be guessed"
            ) from e

    # ---- pysyncobj's Journal interface -------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        command = command if isinstance(command, bytes) else bytes(command)
        self._offsets.append(self._file_end + len(self._pending))
        self._entries.append((command, idx, term))
        self._pending += encode_record(command, idx, term)

    def clear(self) -> None:
        self._entries.clear()
        self._offsets.clear()
        self._pending.clear()
        self._n_synced = 0
        self._truncate_file(HEADER_SIZE)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom < 0:
            entryFrom = max(0, len(self._entries) + entryFrom)
        if entryFrom >= len(self._entries):
            return
        off = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._n_synced = min(self._n_synced, entryFrom)
        if off >= self._file_end:
            del self._pending[off - self._file_end :]
            return
        self._pending.clear()
        self.stats.truncations += 1
        self._truncate_file(off)

    def deleteEntriesTo(self, entryTo: int) -> None:
        if entryTo <= 0:
            return
        keep = self._entries[entryTo:]
        # The snapshot that covers the dropped entries was renamed into this folder
        # just before; make that rename durable before the entries go.
        fsync_dir(self._dir)
        tmp = self._path + ".compact"
        buf = bytearray(MAGIC + _COMMIT.pack(self._commit))
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(buf))
            buf += encode_record(command, idx, term)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, buf, 0)
            os.fsync(fd)
            os.rename(tmp, self._path)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self._entries = keep
        self._offsets = offsets
        self._n_synced = len(keep)
        self._pending.clear()
        self._file_end = len(buf)
        self._unsynced = False
        self.stats.compactions += 1

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        self.sync()
        if self._meta_dirty:
            self._store_meta()
        os.close(self._fd)
        self._fd = -1

    def flush(self) -> None:
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if raftCommitIndex != self._commit:
            self._commit = raftCommitIndex
            self._meta_dirty = True
            # Into the header at once, unsynced: it survives a process kill, so a
            # replica restarted after one (even all of them at once) applies every
            # write it knew committed before it hears from a leader. A power loss may
            # lose it (the metadata's copy, synced once a second, lags at most that
            # much); either way it is only a hint that entries up to it are committed,
            # true when written, and never read beyond the entries actually loaded.
            os.pwrite(self._fd, _COMMIT.pack(raftCommitIndex), len(MAGIC))

    def getRaftCommitIndex(self) -> int:
        # Never claim entries this journal does not hold (e.g. a dropped torn tail).
        last = self._entries[-1][1] if self._entries else 1
        return max(1, min(self._commit, last))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._term = term
        self._voted_for = votedForNodeId
        # Raft: term and vote are durable before any message that reflects them.
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> Any:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        # The commit index is an optimisation (a restarted replica applies up to it
        # before it hears from a leader); losing the latest value is harmless.
        if self._meta_dirty:
            self._store_meta()

    # ---- durability ------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._pending) or self._unsynced

    @property
    def last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    @property
    def synced_index(self) -> int:
        """The index of the last entry on stable storage (0: none)."""
        return self._entries[self._n_synced - 1][1] if self._n_synced else 0

    def sync(self) -> bool:
        """Write what is buffered and fdatasync once (group commit). True if it synced."""
        if not self._pending and not self._unsynced:
            return False
        n_entries = len(self._entries)
        if self._pending:
            n = len(self._pending)
            _write_all(self._fd, self._pending, self._file_end)
            self._file_end += n
            self.stats.synced_bytes += n
            self._pending.clear()
        os.fdatasync(self._fd)
        self._unsynced = False
        self._n_synced = n_entries
        self.stats.syncs += 1
        return True

    def _truncate_file(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fdatasync(self._fd)
        self._file_end = size
        self._unsynced = False

    def _store_meta(self) -> None:
        # The commit index must never name entries that are not on disk yet.
        self.sync()
        meta = {"term": self._term, "votedFor": self._voted_for, "commitIndex": self._commit}
        write_file_durably(self._meta_path, json.dumps(meta).encode())
        self._meta_dirty = False

    def file_size(self) -> int:
        return self._file_end + len(self._pending)
