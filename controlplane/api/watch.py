"""The API's watch: the store's change feed, filtered as Kubernetes' watch cache does.

`translate(event, matches)` is the pure rule: with namespace, label and field
filters, an object that starts matching arrives as ADDED, one that stops
matching as DELETED (its previous state, stamped with the event's revision),
and non-matching changes are dropped.

`WatchStream` drives one watch for one client: the initial state (when no
resourceVersion is given), then the store's events, BOOKMARKs every
`bookmark_interval` seconds when asked, until the client goes away, the server
closes, or the watch falls out of the history (Expired: "too old, list again").

Threading: one WatchStream per gRPC worker thread; it blocks in the store
watch's `next()`. `cancel()` (from the client's termination callback, or the
handler's close() on shutdown) wakes it at once; otherwise it wakes every
`poll` seconds (the bookmark interval at most) to send bookmarks and check
that the client is still there, so idle watchers cost almost nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from controlplane.store.base import Event, Record, Store
from corral.errors import Invalid, Unavailable
from corral.selectors import FieldSelector, Selector


@dataclass(frozen=True)
class Filter:
    namespace: str  # "" = every namespace
    labels: Selector
    fields: FieldSelector

    def matches(self, rec: Record | None) -> bool:
        if rec is None:
            return False
        if self.namespace and rec.namespace != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches(rec.label_map()):
            return False
        return self.fields.empty or self.fields.matches(rec.field_map())


@dataclass(frozen=True)
class ApiEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    record: Record | None  # None for BOOKMARK
    revision: int


def translate(ev: Event, flt: Filter) -> ApiEvent | None:
    """One store event as the filtered watcher must see it (None: not at all)."""
    if ev.type == "DELETED":
        # ev.record is the last state; it matched before if it matches now.
        return ApiEvent("DELETED", ev.record, ev.revision) if flt.matches(ev.record) else None
    now = flt.matches(ev.record)
    before = flt.matches(ev.prev)
    if now and before:
        return ApiEvent("MODIFIED", ev.record, ev.revision)
    if now:
        return ApiEvent("ADDED", ev.record, ev.revision)
    if before and ev.prev is not None:
        return ApiEvent("DELETED", _restamp(ev.prev, ev.revision), ev.revision)
    return None


def _restamp(rec: Record, revision: int) -> Record:
    return Record(rec.kind, rec.namespace, rec.name, rec.data, revision, rec.create_revision,
                  rec.labels, rec.fields, rec.unique)


def parse_revision(text: str) -> int:
    try:
        rev = int(text)
    except ValueError:
        raise Invalid(f"must be a number (a resourceVersion from a List or an object), "
                      f"got {text!r}", "resourceVersion") from None
    if rev < 0:
        raise Invalid(f"must not be negative, got {text!r}", "resourceVersion")
    return rev


class WatchStream:
    def __init__(
        self,
        store: Store,
        kind: str,
        flt: Filter,
        resource_version: str,
        *,
        bookmarks: bool,
        bookmark_interval: float,
        closing: threading.Event,
        linearizable: bool = True,
        poll: float = 5.0,
    ) -> None:
        self._store = store
        self._kind = kind
        self._flt = flt
        self._bookmarks = bookmarks
        self._interval = bookmark_interval
        self._closing = closing
        self._poll = min(poll, bookmark_interval) if bookmarks else poll
        self._initial: list[Record] = []
        # Open the store watch now, so Expired / Invalid surface before streaming.
        if resource_version:
            start = parse_revision(resource_version)
            if start > store.revision:
                # Maybe this replica is behind the one the client read from; a
                # linearizable read tells. Beyond the cluster's revision it is a
                # client bug that would otherwise wait forever in silence.
                _, now = store.list(kind, flt.namespace or None, linearizable=True)
                if start > now:
                    raise Invalid(f"resourceVersion {start} is newer than the store's "
                                  f"revision {now}: it did not come from this cluster",
                                  "resourceVersion")
        else:
            records, start = store.list(kind, flt.namespace or None, linearizable=linearizable)
            self._initial = [r for r in records if flt.matches(r)]
        self._start = start
        self._watch = store.watch(start, kind)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """From any thread (e.g. gRPC's on-termination callback)."""
        self._cancelled.set()
        self._watch.close()

    def events(self, active: Callable[[], bool] = lambda: True) -> Iterator[ApiEvent]:
        """ApiEvents until cancelled, closed or the client is gone. Raises Expired
        when the watch falls behind the history, Unavailable when the store closes."""
        try:
            for rec in self._initial:
                yield ApiEvent("ADDED", rec, rec.revision)
            self._initial = []
            last_bookmark = time.monotonic()
            while not self._stopped(active):
                try:
                    batch = self._watch.next(timeout=self._poll)
                except Unavailable:
                    if self._cancelled.is_set():
                        return  # cancel() closed the store watch to wake us
                    raise
                for ev in batch:
                    out = translate(ev, self._flt)
                    if out is not None:
                        yield out
                if self._bookmarks and time.monotonic() - last_bookmark >= self._interval:
                    last_bookmark = time.monotonic()
                    yield ApiEvent("BOOKMARK", None, max(self._watch.revision, self._start))
        finally:
            self._watch.close()

    def _stopped(self, active: Callable[[], bool]) -> bool:
        return self._cancelled.is_set() or self._closing.is_set() or not active()




__all__ = ["ApiEvent", "Filter", "WatchStream", "parse_revision", "translate"]
