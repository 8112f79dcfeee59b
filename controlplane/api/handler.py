"""The API's domain logic over base.Store, usable in-process without gRPC.

Every write validates before it writes: copy the request, stamp and default,
validate, check what an update may not change, allocate, encode (size cap),
then one conditional store write (`expect`), so a failed check changes nothing
and two writers cannot both win. Writes that must read first (Update without a
resourceVersion, Apply, Delete) retry on a lost compare-and-set.

Request ids: a client's retry of a write carries the same id; each store write
made for it gets a derived id (`ID/step`), so a retried request replays the
outcome of every step the first attempt completed instead of applying twice.

Threading: thread-safe and stateless apart from the store (itself
thread-safe); called from many gRPC worker threads at once.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from controlplane.api import codec, defaults, indexes, merge
from controlplane.api.allocators import Allocation, Allocator
from controlplane.api.deadline import write_timeout
from controlplane.api.deletion import DeleteOptions, plan_delete
from controlplane.api.settings import SYSTEM_NAMESPACES, ApiSettings
from controlplane.api.validation import check_update, validate
from controlplane.api.watch import Filter, WatchStream, parse_revision
from controlplane.store.base import (
    MUST_EXIST,
    MUST_NOT_EXIST,
    Change,
    Key,
    Record,
    Store,
    UniqueViolation,
)
from corral import kinds
from corral.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Invalid,
    NotFound,
    Unavailable,
)
from corral.kinds import KindInfo
from corral.selectors import parse_field_selector, parse_label_selector

log = logging.getLogger(__name__)

# Lost compare-and-sets retried by read-modify-write operations before giving up.
MAX_CAS_RETRIES = 8
# Collisions with a concurrent allocation on another replica before giving up.
MAX_ALLOC_RETRIES = 8
# Kinds whose status the server resets on create (controllers and agents own it).
RESET_STATUS_ON_CREATE = ("Pod", "Service", "Deployment", "ReplicaSet", "StatefulSet",
                          "DaemonSet", "Job", "PersistentVolumeClaim")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _rid(request_id: str, step: str) -> str:
    return f"{request_id}/{step}" if request_id else ""


class Handler:
    def __init__(self, store: Store, settings: ApiSettings | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings or ApiSettings()
        self.allocator = Allocator(store, self.settings)
        self._clock = clock
        # Set on shutdown: every watch stream ends.
        self.closing = threading.Event()
        # Open watch streams, so close() can end them at once.
        self._streams: weakref.WeakSet[WatchStream] = weakref.WeakSet()
        self._streams_lock = threading.Lock()

    def close(self) -> None:
        """End every watch stream now (they return cleanly) and refuse new ones."""
        self.closing.set()
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()

    # ---- helpers ----------------------------------------------------------------------
    @staticmethod
    def kind_info(kind: str) -> KindInfo:
        if not kind:
            raise Invalid("required value: the kind to act on", "kind")
        return kinds.resolve(kind)

    @staticmethod
    def _key(info: KindInfo, namespace: str, name: str) -> Key:
        if not name:
            raise Invalid("required value", "metadata.name")
        if info.namespaced:
            if not namespace:
                raise Invalid(f"required value: {info.kind} is namespaced", "metadata.namespace")
            return (info.kind, namespace, name)
        return (info.kind, "", name)

    def _now(self, msg: Message) -> None:
        msg.seconds = int(self._clock())  # type: ignore[attr-defined]

    def require_quorum(self) -> None:
        """Fail fast (UNAVAILABLE) on a replica that cannot reach a majority, instead
        of letting the call wait out its deadline: the client then tries another
        replica at once. Stale reads skip this check."""
        if self.store.has_quorum():
            return
        st = self.store.local_status()
        if not st.has_quorum:
            raise Unavailable(f"replica {st.name} cannot reach a majority of the control "
                              "plane members (no quorum), so it can neither write nor "
                              "confirm a read is up to date; nothing was done")

    def _get_record(self, key: Key, linearizable: bool = True) -> Record:
        rec = self.store.get(key, linearizable=linearizable)
        if rec is None:
            raise NotFound(_not_found(key))
        return rec

    def _change(self, info: KindInfo, obj: Any, data: bytes) -> Change:
        m = obj.metadata
        return Change(
            kind=info.kind,
            namespace=m.namespace if info.namespaced else "",
            name=m.name,
            data=data,
            labels=indexes.labels(obj),
            fields=indexes.fields(info.kind, obj),
            unique=indexes.unique_tokens(info.kind, obj),
        )

    def _write(self, info: KindInfo, obj: Any, old: Any | None, *, expect: int | None,
               request_id: str, require_namespace: str = "", dry_run: bool = False,
               finish: Callable[[Any], None] | None = None,
               current: bytes | None = None) -> tuple[Any, bool]:
        """Allocate, check, encode and put `obj`; re-pick allocations that collided
        with a concurrent writer. `finish(candidate)` validates the allocated
        candidate; with `current` (the stored bytes), an identical result is not
        written. Returns (the stored object with resourceVersion set, written?)."""
        avoid: set[str] = set()
        for attempt in range(MAX_ALLOC_RETRIES):
            candidate = codec.copy(obj)
            alloc = self.allocator.allocate(info.kind, candidate, old, avoid)
            if finish is not None:
                finish(candidate)
            data = codec.encode(candidate)
            if current is not None and data == current:
                return old, False  # nothing changed: no write, no new revision
            if dry_run:
                return candidate, True
            try:
                rec = self.store.put(self._change(info, candidate, data), expect=expect,
                                     require_namespace=require_namespace,
                                     request_id=_rid(request_id, f"put{attempt}"),
                                     timeout=write_timeout(self.settings.write_timeout))
            except UniqueViolation as err:
                if err.token in alloc.picked:
                    avoid.add(err.token)
                    continue
                raise _allocation_error(err, alloc) from None
            return codec.decode(rec), True
        raise Conflict(f"{kinds.describe(obj)}: could not allocate an address after "
                       f"{MAX_ALLOC_RETRIES} tries (concurrent writers); retry")

    # ---- reads -----------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str, *, stale: bool = False) -> Any:
        info = self.kind_info(kind)
        key = self._key(info, namespace, name)
        if not stale:
            self.require_quorum()
        return codec.decode(self._get_record(key, linearizable=not stale))

    def list(self, kind: str, namespace: str = "", *, label_selector: str = "",
             field_selector: str = "", stale: bool = False) -> tuple[builtins.list[Any], int]:
        records, rev = self.list_records(kind, namespace, label_selector=label_selector,
                                         field_selector=field_selector, stale=stale)
        return [codec.decode(r) for r in records], rev

    def list_records(
        self, kind: str, namespace: str = "", *, label_selector: str = "",
        field_selector: str = "", stale: bool = False,
    ) -> tuple[builtins.list[Record], int]:
        """The matching records, undecoded (the servicer parses them straight into
        the response), and the revision they were read at."""
        info = self.kind_info(kind)
        flt = self._filter(info, namespace, label_selector, field_selector)
        if not stale:
            self.require_quorum()
        records, rev = self.store.list(info.kind, flt.namespace or None,
                                       linearizable=not stale)
        return [r for r in records if flt.matches(r)], rev

    def _filter(self, info: KindInfo, namespace: str, label_selector: str,
                field_selector: str) -> Filter:
        fsel = parse_field_selector(field_selector)
        indexes.check_field_selector(info.kind, fsel)
        return Filter(namespace if info.namespaced else "",
                      parse_label_selector(label_selector), fsel)

    # ---- create ------------------------------------------------------------------------
    def create(self, obj: Any, *, dry_run: bool = False, request_id: str = "") -> Any:
        info = kinds.of(obj)
        new = codec.copy(obj)
        self._prepare_create(info, new)
        if not dry_run:
            self.require_quorum()
        for attempt in range(MAX_CAS_RETRIES):
            try:
                return self._write(info, new, None, expect=MUST_NOT_EXIST,
                                   request_id=_rid(request_id, f"c{attempt}"),
                                   require_namespace=new.metadata.namespace,
                                   dry_run=dry_run)[0]
            except AlreadyExists:
                if not obj.metadata.name and obj.metadata.generate_name:
                    # A generated name collided: draw another.
                    new.metadata.name = _generate(obj.metadata.generate_name)
                    continue
                raise
        raise AlreadyExists(f"{kinds.describe(new)}: could not generate a free name from "
                            f"{obj.metadata.generate_name!r}")

    def _prepare_create(self, info: KindInfo, new: Any) -> None:
        m = new.metadata
        if m.resource_version:
            raise Invalid("must not be set on create (it is the store's revision)",
                          "metadata.resourceVersion")
        if not m.name and m.generate_name:
            m.name = _generate(m.generate_name)
        m.uid = _uid()
        self._now(m.creation_timestamp)
        m.generation = 1
        m.ClearField("deletion_timestamp")
        m.ClearField("deletion_grace_period_seconds")
        if info.has_status and info.kind in RESET_STATUS_ON_CREATE:
            new.ClearField("status")
        defaults.apply_defaults(info.kind, info.api_version, new)
        defaults.create_defaults(info.kind, new)
        # Allocation only fills values validation already allows, so once is enough.
        validate(info, new, self.settings)

    # ---- update ------------------------------------------------------------------------
    def update(self, obj: Any, *, dry_run: bool = False, request_id: str = "") -> Any:
        info = kinds.of(obj)
        return self._read_modify_write(
            info, obj, lambda old: merge.for_update(info, old, obj),
            dry_run=dry_run, request_id=request_id)[0]

    def update_status(self, obj: Any, *, dry_run: bool = False, request_id: str = "") -> Any:
        info = kinds.of(obj)
        return self._read_modify_write(
            info, obj, lambda old: merge.for_status(info, old, obj),
            dry_run=dry_run, request_id=request_id, status=True)[0]

    def _read_modify_write(self, info: KindInfo, obj: Any, build: Callable[[Any], Any], *,
                           dry_run: bool, request_id: str,
                           status: bool = False) -> tuple[Any, bool]:
        """(stored object, whether anything was written)."""
        key = self._key(info, obj.metadata.namespace, obj.metadata.name)
        self.require_quorum()
        want = parse_revision(obj.metadata.resource_version) \
            if obj.metadata.resource_version else None
        # A local read is enough to start: the write's expect catches a stale one.
        linearizable = False
        writes = 0
        for _ in range(2 * MAX_CAS_RETRIES):
            rec = self.store.get(key, linearizable=linearizable)
            if rec is None and not linearizable:
                linearizable = True
                continue
            if rec is None:
                raise NotFound(_not_found(key))
            if want is not None and rec.revision != want:
                if rec.revision < want and not linearizable:
                    linearizable = True  # this replica may be behind: read again
                    continue
                return self._replay_or_conflict(key, rec, want, _rid(request_id, "u0/put0")), \
                    True
            old = codec.decode(rec)
            new = build(old)
            defaults.apply_defaults(info.kind, info.api_version, new)
            if new.metadata.HasField("deletion_timestamp") and not new.metadata.finalizers \
                    and _may_remove(info, new):
                validate(info, new, self.settings)
                return self._remove(info, key, rec, dry_run, _rid(request_id, f"d{writes}"))
            def finish(candidate: Any, old: Any = old) -> None:
                self._finish(info, old, candidate, status=status)

            try:
                return self._write(info, new, old, expect=rec.revision,
                                   request_id=_rid(request_id, f"u{writes}"),
                                   dry_run=dry_run, current=rec.data, finish=finish)
            except Conflict as err:
                if want is not None or isinstance(err, UniqueViolation):
                    raise
                linearizable = True
            except NotFound:
                if want is not None:
                    raise
                linearizable = True
            writes += 1
            if writes >= MAX_CAS_RETRIES:
                break
        raise Conflict(f"{_describe_key(key)} keeps changing: gave up after "
                       f"{MAX_CAS_RETRIES} attempts; retry")

    def _replay_or_conflict(self, key: Key, rec: Record, want: int, request_id: str) -> Any:
        """The object is no longer at `want`. If this request is a retry whose first
        attempt made that change, the store replays its result; otherwise Conflict.

        The probe re-puts the current bytes with expect=want: it cannot apply (the
        revision moved on), so it either replays a remembered outcome or fails.
        """
        if request_id:
            try:
                replayed = self.store.put(
                    Change(kind=rec.kind, namespace=rec.namespace, name=rec.name,
                           data=rec.data, labels=rec.labels, fields=rec.fields,
                           unique=rec.unique),
                    expect=want, request_id=request_id,
                    timeout=write_timeout(self.settings.write_timeout))
            except Conflict:
                pass
            else:
                return codec.decode(replayed)
        raise Conflict(_modified(key, want, rec.revision))

    def _finish(self, info: KindInfo, old: Any, new: Any, *, status: bool = False) -> None:
        """Validate an updated, allocated object and stamp its generation."""
        validate(info, new, self.settings)
        if not status:
            check_update(info.kind, old, new)
            if merge.spec_changed(info, old, new):
                new.metadata.generation = old.metadata.generation + 1

    # ---- apply ---------------------------------------------------------------------------
    def apply(self, obj: Any, *, dry_run: bool = False,
              request_id: str = "") -> tuple[Any, str]:
        """(object, "created" | "configured" | "unchanged")."""
        info = kinds.of(obj)
        key = self._key(info, obj.metadata.namespace, obj.metadata.name)
        self.require_quorum()
        manifest = codec.copy(obj)
        manifest.metadata.resource_version = ""
        for attempt in range(MAX_CAS_RETRIES):
            rec = self.store.get(key, linearizable=True)
            if rec is None:
                if obj.metadata.resource_version:
                    raise NotFound(f"{_not_found(key)} (the manifest names resourceVersion "
                                   f"{obj.metadata.resource_version})")
                try:
                    return self.create(obj, dry_run=dry_run,
                                       request_id=_rid(request_id, f"a{attempt}")), "created"
                except AlreadyExists:
                    continue  # created meanwhile: apply onto it
            try:
                out, wrote = self._read_modify_write(
                    info, obj, lambda old: merge.for_apply(info, old, manifest),
                    dry_run=dry_run, request_id=_rid(request_id, f"a{attempt}"))
            except NotFound:
                if obj.metadata.resource_version:
                    raise
                continue  # deleted meanwhile: create it
            return out, "configured" if wrote else "unchanged"
        raise Conflict(f"{_describe_key(key)} keeps changing: gave up after "
                       f"{MAX_CAS_RETRIES} attempts; retry")

    # ---- delete ----------------------------------------------------------------------------
    def delete(self, kind: str, namespace: str, name: str, *,
               grace_period_seconds: int | None = None, propagation_policy: str = "",
               precondition_resource_version: str = "", precondition_uid: str = "",
               dry_run: bool = False, request_id: str = "") -> tuple[Any, bool]:
        """(the object as removed, or as it is now while deletion waits; removed?)."""
        info = self.kind_info(kind)
        key = self._key(info, namespace, name)
        opts = DeleteOptions.parse(grace_period_seconds, propagation_policy)
        want = parse_revision(precondition_resource_version) \
            if precondition_resource_version else None
        self.require_quorum()
        if info.kind == "Namespace":
            return self._delete_namespace(key, want, precondition_uid, dry_run, request_id)
        for attempt in range(MAX_CAS_RETRIES):
            rec = self.store.get(key, linearizable=True)
            if rec is None:
                return self._replay_removal(info, key, request_id)
            obj = codec.decode(rec)
            _check_preconditions(key, rec, obj, want, precondition_uid)
            plan = plan_delete(info.kind, obj, opts, self._clock())
            rid = _rid(request_id, f"x{attempt}")
            try:
                if plan.remove:
                    return self._remove(info, key, rec, dry_run, rid)
                if plan.updated is None:
                    return obj, False  # already terminating as asked
                if dry_run:
                    return plan.updated, False
                return self._write(info, plan.updated, obj, expect=rec.revision,
                                   request_id=rid)[0], False
            except Conflict:
                if want is not None:
                    raise
        raise Conflict(f"{_describe_key(key)} keeps changing: gave up after "
                       f"{MAX_CAS_RETRIES} attempts; retry")

    def _replay_removal(self, info: KindInfo, key: Key, request_id: str) -> tuple[Any, bool]:
        """NotFound, unless this is a retry of a delete whose first attempt removed
        the object: the store then replays that removal's result."""
        if request_id:
            gone = self.store.delete(key, expect=MUST_EXIST,
                                     request_id=_rid(request_id, "x0"),
                                     timeout=write_timeout(self.settings.write_timeout))
            return codec.decode(gone), True
        raise NotFound(_not_found(key))

    def _remove(self, info: KindInfo, key: Key, rec: Record, dry_run: bool,
                request_id: str) -> tuple[Any, bool]:
        if dry_run:
            return codec.decode(rec), True
        gone = self.store.delete(key, expect=rec.revision, request_id=request_id,
                                 timeout=write_timeout(self.settings.write_timeout))
        return codec.decode(gone), True

    def _delete_namespace(self, key: Key, want: int | None, uid: str, dry_run: bool,
                          request_id: str) -> tuple[Any, bool]:
        name = key[2]
        if name in SYSTEM_NAMESPACES:
            raise FailedPrecondition(f'namespace "{name}" is a system namespace and cannot '
                                     f"be deleted")
        rec = self._get_record(key)
        obj = codec.decode(rec)
        _check_preconditions(key, rec, obj, want, uid)
        if dry_run:
            return obj, True
        gone = self.store.delete_namespace(name, expect=rec.revision,
                                           request_id=_rid(request_id, "ns"),
                                           timeout=write_timeout(self.settings.write_timeout))
        last = next((r for r in gone if r.kind == "Namespace"), gone[-1])
        return codec.decode(last), True

    # ---- watch -----------------------------------------------------------------------------
    def watch(self, kind: str, namespace: str = "", *, label_selector: str = "",
              field_selector: str = "", resource_version: str = "",
              allow_bookmarks: bool = False, stale: bool = False) -> WatchStream:
        """A WatchStream (raises Expired / Invalid before anything is streamed)."""
        info = self.kind_info(kind)
        flt = self._filter(info, namespace, label_selector, field_selector)
        if self.closing.is_set():
            raise Unavailable("this replica is shutting down")
        if not resource_version and not stale:
            self.require_quorum()
        stream = WatchStream(self.store, info.kind, flt, resource_version,
                             bookmarks=allow_bookmarks,
                             bookmark_interval=self.settings.bookmark_interval,
                             closing=self.closing, linearizable=not stale)
        with self._streams_lock:
            self._streams.add(stream)
        if self.closing.is_set():  # close() ran meanwhile and did not see it
            stream.cancel()
        return stream

    # ---- bootstrap --------------------------------------------------------------------------
    def ensure_namespaces(self, names: tuple[str, ...] = SYSTEM_NAMESPACES) -> builtins.list[str]:
        """Create the system namespaces that do not exist yet; returns those created."""
        created = []
        for name in names:
            if self.store.get(("Namespace", "", name), linearizable=True) is not None:
                continue
            ns = kinds.by_kind("Namespace").new()
            ns.metadata.name = name
            try:
                # A fixed request id: two new leaders racing create it once.
                self.create(ns, request_id=f"bootstrap-namespace-{name}")
                created.append(name)
            except AlreadyExists:
                pass
        return created


def _may_remove(info: KindInfo, obj: Any) -> bool:
    """A Pod waiting for its node agent stays until deleted with grace 0."""
    if info.kind != "Pod":
        return True
    m = obj.metadata
    return not m.HasField("deletion_grace_period_seconds") or m.deletion_grace_period_seconds == 0


def _check_preconditions(key: Key, rec: Record, obj: Any, want: int | None, uid: str) -> None:
    if uid and obj.metadata.uid != uid:
        raise Conflict(f"precondition failed for {_describe_key(key)}: UID in precondition: "
                       f"{uid}, UID in object meta: {obj.metadata.uid}")
    if want is not None and rec.revision != want:
        raise Conflict(_modified(key, want, rec.revision))


def _allocation_error(err: UniqueViolation, alloc: Allocation) -> Invalid:
    path = alloc.path_of(err.token) or "spec"
    return Invalid(f"{err.message} (choose another value or leave it empty to have one "
                   "allocated)", path)


def _uid() -> str:
    return str(uuid.uuid4())


def _generate(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def _describe_key(key: Key) -> str:
    kind, ns, name = key
    return f'{kind} "{ns}/{name}"' if ns else f'{kind} "{name}"'


def _not_found(key: Key) -> str:
    kind, ns, name = key
    where = f' in namespace "{ns}"' if ns else ""
    return f'{kind.lower()} "{name}" not found{where}'


def _modified(key: Key, want: int, have: int) -> str:
    return (f"Operation cannot be fulfilled on {_describe_key(key)}: the object has been "
            f"modified (resourceVersion {want} requested, now {have}); get it again, apply "
            f"your changes to the latest version and retry")
