"""The watch hub: watchers that wait for the state machine's next events.

A watcher is a cursor into `StoreState`'s bounded event history, not a queue:
it reads the events after its cursor under the store's lock, and waits on a
condition of that same lock when there are none. The apply path (MemoryStore's
write, RaftStore's replicated command on the tick thread) calls `notify()`
after each applied write, while still holding the lock. Hence:

- order: events come out in revision order, exactly as applied; a revision
  (e.g. a namespace cascade) is never split across two `next()` calls;
- resume: a watch starts from any revision still in the history;
- expiry: a watcher whose cursor falls behind the history (it asked for an old
  revision, or read too slowly while writes rolled the history over) gets
  `corral.errors.Expired` and must list again; nothing is silently skipped;
- memory: independent of the number of watchers (no per-watcher queues).

Wakeups are per kind: a watcher of Pods is not woken by Node writes (it skips
over them on its next scan or timeout), so many idle watchers cost nothing per
write.

Threading: any number of threads may block in `Watch.next()`; `notify()` and
`close()` are called with the lock held (`HubWatch.close()` takes it itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from controlplane.store.base import Event, Watch
from controlplane.store.state import StoreState
from corral.errors import Invalid, Unavailable

MAX_EVENTS_PER_NEXT = 1000


class WatchHub:
    """Waiters on one store's history. Construct with the lock that guards the state."""

    def __init__(self, state: StoreState, lock: threading.RLock | threading.Lock) -> None:
        self._state = state
        self._lock = lock
        # kind -> condition; None for watchers of every kind. All share the lock.
        self._conds: dict[str | None, threading.Condition] = {}
        self._closed = False
        self._close_reason = "the store is closed"

    @property
    def closed(self) -> bool:
        return self._closed

    def watch(self, from_revision: int, kind: str | None = None) -> HubWatch:
        """A watch of events after `from_revision`. Raises Expired when that is
        older than the history kept, Unavailable once closed."""
        if isinstance(from_revision, bool) or not isinstance(from_revision, int):
            raise Invalid(f"must be an integer, got {from_revision!r}", "from_revision")
        if from_revision < 0:
            raise Invalid(f"must not be negative, got {from_revision}", "from_revision")
        with self._lock:
            if self._closed:
                raise Unavailable(self._close_reason)
            # Raises Expired now rather than on the first next().
            self._state.check_history(from_revision)
            return HubWatch(self, from_revision, kind)

    def notify(self, kinds: Iterable[str]) -> None:
        """Wake the watchers of these kinds and of all kinds. Lock held."""
        cond = self._conds.get(None)
        if cond is not None:
            cond.notify_all()
        for kind in set(kinds):
            cond = self._conds.get(kind)
            if cond is not None:
                cond.notify_all()

    def notify_all(self) -> None:
        for cond in self._conds.values():
            cond.notify_all()

    def close(self, reason: str = "the store is closed") -> None:
        """End every watch: their next() raises Unavailable. Lock held or not."""
        with self._lock:
            self._closed = True
            self._close_reason = reason
            self.notify_all()

    def _cond(self, kind: str | None) -> threading.Condition:
        cond = self._conds.get(kind)
        if cond is None:
            cond = self._conds[kind] = threading.Condition(self._lock)
        return cond


class HubWatch(Watch):
    def __init__(self, hub: WatchHub, from_revision: int, kind: str | None) -> None:
        self._hub = hub
        self._kind = kind
        self._cursor = from_revision
        self._closed = False

    @property
    def revision(self) -> int:
        return self._cursor

    @property
    def kind(self) -> str | None:
        return self._kind

    def next(self, timeout: float | None = None) -> list[Event]:
        hub = self._hub
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with hub._lock:
            cond = hub._cond(self._kind)
            while True:
                if self._closed:
                    raise Unavailable("the watch is closed")
                if hub._closed:
                    raise Unavailable(hub._close_reason)
                events, scanned = hub._state.events_after(
                    self._cursor, self._kind, MAX_EVENTS_PER_NEXT
                )
                self._cursor = max(self._cursor, scanned)
                if events:
                    return events
                if deadline is None:
                    cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    cond.wait(left)

    def close(self) -> None:
        with self._hub._lock:
            self._closed = True
            cond = self._hub._conds.get(self._kind)
            if cond is not None:
                cond.notify_all()
