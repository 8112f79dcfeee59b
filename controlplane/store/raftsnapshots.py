"""RaftNode's snapshots: written in the background, sent and received safely.

pysyncobj's own serializer pickles the whole state on the tick thread (or in
a forked child, which gRPC servers must not do), renames files without fsync
and leaks a file per follower it sends a snapshot to. `SnapshotMixin`
replaces the Serializer's methods (raftnode.py wires them in):

- `serialize` -> `_start_snapshot`: capture the state on the tick thread
  (references to immutable objects), then encode, write, fsync and rename in a
  background thread (snapshotfile.py), so heartbeats go on; pysyncobj learns
  the outcome through `serializeChecker` (`_snapshot_state`) and only then
  drops the journal entries the snapshot covers;
- `getTransmissionData` / `cancelTransmisstion` -> `_snapshot_chunk` /
  `_cancel_snapshot_send`: one open file per follower, always closed;
- the deserializer `_read_snapshot`: the snapshot loaded at start (before any
  tick), or one received from the leader, fsynced with its folder before the
  journal it replaces is cleared; it wins over a background write in flight.

Threading: the mixin's methods run on the tick thread, except
`_write_snapshot` (the background thread), which shares only `_snap_lock`-
guarded state and immutable captured data with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from controlplane.store import snapshotfile
from controlplane.store.journal import fsync_dir

log = logging.getLogger("corral.raft")


class SnapshotMixin:
    """Mixed into RaftNode, which sets the attributes used here in its __init__."""

    address: str
    _snapshot_path: str
    _snapshot_index: int
    _snap_lock: threading.Lock
    _snap_generation: int
    _snap_thread: threading.Thread | None
    _snap_result: int | None
    _sending: dict[Any, list[Any]]
    _preloaded: tuple[tuple[int, int, int], Any] | None
    _capture_state: Any
    _restore_state: Any
    _SyncObj__serializer: Any  # pysyncobj's, set by SyncObj.__init__
    conf: Any

    @staticmethod
    def _never_called(path: str, data: Any) -> None:
        raise AssertionError("RaftNode replaces Serializer.serialize")

    def _start_snapshot(self, data: Any, serialize_id: int) -> None:
        """Serializer.serialize, on the tick thread: capture, then write in the background."""
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return
        self._SyncObj__serializer._Serializer__currentID = serialize_id
        raft_data = data[1:]  # (last applied entry, the one before, cluster nodes)
        captured = self._capture_state()
        with self._snap_lock:
            generation = self._snap_generation
        self._snap_result = None
        self._snap_thread = threading.Thread(
            target=self._write_snapshot, args=(captured, raft_data, generation),
            name=f"snapshot-{self.address}", daemon=True,
        )
        self._snap_thread.start()

    def _write_snapshot(self, captured: Any, raft_data: Any, generation: int) -> None:
        started = time.monotonic()
        tmp = self._snapshot_path + ".writing"
        try:
            size = snapshotfile.write(tmp, snapshotfile.encode(captured, raft_data))
            with self._snap_lock:
                if generation != self._snap_generation:
                    os.unlink(tmp)  # a snapshot from the leader was installed meanwhile
                    self._snap_result = SERIALIZER_STATE.FAILED
                    return
                os.rename(tmp, self._snapshot_path)
                fsync_dir(os.path.dirname(self._snapshot_path))
            self._snapshot_index = raft_data[0][1]
            log.info(
                "raft %s: snapshot taken at index %d (%d bytes, %.0f ms in the background); "
                "the journal keeps the entries after it",
                self.address, raft_data[0][1], size, (time.monotonic() - started) * 1000,
            )
            self._snap_result = SERIALIZER_STATE.SUCCESS
        except Exception:
            log.exception("raft %s: writing a snapshot failed", self.address)
            self._snap_result = SERIALIZER_STATE.FAILED

    def _snapshot_state(self) -> int:
        """serializeChecker, on the tick thread."""
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING
        result = self._snap_result
        if result is None:
            return SERIALIZER_STATE.NOT_SERIALIZING
        self._snap_result = None
        if result == SERIALIZER_STATE.SUCCESS:
            # Followers being sent the previous snapshot start over with this one.
            self._close_snapshot_sends()
        return result

    def _snapshot_chunk(self, transmission_id: Any) -> Any:
        """The next chunk of the snapshot for one follower: (data, is_first, is_last),
        None when there is nothing to send now, False on a read error."""
        sending = self._sending.get(transmission_id)
        if sending is None:
            try:
                # Closed by _cancel_snapshot_send: it outlives this call.
                f = open(self._snapshot_path, "rb")  # noqa: SIM115
                sending = self._sending[transmission_id] = [f, 0]
            except OSError as e:
                log.error("raft %s: cannot open the snapshot to send it: %s", self.address, e)
                return None
        f, sent = sending
        try:
            data = f.read(self.conf.logCompactionBatchSize)
        except OSError as e:
            log.error("raft %s: reading the snapshot to send failed: %s", self.address, e)
            self._cancel_snapshot_send(transmission_id)
            return False
        sending[1] += len(data)
        if not data:
            self._cancel_snapshot_send(transmission_id)
            log.info("raft %s: sent a snapshot of %d bytes to %s", self.address, sent,
                     transmission_id)
        return data, sent == 0, not data

    def _cancel_snapshot_send(self, transmission_id: Any) -> None:
        sending = self._sending.pop(transmission_id, None)
        if sending is not None:
            sending[0].close()

    def _close_snapshot_sends(self) -> None:
        for key in list(self._sending):
            self._cancel_snapshot_send(key)

    def _read_snapshot(self, path: str) -> Any:
        """pysyncobj's deserializer: at the first tick (the snapshot preloaded in
        __init__) and when a snapshot from the leader has been received."""
        if self._preloaded is not None:
            key, raft_data = self._preloaded
            self._preloaded = None
            st = os.stat(path)
            if key == (st.st_ino, st.st_size, st.st_mtime_ns):
                self._snapshot_index = raft_data[0][1]
                return raft_data
        with self._snap_lock:
            self._snap_generation += 1  # a background write in flight must not win
        # pysyncobj wrote the received snapshot without fsync: make it durable
        # before the journal it replaces is cleared.
        snapshotfile.make_durable(path)
        raft_data, state = snapshotfile.decode(snapshotfile.read(path))
        self._restore_state(state)
        self._snapshot_index = raft_data[0][1]
        log.info("raft %s: state loaded from the snapshot at index %d",
                 self.address, self._snapshot_index)
        return raft_data
