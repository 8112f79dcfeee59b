"""Events a user sees in `corral describe` and `corral get events`.

Best effort, as in Kubernetes: events go into a bounded queue and one writer
thread creates them, so a slow store never holds up a reconcile; when the queue
is full new events are dropped (and counted). A repeat of the same event (same
object, type, reason and message) within `aggregate_window` seconds bumps the
count and lastTimestamp of the event already written instead of creating
another (Kubernetes' event correlator).

Threads model: `emit` is safe from any thread; one daemon writer thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass

from corral.client import Client
from corral.errors import Conflict, CorralError, NotFound
from corral.v1 import core_pb2

from .actions import EventSpec
from .clock import SYSTEM, Clock, to_timestamp

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    name: str
    namespace: str
    resource_version: str
    count: int
    first: float
    last: float


def build_event(spec: EventSpec, component: str, host: str, now: float,
                name: str = "") -> core_pb2.Event:
    """The Event object for a spec (pure)."""
    ref = spec.ref
    ev = core_pb2.Event(api_version="v1", kind="Event")
    ev.metadata.namespace = ref.namespace or "default"
    ev.metadata.name = name or f"{ref.name}.{uuid.uuid4().hex[:16]}"
    ev.involved_object.kind = ref.kind
    ev.involved_object.namespace = ref.namespace
    ev.involved_object.name = ref.name
    ev.involved_object.uid = ref.uid
    ev.involved_object.api_version = ref.api_version
    ev.reason = spec.reason
    ev.message = spec.message
    ev.type = spec.type
    ev.source.component = component
    ev.source.host = host
    ev.reporting_component = component
    ev.reporting_instance = host
    ev.first_timestamp.CopyFrom(to_timestamp(now))
    ev.last_timestamp.CopyFrom(to_timestamp(now))
    ev.count = 1
    return ev


class Recorder:
    def __init__(self, client: Client, component: str, host: str = "", *,
                 clock: Clock = SYSTEM, max_queue: int = 10_000,
                 aggregate_window: float = 600.0) -> None:
        self._client = client
        self._component = component
        self._host = host
        self._clock = clock
        self._queue: queue.Queue[EventSpec | None] = queue.Queue(max_queue)
        self._seen: dict[tuple[str, ...], _Seen] = {}
        self._window = aggregate_window
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.dropped = 0
        self.written = 0

    def start(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name=f"events-{self._component}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    def emit(self, spec: EventSpec) -> None:
        if self._stopped.is_set():
            return
        try:
            self._queue.put_nowait(spec)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was written (tests)."""
        done = threading.Event()
        deadline = self._clock.monotonic() + timeout
        while not self._queue.empty() and self._clock.monotonic() < deadline:
            done.wait(0.02)
        return self._queue.empty()

    def _run(self) -> None:
        while True:
            spec = self._queue.get()
            if spec is None or self._stopped.is_set():
                return
            try:
                self._write(spec)
            except CorralError as err:
                log.debug("event %s %s dropped: %s", spec.reason, spec.ref.name, err)
            except Exception:
                log.exception("event %s %s dropped", spec.reason, spec.ref.name)

    def _write(self, spec: EventSpec) -> None:
        now = self._clock.time()
        ref = spec.ref
        key = (ref.kind, ref.namespace, ref.name, ref.uid, spec.type, spec.reason, spec.message)
        seen = self._seen.get(key)
        if seen is not None and now - seen.first <= self._window:
            ev = build_event(spec, self._component, self._host, now, seen.name)
            ev.metadata.namespace = seen.namespace
            ev.metadata.resource_version = seen.resource_version
            ev.count = seen.count + 1
            ev.first_timestamp.CopyFrom(to_timestamp(seen.first))
            try:
                out = self._client.update(ev)
                seen.count += 1
                seen.last = now
                seen.resource_version = out.metadata.resource_version
                self.written += 1
                return
            except (Conflict, NotFound):
                pass  # deleted (TTL) or changed: start a new one
        ev = build_event(spec, self._component, self._host, now)
        out = self._client.create(ev)
        self.written += 1
        if len(self._seen) > 4096:
            # Forget the oldest half: the correlator is a cache, not a record.
            for k in sorted(self._seen, key=lambda k: self._seen[k].last)[:2048]:
                del self._seen[k]
        self._seen[key] = _Seen(out.metadata.name, out.metadata.namespace,
                                out.metadata.resource_version, 1, now, now)
