"""The store's state machine: records, indexes, revisions, history, dedup.

`StoreState` is the pure, deterministic core behind every `base.Store`: given
the same sequence of writes it reaches the same state on every replica. It
never reads the clock, draws random numbers or iterates an unordered
collection where order would leak into the result, so it can run as a Raft
state machine (`raft.py` calls it from pysyncobj's replicated methods) as well
as in one process (`memory.py`).

What it keeps:
- records by key, plus a per-kind, per-namespace index and cached sorted lists;
- the revision: +1 per successful put/delete/delete_namespace (a failed write
  changes nothing at all, not even the revision);
- unique tokens (token -> holder key), enforced on put;
- the request-id dedup table: bounded and insertion-ordered, kept in the state
  so it survives snapshots; a repeated id returns the first result or raises
  the first error again;
- the bounded event history that watches read (default 10,000 events; whole
  revisions are dropped, so a watcher never sees half of a namespace cascade);
- the member registry of the control plane (not a revision: members are Raft
  bookkeeping, not objects).

Threading: none. `StoreState` is not thread-safe; its owner serializes every
call under one lock (MemoryStore's lock, RaftStore's apply lock). Everything it
hands out (Records, Events, tuples of them) is immutable, so callers may use
results after releasing the lock.
"""

from __future__ import annotations

import bisect
import builtins
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

from controlplane.store.base import (
    ANY,
    MUST_EXIST,
    MUST_NOT_EXIST,
    Change,
    Event,
    Key,
    MemberInfo,
    Record,
    UniqueViolation,
)
from corral.errors import (
    AlreadyExists,
    Conflict,
    CorralError,
    Expired,
    FailedPrecondition,
    Invalid,
    NotFound,
)

DEFAULT_HISTORY_EVENTS: Final = 10_000
DEFAULT_DEDUP_ENTRIES: Final = 50_000
SNAPSHOT_VERSION: Final = 1
NAMESPACE_KIND: Final = "Namespace"

# What a write returns: a Record (put, delete) or a tuple of them (delete_namespace).
Result = Record | tuple[Record, ...]
# A recorded outcome: ("ok", result) or ("err", encoded error).
Outcome = tuple[str, Any]


def describe_key(key: Key) -> str:
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


# ---- errors in a form that survives pickling (snapshots, Raft results) -----------
_ERROR_CLASSES: dict[str, type[CorralError]] = {
    cls.__name__: cls
    for cls in (AlreadyExists, NotFound, Conflict, Invalid, FailedPrecondition, Expired)
}


def encode_error(err: CorralError) -> tuple[Any, ...]:
    """A plain tuple for an error raised by the state machine (pickle-safe:
    exception classes with extra constructor arguments do not unpickle)."""
    if isinstance(err, UniqueViolation):
        return ("UniqueViolation", err.token, tuple(err.holder))
    return (type(err).__name__, err.message)


def decode_error(enc: tuple[Any, ...]) -> CorralError:
    name = enc[0]
    if name == "UniqueViolation":
        kind, ns, nm = enc[2]
        return UniqueViolation(enc[1], (kind, ns, nm))
    cls = _ERROR_CLASSES.get(name, CorralError)
    return cls(enc[1])


def check_expect(expect: object, where: str = "expect") -> int | None:
    """Validate an `expect` argument; bad ones are refused before anything is written."""
    if expect is None:
        return None
    if isinstance(expect, bool) or not isinstance(expect, int) or expect < MUST_EXIST:
        raise Invalid(
            f"must be None (any), 0 (must not exist), -1 (must exist) or a revision > 0, "
            f"got {expect!r}",
            where,
        )
    return expect


def check_change(change: object) -> Change:
    if not isinstance(change, Change):
        raise Invalid(f"must be a store Change, got {type(change).__name__}", "change")
    for field in ("kind", "name"):
        value = getattr(change, field)
        if not isinstance(value, str) or not value:
            raise Invalid(f"must be a non-empty string, got {value!r}", f"change.{field}")
    if not isinstance(change.namespace, str):
        raise Invalid(f"must be a string, got {change.namespace!r}", "change.namespace")
    if not isinstance(change.data, bytes):
        raise Invalid(f"must be bytes, got {type(change.data).__name__}", "change.data")
    # Plain loops: this runs for every write on every replica (at apply too).
    for field, pairs in (("labels", change.labels), ("fields", change.fields)):
        if type(pairs) is not tuple:
            raise Invalid("must be a tuple of (str, str) pairs", f"change.{field}")
        for p in pairs:
            if type(p) is not tuple or len(p) != 2 or type(p[0]) is not str \
                    or type(p[1]) is not str:
                raise Invalid("must be a tuple of (str, str) pairs", f"change.{field}")
    unique = change.unique
    if type(unique) is not tuple:
        raise Invalid("must be a tuple of non-empty strings", "change.unique")
    for t in unique:
        if type(t) is not str or not t:
            raise Invalid("must be a tuple of non-empty strings", "change.unique")
    return change


def check_key(key: object) -> Key:
    if (
        not isinstance(key, tuple)
        or len(key) != 3
        or not all(isinstance(p, str) for p in key)
        or not key[0]
        or not key[2]
    ):
        raise Invalid(f"must be a (kind, namespace, name) tuple of strings, got {key!r}", "key")
    return key  # type: ignore[return-value]


class StoreState:
    """The deterministic state machine. See the module docstring."""

    def __init__(
        self,
        *,
        max_history: int = DEFAULT_HISTORY_EVENTS,
        max_dedup: int = DEFAULT_DEDUP_ENTRIES,
    ) -> None:
        if max_history < 1:
            raise Invalid(f"must be at least 1, got {max_history}", "max_history")
        if max_dedup < 1:
            raise Invalid(f"must be at least 1, got {max_dedup}", "max_dedup")
        self.max_history = max_history
        self.max_dedup = max_dedup
        self._reset()

    def _reset(self) -> None:
        self.revision = 0
        self._records: dict[Key, Record] = {}
        # kind -> namespace -> name -> Record
        self._index: dict[str, dict[str, dict[str, Record]]] = {}
        # (kind, namespace or None for all) -> records sorted by (namespace, name)
        self._list_cache: dict[tuple[str, str | None], tuple[Record, ...]] = {}
        self._unique: dict[str, Key] = {}
        self._dedup: OrderedDict[str, Outcome] = OrderedDict()
        self._history: builtins.list[Event] = []
        # Every event with revision > history_start is in _history.
        self.history_start = 0
        self._members: dict[str, MemberInfo] = {}

    # ---- reads -------------------------------------------------------------------
    def get(self, key: Key) -> Record | None:
        return self._records.get(key)

    def list(self, kind: str, namespace: str | None = None) -> tuple[Record, ...]:
        """Records of a kind, sorted by (namespace, name); an immutable tuple."""
        ck = (kind, namespace)
        cached = self._list_cache.get(ck)
        if cached is not None:
            return cached
        by_ns = self._index.get(kind, {})
        if namespace is None:
            out = tuple(
                by_ns[ns][name] for ns in sorted(by_ns) for name in sorted(by_ns[ns])
            )
        else:
            names = by_ns.get(namespace, {})
            out = tuple(names[name] for name in sorted(names))
        self._list_cache[ck] = out
        return out

    def __len__(self) -> int:
        return len(self._records)

    def kinds(self) -> builtins.list[str]:
        """Kinds that have at least one record, sorted."""
        return sorted(k for k, by_ns in self._index.items() if by_ns)

    def unique_holder(self, token: str) -> Key | None:
        return self._unique.get(token)

    def members(self) -> builtins.list[MemberInfo]:
        return [self._members[n] for n in sorted(self._members)]

    def dedup_size(self) -> int:
        return len(self._dedup)

    def history_size(self) -> int:
        return len(self._history)

    # ---- writes --------------------------------------------------------------------
    def put(
        self,
        change: Change,
        expect: int | None = ANY,
        require_namespace: str = "",
        request_id: str = "",
    ) -> Record:
        """Create or replace; see base.Store.put. Raises on failure (and records it)."""
        result = self._dedup_run(
            request_id, lambda: self._put(change, expect, require_namespace)
        )
        assert isinstance(result, Record)
        return result

    def delete(self, key: Key, expect: int | None = ANY, request_id: str = "") -> Record:
        """Remove a key; deleting a Namespace deletes what it holds (one revision)."""
        result = self._dedup_run(request_id, lambda: self._delete(key, expect))
        assert isinstance(result, Record)
        return result

    def delete_namespace(
        self, name: str, expect: int | None = ANY, request_id: str = ""
    ) -> builtins.list[Record]:
        """Remove Namespace `name` and everything in it as one revision. Returns the
        contents sorted by (kind, name), then the Namespace itself."""
        result = self._dedup_run(
            request_id, lambda: self._delete_namespace_checked(name, expect)
        )
        assert isinstance(result, tuple)
        return list(result)

    def set_member(self, member: MemberInfo) -> None:
        """Register or update a control plane member (no revision)."""
        if not isinstance(member, MemberInfo) or not member.name:
            raise Invalid("must be a MemberInfo with a name", "member")
        self._members[member.name] = member

    def remove_member(self, name: str) -> None:
        self._members.pop(name, None)

    def outcome(self, request_id: str) -> Outcome | None:
        """The recorded outcome of a request id, if it is still remembered."""
        return self._dedup.get(request_id) if request_id else None

    # ---- history -------------------------------------------------------------------
    def events_after(
        self, revision: int, kind: str | None = None, limit: int = 1000
    ) -> tuple[builtins.list[Event], int]:
        """Events with revision > `revision` (of `kind`, or all), oldest first, and
        the revision scanned up to. At most about `limit` events: a revision is
        never split, so a cascade may exceed it. Raises Expired when the history
        needed was dropped."""
        self.check_history(revision)
        if revision >= self.revision:
            return [], revision
        hist = self._history
        i = bisect.bisect_right(hist, revision, key=lambda e: e.revision)
        out: builtins.list[Event] = []
        scanned = self.revision
        n = len(hist)
        while i < n:
            ev = hist[i]
            if out and len(out) >= limit and ev.revision != out[-1].revision:
                scanned = out[-1].revision
                break
            if kind is None or ev.record.kind == kind:
                out.append(ev)
            i += 1
        return out, scanned

    def check_history(self, revision: int) -> None:
        """Raise Expired unless every event after `revision` is still kept."""
        if revision < self.history_start:
            raise Expired(
                f"revision {revision} is too old: this replica keeps the history after "
                f"revision {self.history_start} (now at {self.revision}); list again"
            )

    # ---- snapshot -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain, picklable data (Records are shared with the
        history, and pickle stores a shared object once)."""
        return {
            "version": SNAPSHOT_VERSION,
            "revision": self.revision,
            "records": [self._records[k] for k in sorted(self._records)],
            "history_start": self.history_start,
            "history": list(self._history),
            "dedup": list(self._dedup.items()),
            "members": self.members(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the whole state with a snapshot's (indexes are rebuilt)."""
        if not isinstance(snap, dict) or snap.get("version") != SNAPSHOT_VERSION:
            version = snap.get("version") if isinstance(snap, dict) else type(snap).__name__
            raise Invalid(
                f"unsupported store snapshot version {version!r} "
                f"(this build reads version {SNAPSHOT_VERSION})",
                "snapshot",
            )
        self._reset()
        for rec in snap["records"]:
            self._store(rec)
            for token in rec.unique:
                self._unique[token] = rec.key
        self.revision = int(snap["revision"])
        self.history_start = int(snap["history_start"])
        self._history = list(snap["history"])
        self._trim_history()
        for rid, outcome in snap["dedup"]:
            self._dedup[rid] = outcome
        self._trim_dedup()
        for m in snap["members"]:
            self._members[m.name] = m

    def digest(self) -> tuple[int, str]:
        """(revision, sha256 over every record in key order): equal on replicas
        that applied the same writes."""
        h = hashlib.sha256()

        def put_bytes(b: bytes) -> None:
            h.update(len(b).to_bytes(8, "big"))
            h.update(b)

        def put_str(s: str) -> None:
            put_bytes(s.encode())

        for key in sorted(self._records):
            rec = self._records[key]
            for part in key:
                put_str(part)
            put_bytes(rec.data)
            h.update(rec.revision.to_bytes(8, "big"))
            h.update(rec.create_revision.to_bytes(8, "big"))
            for pairs in (rec.labels, rec.fields):
                h.update(len(pairs).to_bytes(4, "big"))
                for k, v in pairs:
                    put_str(k)
                    put_str(v)
            h.update(len(rec.unique).to_bytes(4, "big"))
            for token in rec.unique:
                put_str(token)
        return self.revision, h.hexdigest()

    # ---- internals -------------------------------------------------------------------
    def _dedup_run(self, request_id: str, apply: Any) -> Result:
        if not isinstance(request_id, str):
            raise Invalid(f"must be a string, got {type(request_id).__name__}", "request_id")
        if request_id:
            seen = self._dedup.get(request_id)
            if seen is not None:
                return self._replay(seen)
        try:
            result = apply()
        except CorralError as err:
            if request_id:
                self._remember(request_id, ("err", encode_error(err)))
            raise
        if request_id:
            self._remember(request_id, ("ok", result))
        return result  # type: ignore[no-any-return]

    @staticmethod
    def _replay(outcome: Outcome) -> Result:
        status, value = outcome
        if status == "err":
            raise decode_error(value)
        return value  # type: ignore[no-any-return]

    def _remember(self, request_id: str, outcome: Outcome) -> None:
        self._dedup[request_id] = outcome
        self._trim_dedup()

    def _trim_dedup(self) -> None:
        while len(self._dedup) > self.max_dedup:
            self._dedup.popitem(last=False)

    def _check_expect(self, key: Key, current: Record | None, expect: int | None) -> None:
        if expect is None:
            return
        if expect == MUST_NOT_EXIST:
            if current is not None:
                raise AlreadyExists(f"{describe_key(key)} already exists")
            return
        if current is None:
            raise NotFound(f"{describe_key(key)} not found")
        if expect != MUST_EXIST and current.revision != expect:
            raise Conflict(
                f"{describe_key(key)} has been modified: it is at resourceVersion "
                f"{current.revision}, the request expected {expect}; read it again and retry"
            )

    def _put(self, change: Change, expect: int | None, require_namespace: str) -> Record:
        check_change(change)
        expect = check_expect(expect)
        if not isinstance(require_namespace, str):
            raise Invalid("must be a string", "require_namespace")
        key = change.key
        current = self._records.get(key)
        self._check_expect(key, current, expect)
        if require_namespace and (NAMESPACE_KIND, "", require_namespace) not in self._records:
            raise NotFound(f'namespace "{require_namespace}" not found')
        for token in change.unique:
            holder = self._unique.get(token)
            if holder is not None and holder != key:
                raise UniqueViolation(token, holder)
        # Nothing can fail from here on: the write happens.
        rev = self.revision + 1
        rec = Record(
            kind=change.kind,
            namespace=change.namespace,
            name=change.name,
            data=change.data,
            revision=rev,
            create_revision=current.create_revision if current else rev,
            labels=change.labels,
            fields=change.fields,
            unique=change.unique,
        )
        if current is not None:
            for token in current.unique:
                if self._unique.get(token) == key:
                    del self._unique[token]
        for token in rec.unique:
            self._unique[token] = key
        self._store(rec)
        self.revision = rev
        etype = "MODIFIED" if current is not None else "ADDED"
        self._record_events([Event(etype, rec, current, rev)])
        return rec

    def _delete(self, key: Key, expect: int | None) -> Record:
        check_key(key)
        expect = check_expect(expect)
        if expect == MUST_NOT_EXIST:
            raise Invalid("a delete cannot expect the key not to exist", "expect")
        current = self._records.get(key)
        self._check_expect(key, current, expect)
        if current is None:
            raise NotFound(f"{describe_key(key)} not found")
        if key[0] == NAMESPACE_KIND and not key[1]:
            # Deleting a Namespace always takes its contents: no orphans.
            deleted = self._delete_namespace(key[2])
            return deleted[-1]
        rev = self.revision + 1
        gone = self._tombstone(current, rev)
        self.revision = rev
        self._record_events([Event("DELETED", gone, current, rev)])
        return gone

    def _delete_namespace_checked(self, name: str, expect: int | None) -> tuple[Record, ...]:
        if not isinstance(name, str) or not name:
            raise Invalid(f"must be a non-empty string, got {name!r}", "name")
        expect = check_expect(expect)
        if expect == MUST_NOT_EXIST:
            raise Invalid("a delete cannot expect the key not to exist", "expect")
        key = (NAMESPACE_KIND, "", name)
        current = self._records.get(key)
        self._check_expect(key, current, expect)
        if current is None:
            raise NotFound(f'namespace "{name}" not found')
        return self._delete_namespace(name)

    def _delete_namespace(self, name: str) -> tuple[Record, ...]:
        rev = self.revision + 1
        victims: builtins.list[Record] = []
        for kind in sorted(self._index):
            held = self._index[kind].get(name)
            if held:
                victims.extend(held[n] for n in sorted(held))
        victims.append(self._records[(NAMESPACE_KIND, "", name)])
        events: builtins.list[Event] = []
        gone_all: builtins.list[Record] = []
        for current in victims:
            gone = self._tombstone(current, rev)
            gone_all.append(gone)
            events.append(Event("DELETED", gone, current, rev))
        self.revision = rev
        self._record_events(events)
        return tuple(gone_all)

    def _tombstone(self, current: Record, rev: int) -> Record:
        """Remove a record; its last state, stamped with the deletion's revision."""
        key = current.key
        for token in current.unique:
            if self._unique.get(token) == key:
                del self._unique[token]
        del self._records[key]
        names = self._index[current.kind][current.namespace]
        del names[current.name]
        if not names:
            del self._index[current.kind][current.namespace]
        self._invalidate(current.kind, current.namespace)
        return Record(
            kind=current.kind,
            namespace=current.namespace,
            name=current.name,
            data=current.data,
            revision=rev,
            create_revision=current.create_revision,
            labels=current.labels,
            fields=current.fields,
            unique=current.unique,
        )

    def _store(self, rec: Record) -> None:
        self._records[rec.key] = rec
        self._index.setdefault(rec.kind, {}).setdefault(rec.namespace, {})[rec.name] = rec
        self._invalidate(rec.kind, rec.namespace)

    def _invalidate(self, kind: str, namespace: str) -> None:
        self._list_cache.pop((kind, namespace), None)
        self._list_cache.pop((kind, None), None)

    def _record_events(self, events: Iterable[Event]) -> None:
        self._history.extend(events)
        self._trim_history()

    def _trim_history(self) -> None:
        hist = self._history
        excess = len(hist) - self.max_history
        if excess <= 0:
            return
        # Drop whole revisions only, and never the newest one.
        cut_rev = hist[excess - 1].revision
        if cut_rev == hist[-1].revision:
            cut = bisect.bisect_left(hist, cut_rev, key=lambda e: e.revision)
            if cut == 0:
                return
            cut_rev = hist[cut - 1].revision
        cut = bisect.bisect_right(hist, cut_rev, key=lambda e: e.revision)
        del hist[:cut]
        self.history_start = max(self.history_start, cut_rev)
