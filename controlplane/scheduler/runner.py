"""The scheduler at run time: queues, snapshots, batches and binding writes.

- Queues (kube-scheduler's): `active` holds unbound pods to try, in arrival
  order; `unschedulable` holds pods that fit nowhere, moved back to `active`
  when something that could make them fit changes (a node added or changed, a
  pod deleted or finished, a claim changed) or after `unschedulable_retry`.
- One loop thread takes up to `scheduler_batch_size` pods, builds one snapshot
  (nodes and bound pods from the informers, plus pods *assumed* bound whose
  binding the cache does not show yet) and runs the pure `core.schedule`.
- Each binding is written by a pool of `scheduler_bind_workers` threads: first
  the pod's unbound claims (spec.volumeName "NODE:ROOT/NS/CLAIM-UID"), then the
  pod itself, an Update setting spec.nodeName conditional on the pod's
  resourceVersion. A pod already bound by someone else (another leader, a
  stale cache) fails the condition and is never bound twice. A failed binding
  forgets the assumption and requeues the pod.
- A pod that fits nowhere gets PodScheduled=False (reason Unschedulable, the
  message of `core.fit_message`) and a FailedScheduling event, written only
  when the message changes (the event is aggregated by the recorder).
PodScheduled=True is reported by the node agent with the pod's other conditions,
so a binding costs one write.

Threads model: informer threads call the handlers (quick: queue bookkeeping
under one lock); one loop thread decides; the bind pool writes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from corral.errors import Conflict, CorralError, Invalid, NotFound
from corral.v1 import core_pb2

from ..controllers.actions import event
from ..controllers.base import Context
from ..controllers.clock import to_timestamp
from ..controllers.informers import Handlers
from ..controllers.podutil import copy, get_condition, is_finished, is_terminating
from .core import Binding, Failure, schedule
from .snapshot import PodInfo, Snapshot, claim_node

log = logging.getLogger(__name__)

Key = tuple[str, str]


def _key(obj: Any) -> Key:
    return (obj.metadata.namespace, obj.metadata.name)


def wants_scheduling(pod: core_pb2.Pod) -> bool:
    return not pod.spec.node_name and not is_terminating(pod) and not is_finished(pod)


def volume_name(node: str, root: str, claim: core_pb2.PersistentVolumeClaim) -> str:
    m = claim.metadata
    return f"{node}:{root.rstrip('/')}/{m.namespace}/{m.name}-{m.uid}"


class Scheduler:
    name = "scheduler"

    def __init__(self, ctx: Context, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self._rng = rng or random.Random()
        self._lock = threading.Condition()
        self._active: dict[Key, None] = {}
        self._unschedulable: dict[Key, float] = {}
        # key -> (node, monotonic time assumed)
        self._assumed: dict[Key, tuple[str, float]] = {}
        self._in_flight: set[Key] = set()
        # Bound pods' parsed requests, by key -> (resourceVersion, node, info).
        self._infos: dict[Key, tuple[str, str, PodInfo | None]] = {}
        self._pool = ThreadPoolExecutor(ctx.config.scheduler_bind_workers,
                                        thread_name_prefix="bind")
        self._thread: threading.Thread | None = None
        # Counters (tests, metrics, the benchmark).
        self.bound = 0
        self.bind_conflicts = 0
        self.attempts = 0
        self.batches = 0
        self.setup()

    # ---- informer handlers ------------------------------------------------
    def setup(self) -> None:
        inf = self.ctx.informers
        inf["Pod"].subscribe(Handlers(self._pod_added, self._pod_updated, self._pod_deleted))
        inf["Node"].subscribe(Handlers(lambda n: self._cluster_changed(),
                                       self._node_updated, lambda n: None))
        inf["PersistentVolumeClaim"].subscribe(Handlers(
            lambda c: self._cluster_changed(), lambda o, n: self._cluster_changed(),
            lambda c: None))

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        key = _key(pod)
        with self._lock:
            if wants_scheduling(pod):
                if key not in self._assumed and key not in self._in_flight:
                    self._unschedulable.pop(key, None)
                    self._active[key] = None
                    self._lock.notify()
            else:
                self._assumed.pop(key, None)
                self._active.pop(key, None)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        key = _key(new)
        with self._lock:
            if wants_scheduling(new):
                if key in self._unschedulable and (old.spec != new.spec
                                                   or old.metadata.labels != new.metadata.labels):
                    del self._unschedulable[key]
                if key not in self._unschedulable and key not in self._assumed \
                        and key not in self._in_flight:
                    self._active[key] = None
                    self._lock.notify()
                return
            self._active.pop(key, None)
            self._unschedulable.pop(key, None)
            self._assumed.pop(key, None)
            if is_finished(new) and not is_finished(old):
                self._flush_unschedulable()

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        key = _key(pod)
        with self._lock:
            self._active.pop(key, None)
            self._unschedulable.pop(key, None)
            self._assumed.pop(key, None)
            self._infos.pop(key, None)
            if pod.spec.node_name:
                self._flush_unschedulable()

    def _node_updated(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        if (old.spec != new.spec or old.metadata.labels != new.metadata.labels
                or old.status.allocatable != new.status.allocatable
                or _ready(old) != _ready(new)):
            self._cluster_changed()

    def _cluster_changed(self) -> None:
        with self._lock:
            self._flush_unschedulable()

    def _flush_unschedulable(self, older_than: float | None = None) -> None:
        """Move unschedulable pods back to active (caller holds the lock)."""
        if not self._unschedulable:
            return
        now = time.monotonic()
        for key, since in list(self._unschedulable.items()):
            if older_than is None or now - since >= older_than:
                del self._unschedulable[key]
                self._active[key] = None
        self._lock.notify()

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        # Pods added by the initial list are queued by the handlers already.
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._lock.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> int:
        with self._lock:
            return len(self._active) + len(self._in_flight)

    def unschedulable(self) -> list[Key]:
        with self._lock:
            return sorted(self._unschedulable)

    # ---- the loop ---------------------------------------------------------------
    def _loop(self) -> None:
        stop = self.ctx.stop
        retry = self.ctx.config.unschedulable_retry
        last_flush = time.monotonic()
        while not stop.is_set():
            with self._lock:
                if not self._active:
                    self._lock.wait(0.5)
                if time.monotonic() - last_flush >= min(retry, 5.0):
                    self._flush_unschedulable(older_than=retry)
                    self._expire_assumed()
                    last_flush = time.monotonic()
                if not self._active or stop.is_set():
                    continue
            # Let a burst of arrivals gather into one batch.
            stop.wait(0.005)
            try:
                self._run_batch()
            except Exception:
                log.exception("scheduler: batch failed")
                stop.wait(0.5)

    def _expire_assumed(self) -> None:
        # A binding the cache never showed (lost event, pod recreated): forget it.
        now = time.monotonic()
        for key, (_, since) in list(self._assumed.items()):
            if now - since > 30 and key not in self._in_flight:
                del self._assumed[key]
                self._active[key] = None

    def _take(self) -> list[Key]:
        with self._lock:
            keys: list[Key] = []
            for key in list(self._active):
                if len(keys) >= self.ctx.config.scheduler_batch_size:
                    break
                del self._active[key]
                if key in self._in_flight or key in self._assumed:
                    continue
                keys.append(key)
            return keys

    def _snapshot(self) -> Snapshot:
        inf = self.ctx.informers
        infos: list[tuple[str, PodInfo | None]] = []
        seen: set[Key] = set()
        for pod in inf["Pod"].items():
            if not pod.spec.node_name or is_finished(pod):
                continue
            key = _key(pod)
            seen.add(key)
            cached = self._infos.get(key)
            rv = pod.metadata.resource_version
            if cached is None or cached[0] != rv:
                try:
                    info: PodInfo | None = PodInfo.of(pod)
                except Invalid:
                    info = None
                cached = (rv, pod.spec.node_name, info)
                self._infos[key] = cached
            infos.append((cached[1], cached[2]))
        with self._lock:
            assumed = [(k, node) for k, (node, _) in self._assumed.items() if k not in seen]
        for key, node in assumed:
            pod = inf["Pod"].get(key[1], key[0])
            if pod is None:
                continue
            try:
                infos.append((node, PodInfo.of(pod)))
            except Invalid:
                infos.append((node, None))
        return Snapshot(inf["Node"].items(), claims=inf["PersistentVolumeClaim"].items(),
                        bound_infos=infos)

    def _run_batch(self) -> None:
        keys = self._take()
        if not keys:
            return
        cache = self.ctx.informers["Pod"]
        pods = []
        for ns, name in keys:
            pod = cache.get(name, ns)
            if pod is not None and wants_scheduling(pod):
                pods.append(pod)
        if not pods:
            return
        snap = self._snapshot()
        plan = schedule(pods, snap, self._rng)
        self.batches += 1
        self.attempts += len(pods)
        now = time.monotonic()
        with self._lock:
            for b in plan.bindings:
                key = _key(b.pod)
                self._assumed[key] = (b.node, now)
                self._in_flight.add(key)
            for f in plan.failures:
                self._unschedulable[_key(f.pod)] = now
        if self.ctx.stop.is_set():
            return
        for b in plan.bindings:
            self._submit(self._bind, b)
        for f in plan.failures:
            self._submit(self._fail, f)
        log.debug("scheduler: batch of %d: %d bound, %d unschedulable", len(pods),
                  len(plan.bindings), len(plan.failures))

    def _submit(self, fn: Any, arg: Any) -> None:
        try:
            self._pool.submit(fn, arg)
        except RuntimeError:
            pass  # the pool is shut down: leadership ended

    # ---- writes ---------------------------------------------------------------------
    def _bind(self, b: Binding) -> None:
        key = _key(b.pod)
        ok = False
        try:
            if self.ctx.stop.is_set():
                return
            for claim in b.claims:
                self._bind_claim(b.pod.metadata.namespace, claim, b.node)
            pod = copy(b.pod)
            pod.spec.node_name = b.node
            self.ctx.client.update(pod)
            ok = True
            self.bound += 1
            if self.ctx.recorder is not None:
                m = b.pod.metadata
                self.ctx.recorder.emit(event(b.pod, "Scheduled",
                                             f"Successfully assigned {m.namespace}/{m.name} "
                                             f"to {b.node}"))
        except (Conflict, NotFound) as err:
            self.bind_conflicts += 1
            log.debug("scheduler: binding %s to %s refused: %s", key, b.node, err)
        except CorralError as err:
            log.info("scheduler: binding %s to %s failed: %s", key, b.node, err)
        except Exception:
            log.exception("scheduler: binding %s failed", key)
        finally:
            with self._lock:
                self._in_flight.discard(key)
                if not ok:
                    self._assumed.pop(key, None)
                    pod_now = self.ctx.informers["Pod"].get(key[1], key[0])
                    if pod_now is not None and wants_scheduling(pod_now) \
                            and not self.ctx.stop.is_set():
                        self._active[key] = None
                        self._lock.notify()

    def _bind_claim(self, namespace: str, name: str, node: str) -> None:
        claim = self.ctx.informers["PersistentVolumeClaim"].get(name, namespace)
        if claim is None:
            raise NotFound(f"persistentvolumeclaim {namespace}/{name} not found")
        if claim_node(claim):
            if claim_node(claim) != node:
                raise Conflict(f"claim {namespace}/{name} is bound to another node")
            return
        claim = copy(claim)
        claim.spec.volume_name = volume_name(node, self.ctx.config.volume_root, claim)
        out = self.ctx.client.update(claim)
        out.status.phase = "Bound"
        if not out.status.access_modes:
            out.status.access_modes.extend(out.spec.access_modes)
        if "storage" in out.spec.resources.requests and "storage" not in out.status.capacity:
            out.status.capacity["storage"] = out.spec.resources.requests["storage"]
        try:
            self.ctx.client.update_status(out)
        except CorralError as err:
            # The pvc binding controller sets the phase too: not fatal here.
            log.debug("scheduler: claim %s/%s status: %s", namespace, name, err)

    def _fail(self, f: Failure) -> None:
        if self.ctx.stop.is_set():
            return
        pod = f.pod
        cond = get_condition(pod.status.conditions, "PodScheduled")
        if cond is not None and cond.status == "False" and cond.message == f.message:
            return
        new = copy(pod)
        c = get_condition(new.status.conditions, "PodScheduled")
        now = to_timestamp(self.ctx.clock.time())
        if c is None:
            c = new.status.conditions.add(type="PodScheduled")
        if c.status != "False":
            c.last_transition_time.CopyFrom(now)
        c.status = "False"
        c.reason = "Unschedulable"
        c.message = f.message
        c.last_probe_time.CopyFrom(now)
        if not new.status.phase:
            new.status.phase = "Pending"
        try:
            self.ctx.client.update_status(new)
        except CorralError as err:
            log.debug("scheduler: status of %s: %s", _key(pod), err)
        if self.ctx.recorder is not None:
            self.ctx.recorder.emit(event(pod, "FailedScheduling", f.message, "Warning"))


def _ready(node: core_pb2.Node) -> bool:
    for c in node.status.conditions:
        if c.type == "Ready":
            return c.status == "True"
    return False


def unbound(pods: Iterable[core_pb2.Pod]) -> list[core_pb2.Pod]:
    return [p for p in pods if wants_scheduling(p)]
