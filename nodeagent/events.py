"""Kubernetes Events for what a user must see in `describe pod`: failed pulls,
bad configuration, back-off, probe failures, kills.

Best effort and off the hot path: `record()` only queues; one thread writes.
Repeats of the same (pod, reason, message) within `dedup_window` are dropped,
and when the queue is full new events are dropped (the status carries the same
facts). Threads model: any thread records; one writer thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from corral import kinds
from corral.client import Client
from corral.errors import CorralError
from corral.v1 import core_pb2

log = logging.getLogger(__name__)

COMPONENT = "corral-agent"


class EventRecorder:
    def __init__(self, client: Client, node_name: str, *, max_queue: int = 500,
                 dedup_window: float = 60.0) -> None:
        self._client = client
        self._node = node_name
        self._queue: queue.Queue[core_pb2.Event | None] = queue.Queue(maxsize=max_queue)
        self._recent: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.dedup_window = dedup_window
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self.written = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=3)

    def record(self, pod: core_pb2.Pod, etype: str, reason: str, message: str) -> None:
        now = time.time()
        key = (pod.metadata.uid, reason, message)
        with self._lock:
            last = self._recent.get(key)
            if last is not None and now - last < self.dedup_window:
                return
            self._recent[key] = now
            if len(self._recent) > 2000:
                cutoff = now - self.dedup_window
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
        ev = kinds.by_kind("Event").new()
        ev.metadata.name = f"{pod.metadata.name}.{uuid.uuid4().hex[:12]}"
        ev.metadata.namespace = pod.metadata.namespace
        ref = ev.involved_object
        ref.kind = "Pod"
        ref.namespace = pod.metadata.namespace
        ref.name = pod.metadata.name
        ref.uid = pod.metadata.uid
        ref.api_version = "v1"
        ev.reason = reason
        ev.message = message
        ev.type = etype
        ev.source.component = COMPONENT
        ev.source.host = self._node
        ev.reporting_component = COMPONENT
        ev.reporting_instance = self._node
        ts = Timestamp()
        ts.FromSeconds(int(now))
        ev.first_timestamp.CopyFrom(ts)
        ev.last_timestamp.CopyFrom(ts)
        ev.count = 1
        try:
            self._queue.put_nowait(ev)
        except queue.Full:
            log.debug("event queue full; dropped %s %s", reason, message)

    def _run(self) -> None:
        while True:
            ev = self._queue.get()
            if ev is None:
                return
            try:
                self._client.create(ev)
                self.written += 1
            except CorralError as err:
                log.debug("event %s for %s: %s", ev.reason, ev.involved_object.name, err)
