"""RaftStore: the replicated, durable `base.Store` on pysyncobj.

The state machine (`state.StoreState`) lives in a pysyncobj consumer
(`_Machine`) whose `@replicated` commands apply writes on every replica in
log order; `raftnode.RaftNode` is the Raft member (durable journal, fixed
append rule, low-latency batching; see its docstring).

Writes: submitted with a callback and waited on with a deadline. Every write
carries a request id (one is made up when the caller gives none), and the
state machine deduplicates by it, so a write whose outcome is unknown may be
submitted again safely: failures are retried inside the deadline. Results:
the state machine's answer (a Record, or the error it raised, re-raised here);
`Unavailable` when no attempt can have been applied (no leader, queue full,
not leader, discarded); `Timeout` when one may have been (the deadline passed
while an attempt was in flight, or the leader changed under it).

Linearizable reads: ReadIndex (readindex.py). The leader confirms with one
round of heartbeats that it still leads and hands out its commit index; the
reading replica waits until it has applied that index. Reads that arrive in
the same tick share a round. Cost: one network round trip, no log entry, no
fsync. `linearizable=False` reads this replica's state as it is.

Threading: the Raft tick thread applies commands (under `_lock`, an RLock
shared with the watch hub) and fires callbacks; API threads read under the
same lock and wait on events; a small daemon thread delivers leadership
callbacks so a slow callback never stalls Raft.
"""

from __future__ import annotations

import _thread
import builtins
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConsumer, replicated

from controlplane.store import base
from controlplane.store.base import ANY, Change, Key, LocalStatus, MemberInfo, Record
from controlplane.store.raftnode import RaftNode, RaftTuning
from controlplane.store.state import (
    DEFAULT_DEDUP_ENTRIES,
    DEFAULT_HISTORY_EVENTS,
    NAMESPACE_KIND,
    StoreState,
    check_change,
    check_expect,
    check_key,
    decode_error,
    encode_error,
)
from controlplane.store.watch import HubWatch, WatchHub
from corral.errors import CorralError, Internal, Invalid, Timeout, TooLarge, Unavailable

log = logging.getLogger("corral.store")

# Failures after which the command cannot have been applied.
_NOT_APPLIED = {
    FAIL_REASON.QUEUE_FULL: "the leader's command queue is full",
    FAIL_REASON.MISSING_LEADER: "no Raft leader is known",
    FAIL_REASON.NOT_LEADER: "the replica the write was sent to is no longer the leader",
    FAIL_REASON.DISCARDED: "a new leader replaced the write before it committed",
    FAIL_REASON.REQUEST_DENIED: "the leader denied the request",
}
# Failures after which it may have been.
_UNKNOWN = {
    FAIL_REASON.LEADER_CHANGED: "the leader changed while the write was in flight",
    FAIL_REASON.UNKNOWN_OUTCOME: "the write's log position was overtaken by a snapshot",
}


_CLOSED = -1  # a waiter's error when the store closes under it


@dataclass(frozen=True)
class RaftConfig:
    """How to run one replica of the store."""

    name: str
    raft_address: str  # HOST:PORT this member binds and the peers dial
    peers: tuple[str, ...]  # the other members' Raft addresses
    data_dir: str
    password: str
    tuning: RaftTuning = field(default_factory=RaftTuning)
    max_history: int = DEFAULT_HISTORY_EVENTS
    max_dedup: int = DEFAULT_DEDUP_ENTRIES


def _change_to_tuple(c: Change) -> tuple[Any, ...]:
    return (c.kind, c.namespace, c.name, c.data, c.labels, c.fields, c.unique)


class _Machine(SyncObjConsumer):
    """The replicated state machine. Its commands run on the tick thread, in log order."""

    def __init__(self, state: StoreState, lock: threading.RLock, hub: WatchHub) -> None:
        super().__init__()
        self.state = state
        self.lock = lock
        self.hub = hub

    def _apply(self, fn: Callable[[], Any], kind: str = "") -> tuple[str, Any]:
        """`kind`: the only kind a one-revision write of this command can touch
        (watchers of it are woken without scanning the history); "" for commands
        that may touch several (a namespace cascade)."""
        # Never raise out of a replicated command: pysyncobj would retry the
        # entry on every tick. Errors are results.
        with self.lock:
            before = self.state.revision
            try:
                return ("ok", fn())
            except CorralError as e:
                return ("err", encode_error(e))
            except Exception as e:  # a bug: report it, keep the log moving
                log.exception("store: applying a command failed")
                return ("err", ("Internal", f"the store failed to apply a write: {e!r}"))
            finally:
                after = self.state.revision
                if after == before + 1 and kind:
                    self.hub.notify((kind,))
                elif after != before:
                    events, _ = self.state.events_after(before, None, 1 << 30)
                    self.hub.notify(ev.record.kind for ev in events)

    @replicated
    def _cmd_put(
        self, change: tuple[Any, ...], expect: int | None, require_namespace: str, request_id: str
    ) -> tuple[str, Any]:
        return self._apply(
            lambda: self.state.put(Change(*change), expect, require_namespace, request_id),
            change[0],
        )

    @replicated
    def _cmd_delete(self, key: Key, expect: int | None, request_id: str) -> tuple[str, Any]:
        # A Namespace delete through here cascades like delete_namespace: no kind hint.
        hint = key[0] if key[0] != NAMESPACE_KIND else ""
        return self._apply(lambda: self.state.delete(tuple(key), expect, request_id),  # type: ignore[arg-type]
                           hint)

    @replicated
    def _cmd_delete_namespace(
        self, name: str, expect: int | None, request_id: str
    ) -> tuple[str, Any]:
        return self._apply(lambda: tuple(self.state.delete_namespace(name, expect, request_id)))

    @replicated
    def _cmd_member(self, member: tuple[str, str, str, str]) -> tuple[str, Any]:
        return self._apply(lambda: self.state.set_member(MemberInfo(*member)))

    @replicated
    def _cmd_barrier(self) -> None:
        # Unused since reads use ReadIndex, but never remove or rename a replicated
        # method: pysyncobj numbers them by sorted name, and journals on disk hold
        # those numbers.
        return None


class _Waiter:
    """One write's answer, handed from the tick thread to the writer thread.

    Two bare locks instead of a `threading.Event`: the tick thread sets one per
    write, and Event.set (a Condition: lock, notify_all, waiter list) was ~7 % of
    the leader's tick thread under 16 writers; a lock release is one C call.
    `_once` makes the first answer final: close() and the Raft callback may both
    answer, from different threads."""

    __slots__ = ("_answered", "_once", "error", "result")

    def __init__(self) -> None:
        self._answered = _thread.allocate_lock()
        self._answered.acquire()  # released by the answer
        self._once = _thread.allocate_lock()
        self.result: Any = None
        self.error: int | None = None

    def done(self, result: Any, error: int) -> None:
        if not self._once.acquire(False):
            return  # answered already
        self.result = result
        self.error = error
        self._answered.release()

    def wait(self, timeout: float) -> bool:
        """True once answered, False if `timeout` (> 0) seconds passed first."""
        return self._answered.acquire(True, timeout)


class RaftStore(base.Store):
    """See the module docstring."""

    def __init__(self, config: RaftConfig) -> None:
        if not config.name:
            raise Invalid("must not be empty", "name")
        self.config = config
        self._lock = threading.RLock()
        self._state = StoreState(max_history=config.max_history, max_dedup=config.max_dedup)
        self._hub = WatchHub(self._state, self._lock)
        self._machine = _Machine(self._state, self._lock, self._hub)
        self._leader_callbacks: list[Callable[[bool], None]] = []
        self._callback_queue: queue.SimpleQueue[tuple[Callable[[bool], None], bool] | None] = (
            queue.SimpleQueue()
        )
        self._is_leader = False
        self._closed = False
        self._waiters: set[_Waiter] = set()
        self._waiters_lock = threading.Lock()
        n_members = len(set(config.peers) | {config.raft_address})
        if n_members % 2 == 0:
            log.warning(
                "store: %d control plane members is an even number: a majority needs %d, so "
                "this tolerates no more failures than %d members would",
                n_members, n_members // 2 + 1, n_members - 1,
            )
        self._node = RaftNode(
            config.raft_address,
            config.peers,
            data_dir=config.data_dir,
            password=config.password,
            consumers=[self._machine],
            capture_state=self._capture,
            restore_state=self._restore,
            on_state_change=self._on_state_change,
            tuning=config.tuning,
        )
        self._dispatcher = threading.Thread(
            target=self._dispatch_callbacks, name=f"store-leadership-{config.name}", daemon=True
        )
        self._dispatcher.start()
        self._node.start()
        log.info("store %s: Raft member %s, peers %s, data in %s", config.name,
                 config.raft_address, ", ".join(config.peers) or "none", config.data_dir)

    # ---- snapshots (tick thread) -------------------------------------------------------
    def _capture(self) -> Any:
        with self._lock:
            return self._state.snapshot()

    def _restore(self, snap: Any) -> None:
        with self._lock:
            self._state.restore(snap)
            self._hub.notify_all()

    # ---- reads -----------------------------------------------------------------------
    def get(self, key: Key, *, linearizable: bool = True, timeout: float = 10.0) -> Record | None:
        check_key(key)
        if linearizable:
            self._linearize(timeout)
        with self._lock:
            self._check_open()
            return self._state.get(key)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        linearizable: bool = True,
        timeout: float = 10.0,
    ) -> tuple[builtins.list[Record], int]:
        if linearizable:
            self._linearize(timeout)
        with self._lock:
            self._check_open()
            records = self._state.list(kind, namespace)
            rev = self._state.revision
        return builtins.list(records), rev

    @property
    def revision(self) -> int:
        with self._lock:
            return self._state.revision

    def sync(self, timeout: float = 10.0) -> int:
        """Wait until this replica has applied every write acknowledged before the
        call (ReadIndex); returns the revision then."""
        self._linearize(timeout)
        return self.revision

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
        check_change(change)
        check_expect(expect)
        if not isinstance(require_namespace, str):
            raise Invalid("must be a string", "require_namespace")
        args = (_change_to_tuple(change), expect, require_namespace, self._request_id(request_id))
        self._check_size(change)
        result = self._write(self._machine._cmd_put, args, timeout, f"put {change.kind}")
        assert isinstance(result, Record)
        return result

    def delete(
        self, key: Key, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> Record:
        check_key(key)
        check_expect(expect)
        args = (tuple(key), expect, self._request_id(request_id))
        result = self._write(self._machine._cmd_delete, args, timeout, f"delete {key[0]}")
        assert isinstance(result, Record)
        return result

    def delete_namespace(
        self, name: str, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> builtins.list[Record]:
        if not isinstance(name, str) or not name:
            raise Invalid(f"must be a non-empty string, got {name!r}", "name")
        check_expect(expect)
        args = (name, expect, self._request_id(request_id))
        result = self._write(
            self._machine._cmd_delete_namespace, args, timeout, f"delete {NAMESPACE_KIND}"
        )
        return builtins.list(result)

    def _request_id(self, request_id: str) -> str:
        if not isinstance(request_id, str):
            raise Invalid(f"must be a string, got {type(request_id).__name__}", "request_id")
        # Internal retries are safe only with an id: make one up if the caller has none.
        return request_id or f"store-{uuid.uuid4().hex}"

    def _check_size(self, change: Change) -> None:
        limit = self.config.tuning.max_command_bytes
        # An upper bound of the pickled command without pickling it twice: two bytes
        # per byte covers pickle protocol 2 (bytes as latin-1 text), which members
        # of earlier builds still write; protocol 4 (raftwire.py) stores them as is.
        size = 2 * len(change.data) + 1024 + sum(
            len(a) + len(b) for a, b in (*change.labels, *change.fields)
        ) + sum(len(t) for t in change.unique)
        if size > limit:
            where = f"{change.namespace}/{change.name}" if change.namespace else change.name
            raise TooLarge(
                f"{change.kind} {where} is too large for one Raft entry "
                f"({len(change.data)} bytes of object data; the limit is {limit} bytes)"
            )

    def _write(
        self, method: Callable[..., None], args: tuple[Any, ...], timeout: float, what: str
    ) -> Any:
        outcome = self._replicate(method, args, timeout, what)
        status, value = outcome
        if status == "err":
            raise decode_error(value) if value[0] != "Internal" else Internal(value[1])
        return value

    def _replicate(
        self, method: Callable[..., None], args: tuple[Any, ...], timeout: float, what: str
    ) -> Any:
        """Submit a command until it is applied here or the deadline passes."""
        self._check_open()
        deadline = time.monotonic() + timeout
        maybe_applied = False
        reason = "the deadline passed before the write could be sent"
        backoff = 0.005
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                break
            waiter = _Waiter()
            with self._waiters_lock:
                self._waiters.add(waiter)
            try:
                method(*args, callback=waiter.done)
                self._node.submit()
                answered = waiter.wait(left)
            finally:
                with self._waiters_lock:
                    self._waiters.discard(waiter)
            if not answered or waiter.error == _CLOSED:
                maybe_applied = True
                reason = (f"the store of replica {self.config.name} closed with the write "
                          "in flight" if answered else f"no answer within {timeout:g}s")
                break
            if waiter.error == FAIL_REASON.SUCCESS:
                return waiter.result
            if waiter.error in _UNKNOWN:
                maybe_applied = True
                reason = _UNKNOWN[waiter.error]
            else:
                reason = _NOT_APPLIED.get(waiter.error or 0, f"failure {waiter.error}")
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, 0.1)
        status = self._node.status
        if maybe_applied:
            raise Timeout(
                f"{what}: outcome unknown after {timeout:g}s ({reason}); "
                f"retrying with the same request id is safe"
            )
        raise Unavailable(
            f"{what}: not applied: {reason} (replica {self.config.name}, term {status.term}, "
            f"{'has' if status.has_quorum else 'no'} quorum)",
            leader=self._leader_api_address(),
        )

    # ---- linearizable reads ------------------------------------------------------------
    def _linearize(self, timeout: float) -> None:
        """Return once this replica has applied every write acknowledged (by any
        replica) before the call: ReadIndex (see readindex.py), retried inside
        the deadline while there is no leader."""
        self._check_open()
        deadline = time.monotonic() + timeout
        backoff = 0.005
        reason = "no leader confirmed a read index"
        while True:
            self._check_open()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                index = self._node.read_index(left)
            except (Unavailable, Timeout) as e:
                reason = str(e)
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 0.1)
                continue
            if self._node.wait_applied(index, max(0.0, deadline - time.monotonic())):
                return
            reason = f"this replica did not apply up to index {index} in time"
            break
        raise Unavailable(
            f"linearizable read: this replica could not confirm it is up to date "
            f"within {timeout:g}s ({reason}); a stale read is possible with "
            f"linearizable=False",
            leader=self._leader_api_address(),
        )

    # ---- change feed -------------------------------------------------------------------
    def watch(self, from_revision: int, kind: str | None = None) -> HubWatch:
        return self._hub.watch(from_revision, kind)

    # ---- cluster -----------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self._is_leader and not self._closed

    def on_leadership_change(self, callback: Callable[[bool], None]) -> None:
        with self._lock:
            self._leader_callbacks.append(callback)
            self._callback_queue.put((callback, self._is_leader))

    def _on_state_change(self, state: str, term: int) -> None:
        # Tick thread: record and hand over, never call user code here.
        with self._lock:
            leader = state == "leader"
            if leader == self._is_leader:
                return
            self._is_leader = leader
            for cb in self._leader_callbacks:
                self._callback_queue.put((cb, leader))

    def _dispatch_callbacks(self) -> None:
        while True:
            item = self._callback_queue.get()
            if item is None:
                return
            cb, value = item
            try:
                cb(value)
            except Exception:
                log.exception("store %s: a leadership callback failed", self.config.name)

    def local_status(self) -> LocalStatus:
        st = self._node.status
        journal = self._node.journal
        return LocalStatus(
            name=self.config.name,
            raft_address=self.config.raft_address,
            state=st.state,
            leader=st.leader,
            term=st.term,
            commit_index=st.commit_index,
            applied_index=st.applied_index,
            revision=self.revision,
            has_quorum=st.has_quorum,
            log_entries=st.log_entries,
            extra={
                "first_index": st.first_index,
                "connected_peers": st.connected,
                "match_index": dict(st.match_index),
                "journal_syncs": st.journal_syncs,
                "journal_bytes": journal.file_size(),
                "snapshot_index": st.snapshot_index,
                "read_rounds": self._node.read_rounds(),
            },
        )

    def has_quorum(self) -> bool:
        return self._node.status.has_quorum

    def members(self) -> builtins.list[MemberInfo]:
        with self._lock:
            return self._state.members()

    def register_member(self, member: MemberInfo, timeout: float = 10.0) -> None:
        if not isinstance(member, MemberInfo) or not member.name or not member.raft_address:
            raise Invalid("must be a MemberInfo with a name and a raft_address", "member")
        args = ((member.name, member.raft_address, member.api_address, member.socket),)
        self._write(self._machine._cmd_member, args, timeout, "register member")

    def digest(self) -> tuple[int, str]:
        with self._lock:
            return self._state.digest()

    def force_snapshot(self) -> None:
        """Take a snapshot at the next tick (tests, operators)."""
        self._node.force_snapshot()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Writers still waiting would otherwise sit out their whole deadline.
        with self._waiters_lock:
            for waiter in self._waiters:
                waiter.done(None, _CLOSED)
        self._node.stop()
        self._hub.close()
        self._callback_queue.put(None)
        self._dispatcher.join(5)

    # ---- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"the store of replica {self.config.name} is closed")

    def _leader_api_address(self) -> str:
        leader = self._node.status.leader
        if not leader:
            return ""
        for m in self.members():
            if m.raft_address == leader:
                return m.api_address or leader
        return leader

    @property
    def node(self) -> RaftNode:
        return self._node


def leader_of(stores: Iterable[RaftStore]) -> RaftStore | None:
    """The store among `stores` that believes it leads (tests, tools)."""
    for s in stores:
        if s.is_leader():
            return s
    return None
