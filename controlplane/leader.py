"""Leadership as start()/stop() calls: the hook for work only the leader does.

The store calls back on its own thread when this replica gains or loses
leadership; `LeaderSupervisor` only records that there and acts on a thread
of its own ("leader"), because store callbacks must not block. On gaining
leadership it first makes sure the system namespaces exist (idempotent: a
fixed request id), then builds and starts every leader-only service; on losing
it, it stops them, newest first. A flap while it worked collapses into the
latest state.

`leader_services(ctx)` returns what `controlplane.controllers.manager.build(ctx)`
builds: the scheduler and the controllers. A service is anything with `name`,
`start()` and `stop()`; `stop()` must return promptly (leadership is already gone, and any
write the old leader still makes is a compare-and-set the new state rejects).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controlplane.api.handler import Handler
from controlplane.config import Config
from controlplane.store.base import Store
from corral.errors import CorralError

log = logging.getLogger("corral.controlplane")


class LeaderService(Protocol):
    """Work only the leader does (scheduler, controllers). Started when this
    replica gains leadership, stopped the moment it loses it."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class LeaderContext:
    """What a leader-only service gets to build itself."""

    config: Config
    handler: Handler  # in-process API (same validation as gRPC)
    store: Store
    # gRPC endpoints of this replica's own API (unix socket first): for a
    # corral.client.Client, as any other client would use.
    endpoints: tuple[str, ...]


def leader_services(ctx: LeaderContext) -> list[LeaderService]:
    """THE HOOK: every service that runs only while this replica leads (the
    scheduler and the controller manager, controlplane/controllers/manager.py)."""
    # Imported here: the manager imports this module for LeaderContext.
    from controlplane.controllers import manager

    return list(manager.build(ctx))


class LeaderSupervisor:
    """Follows leadership changes on its own thread: the store's callback only enqueues."""

    def __init__(self, handler: Handler, ctx_factory: Callable[[], LeaderContext],
                 build: Callable[[LeaderContext], list[LeaderService]] | None = None) -> None:
        """`build` replaces the hook (tests of the API alone pass `lambda ctx: []`)."""
        self._handler = handler
        self._ctx_factory = ctx_factory
        self._build = build
        self._events: queue.Queue[bool | None] = queue.Queue()
        self._leading = threading.Event()
        self._running: list[LeaderService] = []
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def on_change(self, is_leader: bool) -> None:
        """Store callback (store thread): record and return at once."""
        if is_leader:
            self._leading.set()
        else:
            self._leading.clear()
        self._events.put(is_leader)

    def stop(self) -> None:
        self._leading.clear()
        self._events.put(None)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        active = False
        while True:
            want = self._events.get()
            # Act on the latest state only: a flap while we worked needs one transition.
            while not self._events.empty():
                nxt = self._events.get_nowait()
                want = nxt if want is not None else None
            if want is None:
                if active:
                    self._stop_services("the replica is shutting down")
                return
            if want and not active:
                active = self._gain()
            elif not want and active:
                self._stop_services("leadership lost")
                active = False

    def _gain(self) -> bool:
        log.info("leadership gained: making sure the system namespaces exist")
        while self._leading.is_set():
            try:
                created = self._handler.ensure_namespaces()
                if created:
                    log.info("created namespaces: %s", ", ".join(created))
                break
            except CorralError as err:
                log.info("creating the system namespaces failed (%s); retrying", err)
                time.sleep(0.5)
        if not self._leading.is_set():
            return False
        try:
            build = self._build or leader_services
            services = build(self._ctx_factory())
        except Exception:
            log.exception("building the leader-only services failed")
            return True
        for svc in services:
            try:
                svc.start()
                self._running.append(svc)
                log.info("leader-only service %s started", svc.name)
            except Exception:
                log.exception("leader-only service %s failed to start", svc.name)
        return True

    def _stop_services(self, why: str) -> None:
        for svc in reversed(self._running):
            try:
                svc.stop()
                log.info("leader-only service %s stopped: %s", svc.name, why)
            except Exception:
                log.exception("leader-only service %s failed to stop", svc.name)
        self._running.clear()
