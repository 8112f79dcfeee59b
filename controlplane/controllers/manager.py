"""The leader-only services of a control plane replica: the scheduler and every controller.

`build(ctx)` is the hook `controlplane.main` calls each time this replica gains
leadership; it returns one service, the `ControllerManager` of that leadership
term. The manager:
- talks to the store only through the API, with a `corral.client.Client` on
  this replica's own endpoints (unix socket first), exactly as any client;
- on `start()`: builds one informer per kind, waits until every cache holds a
  full list (no controller acts on a partial view: a ReplicaSet controller
  that saw no pods would create duplicates), then starts the scheduler and
  the controllers. Everything in memory (node heartbeat timers, queues,
  assumed bindings) is rebuilt from the store in that step;
- on `stop()`: sets the term's stop flag first, so no new write leaves this
  replica from that moment, then shuts the queues, informers and pools down
  in the background (`stop()` itself returns at once, as the hook requires).
  A write already in flight may still land; it is conditional on the
  resourceVersion its decision read, so a stale one is rejected.

Threads model: threads throughout (the gRPC client is synchronous): one
"controllers" thread per term that starts and then waits; informer threads;
worker threads per controller; the scheduler's loop and bind pool; the event
recorders' writer threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral.client import Client

from ..scheduler.runner import Scheduler
from .base import Context, Controller
from .clock import SYSTEM, Clock
from .config import ControllersConfig
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .endpoints import EndpointsController
from .garbagecollector import GarbageCollector
from .housekeeping import ClaimBindingController, EventTTLController
from .informers import InformerSet
from .job import JobController
from .localclient import LocalClient
from .nodelifecycle import NodeLifecycleController
from .recorder import Recorder
from .replicaset import ReplicaSetController
from .statefulset import StatefulSetController

log = logging.getLogger("corral.controllers")

CONTROLLERS: dict[str, type[Controller]] = {
    "replicaset": ReplicaSetController,
    "deployment": DeploymentController,
    "statefulset": StatefulSetController,
    "daemonset": DaemonSetController,
    "job": JobController,
    "endpoints": EndpointsController,
    "garbagecollector": GarbageCollector,
    "nodelifecycle": NodeLifecycleController,
    "pvcbinding": ClaimBindingController,
    "eventttl": EventTTLController,
}


class ControllerManager:
    name = "controllers"

    def __init__(self, endpoints: Sequence[str], config: ControllersConfig | None = None, *,
                 identity: str = "", clock: Clock = SYSTEM, handler: Any = None) -> None:
        self.endpoints = list(endpoints)
        # This replica's API Handler, for in-process calls (see localclient.py).
        self.handler = handler
        self.config = config or ControllersConfig()
        self.identity = identity
        self.clock = clock
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.controllers: dict[str, Controller] = {}
        self.scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._parts: dict[str, Any] = {}

    # ---- the LeaderService interface ------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="controllers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Returns at once; no write leaves after this call (see module doc)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        for c in self.controllers.values():
            c.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        threading.Thread(target=self._teardown, name="controllers-stop", daemon=True).start()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the term ---------------------------------------------------------------------
    def _run(self) -> None:
        started = time.monotonic()
        client: Any
        if self.handler is not None and self.config.in_process:
            client = LocalClient(self.handler)
        else:
            client = Client(self.endpoints, timeout=10.0, retry_for=10.0)
        informers = InformerSet(client)
        recorder = Recorder(client, "controller-manager", self.identity, clock=self.clock)
        sched_recorder = Recorder(client, "default-scheduler", self.identity, clock=self.clock)
        pool = ThreadPoolExecutor(16, thread_name_prefix="ctl-create")
        self._parts = {"client": client, "informers": informers, "recorder": recorder,
                       "sched_recorder": sched_recorder, "pool": pool}
        ctx = Context(client=client, informers=informers, recorder=recorder, clock=self.clock,
                      config=self.config, stop=self.stopped, pool=pool, identity=self.identity)
        for name, cls in CONTROLLERS.items():
            if self.config.enabled(name):
                self.controllers[name] = cls(ctx)
        if self.config.enabled("scheduler"):
            sctx = Context(client=client, informers=informers, recorder=sched_recorder,
                           clock=self.clock, config=self.config, stop=self.stopped, pool=pool,
                           identity=self.identity)
            self.scheduler = Scheduler(sctx)
        if self.stopped.is_set():
            return
        recorder.start()
        sched_recorder.start()
        informers.start()
        while not self.stopped.is_set():
            if informers.wait_synced(0.5):
                break
        if self.stopped.is_set():
            return
        for c in self.controllers.values():
            c.start()
        if self.scheduler is not None:
            self.scheduler.start()
        self.ready.set()
        log.info("controllers started on %s in %.2fs: %s%s", self.identity or "this replica",
                 time.monotonic() - started, ", ".join(self.controllers),
                 ", scheduler" if self.scheduler is not None else "")

    def _teardown(self) -> None:
        parts = self._parts
        if self._thread is not None:
            self._thread.join(10)
        for name in ("recorder", "sched_recorder"):
            if name in parts:
                parts[name].stop(timeout=1.0)
        if "informers" in parts:
            parts["informers"].stop()
        for c in self.controllers.values():
            c.join(2.0)
        if self.scheduler is not None:
            self.scheduler.join(2.0)
        if "pool" in parts:
            parts["pool"].shutdown(wait=False, cancel_futures=True)
        if "client" in parts:
            parts["client"].close()
        log.info("controllers stopped")

    # ---- for tests -------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def idle(self) -> bool:
        """No key queued or in progress in any controller (tests wait for quiet)."""
        busy = sum(c.queue.pending() for c in self.controllers.values())
        if self.scheduler is not None:
            busy += self.scheduler.pending()
        return busy == 0


def build(ctx: Any) -> list[ControllerManager]:
    """The hook of controlplane.main: `ctx` is its LeaderContext (config.controllers:
    the raw `controllers:` mapping; endpoints: this replica's own API)."""
    config = ControllersConfig.from_mapping(getattr(ctx.config, "controllers", None))
    return [ControllerManager(ctx.endpoints, config, identity=getattr(ctx.config, "name", ""),
                              handler=getattr(ctx, "handler", None))]
