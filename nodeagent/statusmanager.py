"""Uploads pod statuses: only on change, compare-and-set, retried (kubelet's status manager).

Pod workers `set()` the status they computed; the manager remembers the last
status it wrote per pod and queues a write only when the new one differs. A
write reads the pod (the informer's copy, or the one the last write returned,
whichever is newer), and if the store already holds exactly that status it
writes nothing; otherwise UpdateStatus with the pod's resourceVersion (CAS).
A conflict re-reads the pod from the API and tries again; a pod that is gone
(or now has another uid) is forgotten.

What the manager last wrote is not the truth once someone else wrote: the node
lifecycle controller marks a silent node's pods not Ready, and when the node is
back nothing on the node changed, so a worker computes the same status and
`set()` sees nothing new. So the store's copy is what counts: `observe()` (the
informer's view of a pod) queues a write when the store holds another status
than the one computed, and every `resync_period` (the agent's status period)
all pods are compared with the store's copy again, in case a watch event was
missed. Both only queue: `_write` compares with the newest copy it knows and
writes nothing when they match, so neither loops on the agent's own writes.

Threads model: a WorkQueue with `workers` threads, so thirty new pods do not
wait for each other's Raft commits; one pod's writes are serialized.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.client import Client
from corral.errors import Conflict, CorralError, NotFound
from corral.v1 import core_pb2
from nodeagent.workqueue import WorkQueue

log = logging.getLogger(__name__)

MAX_CONFLICTS = 5


@dataclass
class _Entry:
    namespace: str
    name: str
    status: core_pb2.PodStatus
    written: bytes = b""


def _rv(pod: Any) -> int:
    try:
        return int(pod.metadata.resource_version)
    except (ValueError, AttributeError):
        return 0


class StatusManager:
    def __init__(self, client: Client, cached_pod: Callable[[str, str], core_pb2.Pod | None], *,
                 workers: int = 4, resync_period: float = 30.0) -> None:
        self._client = client
        self._cached_pod = cached_pod
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._latest: dict[str, core_pb2.Pod] = {}
        self._queue = WorkQueue("status", self._write, workers=workers, retry_delay=1.0)
        self.resync_period = resync_period
        self._stop = threading.Event()
        self.writes = 0
        self.conflicts = 0

    def start(self) -> None:
        self._queue.start()
        threading.Thread(target=self._resync_loop, name="status-resync", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.stop()

    def set(self, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> None:
        uid = pod.metadata.uid
        data = status.SerializeToString(deterministic=True)
        with self._lock:
            entry = self._entries.get(uid)
            if entry is not None and entry.written == data:
                entry.status = status
                return
            if entry is None:
                entry = _Entry(pod.metadata.namespace, pod.metadata.name, status)
                self._entries[uid] = entry
            else:
                entry.status = status
        log.debug("status of pod %s/%s changed (%s): queued", pod.metadata.namespace,
                  pod.metadata.name, status.phase)
        self._queue.add(uid)

    def observe(self, pod: core_pb2.Pod) -> None:
        """The store's copy of a pod (from a watch event): repair its status if it
        is not the one this agent computed."""
        uid = pod.metadata.uid
        with self._lock:
            entry = self._entries.get(uid)
            if entry is None:
                return
            wanted = entry.status.SerializeToString(deterministic=True)
        if pod.status.SerializeToString(deterministic=True) != wanted:
            log.debug("status of pod %s/%s in the store is not ours: queued",
                      pod.metadata.namespace, pod.metadata.name)
            self._queue.add(uid)

    def get(self, uid: str) -> core_pb2.PodStatus | None:
        with self._lock:
            entry = self._entries.get(uid)
            return entry.status if entry else None

    def forget(self, uid: str) -> None:
        with self._lock:
            self._entries.pop(uid, None)
            self._latest.pop(uid, None)

    def idle(self) -> bool:
        return self._queue.idle()

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.resync_period):
            with self._lock:
                uids = list(self._entries)
            for uid in uids:
                self._queue.add(uid)

    def _current(self, uid: str, entry: _Entry) -> core_pb2.Pod | None:
        cached = self._cached_pod(entry.namespace, entry.name)
        with self._lock:
            latest = self._latest.get(uid)
        if cached is not None and cached.metadata.uid != uid:
            cached = None
        if latest is not None and (cached is None or _rv(latest) > _rv(cached)):
            return latest
        return cached

    def _write(self, key: Any) -> None:
        uid = str(key)
        with self._lock:
            entry = self._entries.get(uid)
            if entry is None:
                return
            status = entry.status
        data = status.SerializeToString(deterministic=True)
        pod = self._current(uid, entry)
        for _attempt in range(MAX_CONFLICTS):
            if pod is None:
                try:
                    pod = self._client.get("Pod", entry.name, entry.namespace)
                except NotFound:
                    self.forget(uid)
                    return
                if pod.metadata.uid != uid:
                    self.forget(uid)
                    return
            if pod.status.SerializeToString(deterministic=True) == data:
                log.debug("status of pod %s/%s already in the store", entry.namespace,
                          entry.name)
                self._mark_written(uid, data, pod)
                return
            new = core_pb2.Pod()
            new.CopyFrom(pod)
            new.status.CopyFrom(status)
            try:
                written = self._client.update_status(new)
            except Conflict:
                self.conflicts += 1
                pod = None
                continue
            except NotFound:
                self.forget(uid)
                return
            except CorralError as err:
                log.warning("status of pod %s/%s: %s", entry.namespace, entry.name, err)
                raise
            self.writes += 1
            log.debug("status of pod %s/%s written: %s (rv %s)", entry.namespace, entry.name,
                      status.phase, written.metadata.resource_version)
            self._mark_written(uid, data, written)
            return
        raise Conflict(f"status of pod {entry.namespace}/{entry.name}: "
                       f"{MAX_CONFLICTS} conflicts in a row")

    def _mark_written(self, uid: str, data: bytes, pod: core_pb2.Pod) -> None:
        with self._lock:
            entry = self._entries.get(uid)
            if entry is None:
                return
            entry.written = data
            self._latest[uid] = pod
            if entry.status.SerializeToString(deterministic=True) != data:
                # A newer status arrived while we wrote: write again.
                self._queue.add(uid)
