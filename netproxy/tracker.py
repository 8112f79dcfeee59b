"""The change tracker: which Services need their rules rewritten since the last sync.

Threads model: the Service and Endpoints informer threads call the `*_updated`
/ `*_deleted` methods; the sync thread calls `take_changes`, `snapshot` and
`wait`. One lock guards everything; handlers do O(ports x endpoints) work under
it (turning messages into `ServiceState`s), never I/O.

An event marks a Service dirty only when its `ServiceState` (what decides its
rules) changed, so status or label churn costs no sync (kube-proxy's change
trackers do the same with their ServicePort / Endpoint maps).
"""

from __future__ import annotations

import threading
from typing import Any

from netproxy.model import ServiceKey, ServiceState, service_state

Key = ServiceKey


def _key(obj: Any) -> Key:
    return (obj.metadata.namespace, obj.metadata.name)


class ChangeTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[Key, Any] = {}
        self._endpoints: dict[Key, Any] = {}
        self._states: dict[Key, ServiceState] = {}
        self._dirty: set[Key] = set()
        self._event = threading.Event()

    # ---- informer side ------------------------------------------------------------
    def service_updated(self, svc: Any) -> None:
        with self._lock:
            self._services[_key(svc)] = svc
            self._recompute(_key(svc))

    def service_deleted(self, svc: Any) -> None:
        with self._lock:
            self._services.pop(_key(svc), None)
            self._recompute(_key(svc))

    def endpoints_updated(self, ep: Any) -> None:
        with self._lock:
            self._endpoints[_key(ep)] = ep
            self._recompute(_key(ep))

    def endpoints_deleted(self, ep: Any) -> None:
        with self._lock:
            self._endpoints.pop(_key(ep), None)
            self._recompute(_key(ep))

    def _recompute(self, key: Key) -> None:
        svc = self._services.get(key)
        state = None if svc is None else service_state(svc, self._endpoints.get(key))
        if state == self._states.get(key):
            return
        if state is None:
            del self._states[key]
        else:
            self._states[key] = state
        self._dirty.add(key)
        self._event.set()

    # ---- sync side ------------------------------------------------------------------
    def take_changes(self) -> dict[Key, ServiceState | None]:
        """The current state of every Service that changed since the last take."""
        with self._lock:
            out = {k: self._states.get(k) for k in self._dirty}
            self._dirty.clear()
            return out

    def snapshot(self) -> dict[Key, ServiceState]:
        """Every Service with rules; what a full sync renders. Clears the dirty set."""
        with self._lock:
            self._dirty.clear()
            return dict(self._states)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._dirty)

    def wait(self, timeout: float) -> bool:
        """Block until a change is recorded (True) or `timeout` passes (False)."""
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired

    def kick(self) -> None:
        """Wake the sync thread (shutdown, or a caller that wants a sync now)."""
        self._event.set()

    def counts(self) -> tuple[int, int]:
        """(Services with rules, ready endpoints across them): for metrics."""
        with self._lock:
            eps = sum(len(p.endpoints) for s in self._states.values() for p in s.ports)
            return len(self._states), eps
