"""The controller skeleton: informer events -> keys in a work queue -> sync(key).

A controller subclass says which informer events map to which keys (`setup`)
and how to reconcile one key (`sync`, which returns a `Result` of actions,
normally by calling a pure function of the module). The base runs the workers:
it applies the actions, waits until its informers show its own writes, and
requeues the key on failure (with back-off), on a stale write (at once) or when
the result asks for a later look (minReadySeconds, deadlines). A periodic
resync re-queues every key now and then: a safety net for the level-triggered
design, never the mechanism.

Threads model: `workers` threads per controller, one key at a time each; the
queue guarantees a key is never synced by two workers at once.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from corral.client import Client

from .actions import Result
from .clock import Clock
from .config import ControllersConfig
from .executor import Executor, Outcome
from .informers import InformerSet
from .recorder import Recorder
from .workqueue import WorkQueue

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every controller of one leadership term shares."""

    # A corral.client.Client, or a LocalClient with the same methods (in-process).
    client: Client | Any
    informers: InformerSet
    recorder: Recorder | None
    clock: Clock
    config: ControllersConfig
    stop: threading.Event
    pool: ThreadPoolExecutor
    identity: str = ""

    def executor(self) -> Executor:
        return Executor(self.client, self.recorder, self.stop, self.pool)


def ns_key(obj: Any) -> tuple[str, str]:
    return (obj.metadata.namespace, obj.metadata.name)


class Controller(abc.ABC):
    name = "controller"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = WorkQueue(self.name, clock=ctx.clock)
        self._threads: list[threading.Thread] = []
        self.syncs = 0
        self.setup()

    # ---- to implement ------------------------------------------------------
    @abc.abstractmethod
    def setup(self) -> None:
        """Subscribe to informers (called once, before they start)."""

    @abc.abstractmethod
    def sync(self, key: Any) -> Result | None:
        """Reconcile one key. Raise to retry with back-off."""

    def after(self, key: Any, result: Result, outcome: Outcome) -> None:
        """Hook after the actions of a sync were applied (default: nothing)."""
        return None

    def resync_keys(self) -> Iterable[Hashable]:
        """Every key worth a periodic look (default: none)."""
        return ()

    @property
    def workers(self) -> int:
        return self.ctx.config.workers

    # ---- running -------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._resync, name=f"{self.name}-resync", daemon=True)
        t.start()
        self._threads.append(t)
        for key in self.resync_keys():
            self.queue.add(key)

    def stop(self) -> None:
        self.queue.shutdown()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def _resync(self) -> None:
        period = self.ctx.config.resync_period
        while not self.ctx.stop.wait(period):
            for key in self.resync_keys():
                self.queue.add(key)

    def _work(self) -> None:
        while not self.ctx.stop.is_set():
            key = self.queue.get()
            if key is None:
                return
            try:
                self.process(key)
            except Exception:
                log.exception("%s: sync of %s failed", self.name, key)
                self.queue.retry(key)
            finally:
                self.queue.done(key)

    def process(self, key: Hashable) -> Outcome | None:
        self.syncs += 1
        result = self.sync(key)
        if result is None:
            self.queue.forget(key)
            return None
        outcome = self.apply(result)
        self.after(key, result, outcome)
        if result.actions:
            log.debug("%s %s: %s (%s)", self.name, key, result, result.why)
        if outcome.errors:
            delay = self.queue.retry(key)
            log.info("%s %s: %s; retrying in %.2fs", self.name, key,
                     "; ".join(outcome.errors), delay)
        elif outcome.stale:
            self.queue.add_after(key, 0.05)
        else:
            self.queue.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
        return outcome

    def apply(self, result: Result) -> Outcome:
        if not result.actions:
            return Outcome()
        outcome = self.ctx.executor().run(result.actions)
        known = set(self.ctx.informers.kinds())
        for kind, revision in outcome.revisions.items():
            if kind in known:
                self.ctx.informers[kind].wait_for(revision, timeout=5.0)
        return outcome
