"""What the API layer needs from the store, and nothing more.

The store is a revisioned key-value store of opaque object bytes with
compare-and-set writes and an ordered change feed, in the shape of etcd:

- Keys are (kind, namespace, name); namespace is "" for cluster-scoped kinds.
- Every successful write (put, delete, delete_namespace) is one *revision*: the
  store's revision grows by exactly one, and every record written by it carries
  that revision (it is the object's resourceVersion). Failed writes change nothing.
- Values are `Record`s: the serialized corral.v1.Object (with an empty
  metadata.resourceVersion; readers fill it from `Record.revision`) plus the
  indexes the API layer computed from it (labels, selectable fields, unique
  tokens). The store never parses object bytes: it knows nothing of kinds.
- `unique` tokens ("clusterIP/10.96.0.12", "nodePort/TCP/30080",
  "podCIDR/10.244.3.0/24") are held by at most one key at a time; a put that
  would share one fails with `UniqueViolation`. This is how allocations
  (ClusterIPs, NodePorts, pod CIDRs) stay unique without transactions.
- Writes carry a `request_id`: the same id applied twice returns the first
  result instead of applying again, so a client may retry a write whose outcome
  it does not know (timeout, lost connection, leader change).

Two implementations: `controlplane.store.raft.RaftStore` (replicated through
pysyncobj, durable) and `controlplane.store.memory.MemoryStore` (one process,
for unit tests of the API layer). Both are thread-safe.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from corral.errors import Conflict

Key = tuple[str, str, str]  # (kind, namespace, name)

# `expect` values for writes.
ANY: Final = None  # write whatever is there (or create)
MUST_NOT_EXIST: Final = 0  # create only
MUST_EXIST: Final = -1  # update only, at any revision
# any positive int: the key must exist at exactly that revision


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    namespace: str
    name: str
    # Serialized corral.v1.Object, deterministic, resourceVersion left empty.
    data: bytes
    # Revision of this record's last write (its resourceVersion).
    revision: int
    # Revision of the write that created the key.
    create_revision: int
    # Sorted (key, value) pairs: label selectors match against these.
    labels: tuple[tuple[str, str], ...] = ()
    # Sorted (field path, value) pairs: field selectors match against these.
    fields: tuple[tuple[str, str], ...] = ()
    unique: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def field_map(self) -> dict[str, str]:
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class Change:
    """What a put/delete asks for; the store turns it into a Record."""

    kind: str
    namespace: str
    name: str
    data: bytes = b""
    labels: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    unique: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Event:
    # "ADDED", "MODIFIED" or "DELETED"
    type: str
    # For DELETED: the last state of the object, with revision = the deletion's revision.
    record: Record
    # The state before this event (None for ADDED).
    prev: Record | None
    revision: int


@dataclass(frozen=True)
class MemberInfo:
    """A control plane member as registered in the replicated store."""

    name: str
    raft_address: str
    api_address: str = ""
    socket: str = ""


@dataclass(frozen=True)
class LocalStatus:
    """One replica's own view of the Raft cluster."""

    name: str
    raft_address: str
    state: str  # "leader", "follower", "candidate"
    leader: str  # raft address of the believed leader, "" when none
    term: int
    commit_index: int
    applied_index: int
    revision: int
    has_quorum: bool
    log_entries: int
    extra: Mapping[str, object] = field(default_factory=dict)


class UniqueViolation(Conflict):
    """A put would give a unique token to a second key."""

    def __init__(self, token: str, holder: Key) -> None:
        kind, ns, name = holder
        where = f"{ns}/{name}" if ns else name
        super().__init__(f"{token} is already taken by {kind} {where}")
        self.token = token
        self.holder = holder


class Watch(abc.ABC):
    """A subscription to the change feed from a revision (exclusive), in order."""

    @abc.abstractmethod
    def next(self, timeout: float | None = None) -> list[Event]:
        """The next events in revision order; [] when `timeout` passed with none.

        Raises `corral.errors.Expired` if this watcher fell so far behind that
        the history it needs was dropped, and `corral.errors.Unavailable` once
        the store is closed.
        """

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The revision this watch has delivered up to."""


class Store(abc.ABC):
    """The replicated object store as the API layer uses it. Thread-safe."""

    # ---- reads ------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: Key, *, linearizable: bool = True) -> Record | None:
        """The record, or None. Linearizable reads see every write acknowledged
        (by any replica) before the call began."""

    @abc.abstractmethod
    def list(
        self, kind: str, namespace: str | None = None, *, linearizable: bool = True
    ) -> tuple[list[Record], int]:
        """All records of a kind (in one namespace, or all when None), sorted by
        (namespace, name), and the revision they were read at."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """This replica's current revision (no barrier)."""

    @abc.abstractmethod
    def sync(self, timeout: float = 10.0) -> int:
        """Wait until this replica has applied every write acknowledged (by any
        replica) before the call, also those that move no revision (member
        records); returns the revision then. Unavailable without a leader."""

    # ---- writes -------------------------------------------------------------
    @abc.abstractmethod
    def put(
        self,
        change: Change,
        *,
        expect: int | None = ANY,
        require_namespace: str = "",
        request_id: str = "",
        timeout: float = 10.0,
    ) -> Record:
        """Create or replace. `expect` is ANY, MUST_NOT_EXIST, MUST_EXIST or a
        revision. With `require_namespace`, the Namespace object of that name
        must exist. Raises AlreadyExists, NotFound, Conflict, UniqueViolation,
        Unavailable (nothing written) or Timeout (outcome unknown)."""

    @abc.abstractmethod
    def delete(
        self, key: Key, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> Record:
        """Remove a key; returns its last state with the deletion's revision."""

    @abc.abstractmethod
    def delete_namespace(
        self, name: str, *, expect: int | None = ANY, request_id: str = "", timeout: float = 10.0
    ) -> builtins.list[Record]:
        """Remove the Namespace `name` and every object in it, as one revision."""

    # ---- change feed ----------------------------------------------------------
    @abc.abstractmethod
    def watch(self, from_revision: int, kind: str | None = None) -> Watch:
        """Events after `from_revision` (of one kind, or all). Raises Expired when
        from_revision is older than the history this replica keeps."""

    # ---- cluster ----------------------------------------------------------------
    @abc.abstractmethod
    def is_leader(self) -> bool: ...

    @abc.abstractmethod
    def on_leadership_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(is_leader)` from a store thread whenever this replica
        gains or loses leadership (and once at registration with the current
        state). Callbacks must not block."""

    @abc.abstractmethod
    def local_status(self) -> LocalStatus: ...

    def has_quorum(self) -> bool:
        """Whether this replica reaches a majority of the members now: what
        `local_status().has_quorum` says, at the cost of one attribute read in
        stores that keep it (every API call asks)."""
        return self.local_status().has_quorum

    @abc.abstractmethod
    def members(self) -> builtins.list[MemberInfo]:
        """The registered members (each replica registers itself when it starts)."""

    @abc.abstractmethod
    def register_member(self, member: MemberInfo, timeout: float = 10.0) -> None: ...

    @abc.abstractmethod
    def digest(self) -> tuple[int, str]:
        """(revision, sha256 of every record) for convergence checks."""

    @abc.abstractmethod
    def close(self) -> None: ...
