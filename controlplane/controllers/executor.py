"""Applies a reconcile's actions through the API, as any client would.

Rules it keeps:
- Nothing is written once the leadership term that made the decision ended
  (`stop` is set): a replica that lost leadership stops writing promptly, and
  whatever of its writes still reach the store are conditional.
- Updates are conditional on the resourceVersion the decision read. When one
  batch writes the same object twice (metadata, then status), the second write
  is based on the first one's result, so the chain stays a compare-and-set.
- Runs of Creates go out in slow-start batches (1, 2, 4, ...) on a thread pool,
  stopping at the first failure, as Kubernetes' controllers do: quick for 30
  pods, and a broken template costs one failed call, not 500.
- A Delete of something already gone is success.
The outcome reports the highest store revision written per kind, which the
controller then waits for in its informers before deciding again.

Threads model: `run` is called from a controller worker thread; batches of
creates run on the shared pool.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from corral import kinds
from corral.client import Client
from corral.errors import AlreadyExists, Conflict, CorralError, NotFound

from .actions import Action, Create, Delete, Emit, EventSpec, Update, UpdateStatus
from .recorder import Recorder

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    revisions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Some write was refused because the object moved on (sync again soon).
    stale: bool = False
    written: int = 0
    # Results of creates, in order (None where a create failed).
    created: list[Any] = field(default_factory=list)

    def note(self, kind: str, rv: str) -> None:
        if rv.isdigit():
            self.revisions[kind] = max(self.revisions.get(kind, 0), int(rv))
        self.written += 1

    @property
    def ok(self) -> bool:
        return not self.errors and not self.stale


class Stopped(Exception):
    """The leadership term ended while actions were being applied."""


def _fill(spec: EventSpec | None, name: str) -> EventSpec | None:
    if spec is None:
        return None
    return EventSpec(spec.ref, spec.type, spec.reason, spec.message.replace("{name}", name))


class Executor:
    def __init__(self, client: Client, recorder: Recorder | None, stop: threading.Event,
                 pool: ThreadPoolExecutor) -> None:
        self._client = client
        self._recorder = recorder
        self._stop = stop
        self._pool = pool

    def emit(self, spec: EventSpec | None) -> None:
        if spec is not None and self._recorder is not None and not self._stop.is_set():
            self._recorder.emit(spec)

    def run(self, actions: list[Action]) -> Outcome:
        out = Outcome()
        # resourceVersions our own writes produced, by object key, for chained writes.
        latest: dict[tuple[str, str, str], str] = {}
        i = 0
        try:
            while i < len(actions):
                action = actions[i]
                if isinstance(action, Create):
                    j = i
                    while j < len(actions) and isinstance(actions[j], Create):
                        j += 1
                    creates: list[Create] = actions[i:j]  # type: ignore[assignment]
                    if not self._creates(creates, out):
                        # Later actions were planned assuming these creates.
                        break
                    i = j
                    continue
                self._one(action, out, latest)
                i += 1
        except Stopped:
            out.errors.append("leadership ended")
        return out

    def _check(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def _creates(self, creates: list[Create], out: Outcome) -> bool:
        size = 1
        pos = 0
        while pos < len(creates):
            self._check()
            batch = creates[pos:pos + size]
            if len(batch) == 1:
                results = [self._create(batch[0])]
            else:
                results = list(self._pool.map(self._create, batch))
            failed = False
            for c, (obj, err) in zip(batch, results, strict=True):
                out.created.append(obj)
                if obj is not None:
                    out.note(kinds.of(obj).kind, obj.metadata.resource_version)
                    self.emit(_fill(c.event, obj.metadata.name))
                elif isinstance(err, AlreadyExists):
                    out.stale = True
                    failed = True
                else:
                    out.errors.append(f"{c}: {err}")
                    if c.failed_event is not None:
                        self.emit(EventSpec(c.failed_event.ref, c.failed_event.type,
                                            c.failed_event.reason,
                                            c.failed_event.message.replace("{error}", str(err))))
                    failed = True
            if failed:
                return False
            pos += len(batch)
            size *= 2
        return True

    def _create(self, c: Create) -> tuple[Any, CorralError | None]:
        if self._stop.is_set():
            return None, CorralError("leadership ended")
        try:
            return self._client.create(c.obj), None
        except CorralError as err:
            log.debug("%s failed: %s", c, err)
            return None, err

    def _one(self, action: Action, out: Outcome, latest: dict[tuple[str, str, str], str]) -> None:
        self._check()
        if isinstance(action, Emit):
            self.emit(action.event)
            return
        try:
            if isinstance(action, Update | UpdateStatus):
                obj = action.obj
                key = kinds.key_of(obj)
                if key in latest:
                    obj.metadata.resource_version = latest[key]
                if isinstance(action, Update):
                    result = self._client.update(obj)
                    self.emit(action.event)
                else:
                    result = self._client.update_status(obj)
                rv = result.metadata.resource_version
                latest[key] = rv
                out.note(key[0], rv)
            elif isinstance(action, Delete):
                try:
                    gone, _ = self._client.delete(
                        action.kind, action.name, action.namespace,
                        grace_period_seconds=action.grace_period_seconds,
                        propagation_policy=action.propagation_policy,
                        precondition_uid=action.uid,
                    )
                except NotFound:
                    return
                if gone is not None:
                    out.note(action.kind, gone.metadata.resource_version)
                self.emit(action.event)
        except (Conflict, NotFound) as err:
            log.debug("%s: %s", action, err)
            out.stale = True
        except CorralError as err:
            out.errors.append(f"{action}: {err}")
