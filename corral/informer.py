"""An informer: a local cache of one kind kept in step with the store by list + watch.

Threads model: one daemon thread per informer runs the list/watch loop and calls
the handlers, in revision order, one at a time. Readers on other threads use
`get`/`items`, which hand out the cached messages: treat them as read-only.

The loop is the reflector of Kubernetes' client-go:
- list, replace the cache (telling handlers what was added, changed, removed
  since the last list), then watch from the list's resourceVersion;
- a broken stream (replica killed, leader change, network cut) resumes from the
  last revision seen, on the next endpoint, without a list;
- a watch refused as too old (`Expired`) lists again.
Bookmarks keep the resume point fresh on quiet kinds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from corral.client import Client, WatchStream
from corral.errors import CorralError, Expired

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]
UpdateHandler = Callable[[Any, Any], None]


def _key(obj: Any) -> tuple[str, str]:
    return (obj.metadata.namespace, obj.metadata.name)


class Informer:
    def __init__(
        self,
        client: Client,
        kind: str,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        on_add: Handler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: Handler | None = None,
        on_synced: Callable[[], None] | None = None,
        name: str = "",
    ) -> None:
        self._client = client
        self.kind = kind
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._on_add = on_add
        self._on_update = on_update
        self._on_delete = on_delete
        self._on_synced = on_synced
        self._name = name or f"informer-{kind}"
        self._cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None
        self.resource_version = ""
        # Counters, for tests and metrics.
        self.lists = 0
        self.resumes = 0

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first list has filled the cache."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    # ---- cache -------------------------------------------------------------------
    def get(self, name: str, namespace: str = "") -> Any | None:
        with self._lock:
            return self._cache.get((namespace, name))

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._cache.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    # ---- loop ----------------------------------------------------------------------
    def _run(self) -> None:
        need_list = True
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch()
                backoff = 0.1
            except Expired as err:
                log.info("%s: %s; listing again", self._name, err)
                need_list = True
            except CorralError as err:
                if self._stop.is_set():
                    break
                stream = self._stream
                if stream is not None:
                    self._client.rotate_endpoint(stream.endpoint)
                log.info("%s: watch broken (%s); resuming from %s", self._name, err,
                         self.resource_version or "a new list")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("%s: unexpected error; listing again", self._name)
                need_list = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _list(self) -> None:
        items, rv = self._client.list(
            self.kind, self._namespace, label_selector=self._label_selector,
            field_selector=self._field_selector,
        )
        self.lists += 1
        fresh = {_key(o): o for o in items}
        with self._lock:
            old = self._cache
            self._cache = fresh
            self.resource_version = rv
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._call(self._on_add, obj)
            elif before.metadata.resource_version != obj.metadata.resource_version:
                self._call2(self._on_update, before, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._call(self._on_delete, obj)
        if not self._synced.is_set():
            self._synced.set()
        if self._on_synced is not None:
            self._call0(self._on_synced)

    def _watch(self) -> None:
        if self.resource_version and self.lists:
            self.resumes += 1
        stream = self._client.watch(
            self.kind, self._namespace, label_selector=self._label_selector,
            field_selector=self._field_selector, resource_version=self.resource_version,
            allow_bookmarks=True,
        )
        self._stream = stream
        if self._stop.is_set():
            stream.cancel()
            return
        for ev in stream:
            if self._stop.is_set():
                break
            if ev.type == "BOOKMARK":
                self.resource_version = ev.resource_version
                continue
            key = _key(ev.object)
            with self._lock:
                before = self._cache.get(key)
                if ev.type == "DELETED":
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = ev.object
                self.resource_version = ev.resource_version
            if ev.type == "ADDED" and before is None:
                self._call(self._on_add, ev.object)
            elif ev.type in ("ADDED", "MODIFIED"):
                if before is None:
                    self._call(self._on_add, ev.object)
                else:
                    self._call2(self._on_update, before, ev.object)
            elif ev.type == "DELETED":
                self._call(self._on_delete, before if before is not None else ev.object)
        # The server ended the stream (e.g. shutting down): resume from where we are.
        if not self._stop.is_set():
            time.sleep(0.05)

    def _call(self, fn: Handler | None, obj: Any) -> None:
        if fn is None:
            return
        try:
            fn(obj)
        except Exception:
            log.exception("%s: handler failed", self._name)

    def _call2(self, fn: UpdateHandler | None, old: Any, new: Any) -> None:
        if fn is None:
            return
        try:
            fn(old, new)
        except Exception:
            log.exception("%s: handler failed", self._name)

    def _call0(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s: handler failed", self._name)
