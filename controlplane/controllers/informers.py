"""One informer per kind, shared by every controller of this replica.

Wraps `corral.informer.Informer` (list + watch with resume) with what several
controllers need from one cache:
- fan-out: each controller subscribes its own add/update/delete handlers;
- `wait_for(revision)`: block until the cache has seen a given store revision,
  so a controller that just wrote does not decide again from a cache that does
  not show its own write yet (the role of client-go's "expectations", done with
  the store's global revision instead of counting creates and deletes).

Threads model: each kind's informer thread calls the handlers, one event at a
time; handlers must be quick (enqueue a key and return). Cache readers are on
any thread and must treat cached messages as read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from corral.client import Client
from corral.informer import Informer


class Handlers:
    def __init__(self, on_add: Callable[[Any], None] | None = None,
                 on_update: Callable[[Any, Any], None] | None = None,
                 on_delete: Callable[[Any], None] | None = None) -> None:
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete


class SharedInformer:
    def __init__(self, client: Client, kind: str) -> None:
        self.kind = kind
        self._handlers: list[Handlers] = []
        self._cond = threading.Condition()
        # namespace -> name -> object: controllers read one namespace per sync.
        self._by_ns: dict[str, dict[str, Any]] = {}
        self._index_lock = threading.Lock()
        self._informer = Informer(client, kind, on_add=self._add, on_update=self._update,
                                  on_delete=self._delete, on_synced=self._notify,
                                  name=f"informer-{kind}")

    def subscribe(self, handlers: Handlers) -> None:
        """Subscribe before `start`: the initial list is delivered as adds."""
        self._handlers.append(handlers)

    def start(self) -> None:
        self._informer.start()

    def stop(self) -> None:
        self._informer.stop()
        self._notify()

    def wait_synced(self, timeout: float) -> bool:
        return self._informer.wait_synced(timeout)

    @property
    def revision(self) -> int:
        rv = self._informer.resource_version
        return int(rv) if rv.isdigit() else 0

    def wait_for(self, revision: int, timeout: float = 5.0) -> bool:
        """True once this cache reflects every write up to `revision`."""
        if revision <= 0:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # Bookmarks move the revision without a handler call: poll too.
                self._cond.wait(min(left, 0.05))
            return True

    def get(self, name: str, namespace: str = "") -> Any | None:
        return self._informer.get(name, namespace)

    def items(self) -> list[Any]:
        return self._informer.items()

    def in_namespace(self, namespace: str) -> list[Any]:
        with self._index_lock:
            return list(self._by_ns.get(namespace, {}).values())

    def _index(self, obj: Any, present: bool) -> None:
        m = obj.metadata
        with self._index_lock:
            if present:
                self._by_ns.setdefault(m.namespace, {})[m.name] = obj
            else:
                names = self._by_ns.get(m.namespace)
                if names is not None:
                    names.pop(m.name, None)
                    if not names:
                        del self._by_ns[m.namespace]

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _add(self, obj: Any) -> None:
        self._index(obj, True)
        for h in self._handlers:
            if h.on_add is not None:
                h.on_add(obj)
        self._notify()

    def _update(self, old: Any, new: Any) -> None:
        self._index(new, True)
        for h in self._handlers:
            if h.on_update is not None:
                h.on_update(old, new)
        self._notify()

    def _delete(self, obj: Any) -> None:
        self._index(obj, False)
        for h in self._handlers:
            if h.on_delete is not None:
                h.on_delete(obj)
        self._notify()


class InformerSet:
    """The informers of one leadership term, by kind; built lazily, started together."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._by_kind: dict[str, SharedInformer] = {}
        self._started = False

    def __getitem__(self, kind: str) -> SharedInformer:
        inf = self._by_kind.get(kind)
        if inf is None:
            if self._started:
                raise RuntimeError(f"informer for {kind} requested after start")
            inf = SharedInformer(self._client, kind)
            self._by_kind[kind] = inf
        return inf

    def start(self) -> None:
        self._started = True
        for inf in self._by_kind.values():
            inf.start()

    def wait_synced(self, timeout: float) -> bool:
        return all(inf.wait_synced(timeout) for inf in self._by_kind.values())

    def stop(self) -> None:
        for inf in self._by_kind.values():
            inf.stop()

    def kinds(self) -> Iterable[str]:
        return self._by_kind.keys()
