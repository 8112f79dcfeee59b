"""MemoryStore: the store in one process, for unit tests of the layers above.

The same state machine (`state.StoreState`) and watch hub (`watch.WatchHub`)
as the replicated store, behind one lock, with no Raft: every write applies at
once, this process is always the leader, reads are trivially linearizable.

Threading: thread-safe. One `threading.RLock` serializes every state access;
writes notify the hub while holding it. Results are immutable (Records and
tuples), and list copies are made after the lock is released.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable

from controlplane.store import base
from controlplane.store.base import ANY, Change, Key, LocalStatus, MemberInfo, Record
from controlplane.store.state import (
    DEFAULT_DEDUP_ENTRIES,
    DEFAULT_HISTORY_EVENTS,
    StoreState,
)
from controlplane.store.watch import HubWatch, WatchHub
from corral.errors import Unavailable


class MemoryStore(base.Store):
    def __init__(
        self,
        *,
        name: str = "memory",
        max_history: int = DEFAULT_HISTORY_EVENTS,
        max_dedup: int = DEFAULT_DEDUP_ENTRIES,
    ) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._state = StoreState(max_history=max_history, max_dedup=max_dedup)
        self._hub = WatchHub(self._state, self._lock)
        self._closed = False

    # ---- reads ---------------------------------------------------------------------
    def get(self, key: Key, *, linearizable: bool = True) -> Record | None:
        with self._lock:
            self._check_open()
            return self._state.get(key)

    def list(
        self, kind: str, namespace: str | None = None, *, linearizable: bool = True
    ) -> tuple[builtins.list[Record], int]:
        with self._lock:
            self._check_open()
            records = self._state.list(kind, namespace)
            rev = self._state.revision
        return list(records), rev

    @property
    def revision(self) -> int:
        with self._lock:
            return self._state.revision

    def sync(self, timeout: float = 10.0) -> int:
        self._check_open()
        return self.revision  # one copy: everything acknowledged is applied here

    # ---- writes ----------------------------------------------------------------------
    def put(
        self,
        change: Change,
        *,
        expect: int | None = ANY,
        require_namespace: str = "",
        request_id: str = "",
        timeout: float = 10.0,
    ) -> Record:
        with self._lock:
            self._check_open()
            before = self._state.revision
            try:
                return self._state.put(change, expect, require_namespace, request_id)
            finally:
                self._notify_since(before)

    def delete(
        self, key: Key, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> Record:
        with self._lock:
            self._check_open()
            before = self._state.revision
            try:
                return self._state.delete(key, expect, request_id)
            finally:
                self._notify_since(before)

    def delete_namespace(
        self, name: str, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> builtins.list[Record]:
        with self._lock:
            self._check_open()
            before = self._state.revision
            try:
                return self._state.delete_namespace(name, expect, request_id)
            finally:
                self._notify_since(before)

    # ---- change feed -------------------------------------------------------------------
    def watch(self, from_revision: int, kind: str | None = None) -> HubWatch:
        return self._hub.watch(from_revision, kind)

    # ---- cluster -----------------------------------------------------------------------
    def is_leader(self) -> bool:
        return not self._closed

    def on_leadership_change(self, callback: Callable[[bool], None]) -> None:
        callback(not self._closed)

    def local_status(self) -> LocalStatus:
        with self._lock:
            rev = self._state.revision
            return LocalStatus(
                name=self.name,
                raft_address="",
                state="leader",
                leader="",
                term=1,
                commit_index=rev,
                applied_index=rev,
                revision=rev,
                has_quorum=True,
                log_entries=0,
            )

    def members(self) -> builtins.list[MemberInfo]:
        with self._lock:
            return self._state.members()

    def register_member(self, member: MemberInfo, timeout: float = 10.0) -> None:
        with self._lock:
            self._check_open()
            self._state.set_member(member)

    def digest(self) -> tuple[int, str]:
        with self._lock:
            return self._state.digest()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._hub.close()

    # ---- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the store is closed")

    def _notify_since(self, before: int) -> None:
        if self._state.revision == before:
            return
        events, _ = self._state.events_after(before, None, limit=1 << 30)
        self._hub.notify(ev.record.kind for ev in events)
