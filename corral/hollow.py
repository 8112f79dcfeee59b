"""Hollow nodes: many fake node agents in one process, as Kubernetes' kubemark.

    python -m corral.hollow --server unix:/path/api.sock --nodes 100 [--prefix hollow-]

A `HollowCluster` registers N Nodes (capacity from its options, labels
kubernetes.io/hostname and corral.dev/hollow=true), renews a Lease
`corral-system/NODE` for each every `lease_interval` seconds, and plays the
node agent for every pod bound to one of them, through the same API a real
agent uses, without running anything:
- a bound pod becomes Running, with PodScheduled/Initialized/ContainersReady/
  Ready conditions, a pod IP from its node's podCIDR, hostIP and container
  statuses, after `start_delay` seconds;
- a pod being deleted is removed (Delete with grace 0), as an agent does once
  its containers stopped;
- annotations on a pod (or its template) script its fake containers, so tests
  can drive readiness, minReadySeconds and Jobs:
      corral.dev/hollow-start-seconds     delay before Running
      corral.dev/hollow-ready             "false": never Ready
      corral.dev/hollow-ready-seconds     Ready that long after starting
      corral.dev/hollow-exit-seconds      the container exits after running that long
      corral.dev/hollow-exit-code         its exit code (default 0); with
                                          restartPolicy Never the pod then Succeeds
                                          or Fails, otherwise it restarts (restartCount)
`kill(node)` stops a node's heartbeats and its pod handling (a host that lost
power); `revive(node)` brings it back.

Threads model: one informer thread (pods) queues work; `workers` threads apply
the pure `plan_pod` decisions; one heartbeat thread renews leases (with a small
pool) and node statuses. All writes are conditional on the version read.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import itertools
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral.client import Client
from corral.errors import AlreadyExists, Conflict, CorralError, NotFound
from corral.informer import Informer
from corral.v1 import batch_pb2, core_pb2

log = logging.getLogger("corral.hollow")

LEASE_NAMESPACE = "corral-system"
HOLLOW_LABEL = "corral.dev/hollow"
A_START = "corral.dev/hollow-start-seconds"
A_READY = "corral.dev/hollow-ready"
A_READY_AFTER = "corral.dev/hollow-ready-seconds"
A_EXIT_AFTER = "corral.dev/hollow-exit-seconds"
A_EXIT_CODE = "corral.dev/hollow-exit-code"


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.seconds = int(seconds)
    ts.nanos = int((seconds - int(seconds)) * 1e9)
    return ts


def _float(annotations: Any, key: str, default: float | None) -> float | None:
    try:
        return float(annotations[key]) if key in annotations else default
    except ValueError:
        return default


# ---------------------------------------------------------------- pure decisions
@dataclass
class PodState:
    """What the hollow agent remembers about one pod (by uid)."""

    seen: float  # when it was first seen bound here
    ip: str
    started: float | None = None  # when the current container run started
    restarts: int = 0
    finished: str = ""  # "Succeeded" / "Failed" once done
    exit_code: int = 0


@dataclass
class PodPlan:
    status: core_pb2.PodStatus | None = None  # to write (None: nothing to change)
    delete: bool = False
    later: float | None = None  # look again after this many seconds


def _condition(status: core_pb2.PodStatus, type_: str, ok: bool, since: float,
               old: core_pb2.PodStatus) -> None:
    value = "True" if ok else "False"
    c = status.conditions.add(type=type_, status=value)
    for prev in old.conditions:
        if prev.type == type_ and prev.status == value:
            c.last_transition_time.CopyFrom(prev.last_transition_time)
            return
    c.last_transition_time.CopyFrom(_ts(since))


def render_status(pod: core_pb2.Pod, st: PodState, host_ip: str, now: float) -> core_pb2.PodStatus:
    """The status a node agent would report for this pod in this state (pure)."""
    a = pod.metadata.annotations
    old = pod.status
    s = core_pb2.PodStatus()
    s.host_ip = host_ip
    s.pod_ip = st.ip
    s.pod_ips.add(ip=st.ip)
    s.start_time.CopyFrom(old.start_time if old.start_time.seconds else _ts(st.seen))
    running = st.started is not None and not st.finished
    ready_after = _float(a, A_READY_AFTER, 0.0) or 0.0
    ready = running and a.get(A_READY, "true") != "false" and \
        st.started is not None and now >= st.started + ready_after
    if st.finished:
        s.phase = st.finished
    elif running:
        s.phase = "Running"
    else:
        s.phase = "Pending"
    _condition(s, "PodScheduled", True, st.seen, old)
    _condition(s, "Initialized", True, st.seen, old)
    _condition(s, "ContainersReady", ready, now, old)
    _condition(s, "Ready", ready, now, old)
    for c in pod.spec.containers:
        cs = s.container_statuses.add(name=c.name, image=c.image, ready=ready,
                                      restart_count=st.restarts,
                                      image_id=f"hollow://{c.image}",
                                      container_id=f"hollow://{pod.metadata.uid}/{c.name}")
        cs.started = running
        if st.finished:
            t = cs.state.terminated
            t.exit_code = st.exit_code
            t.reason = "Completed" if st.exit_code == 0 else "Error"
            t.finished_at.CopyFrom(_ts(now) if not _finished_at(old) else _finished_at(old))
        elif running:
            assert st.started is not None
            cs.state.running.started_at.CopyFrom(_ts(st.started))
        else:
            cs.state.waiting.reason = "ContainerCreating"
    return s


def _finished_at(old: core_pb2.PodStatus) -> Timestamp | None:
    for cs in old.container_statuses:
        if cs.state.terminated.finished_at.seconds:
            return cs.state.terminated.finished_at
    return None


def _same(a: core_pb2.PodStatus, b: core_pb2.PodStatus) -> bool:
    return a == b


def plan_pod(pod: core_pb2.Pod, st: PodState, host_ip: str, now: float,
             start_delay: float) -> PodPlan:
    """Advance a pod's fake lifecycle to `now` (mutates `st`) and say what to write."""
    if pod.metadata.deletion_timestamp.seconds:
        return PodPlan(delete=True)
    a = pod.metadata.annotations
    later: list[float] = []
    if st.finished:
        pass
    elif st.started is None:
        start_at = st.seen + (_float(a, A_START, start_delay) or 0.0)
        if now >= start_at:
            st.started = now
        else:
            later.append(start_at - now)
    if st.started is not None and not st.finished:
        exit_after = _float(a, A_EXIT_AFTER, None)
        if exit_after is not None:
            end = st.started + exit_after
            if now >= end:
                code = int(_float(a, A_EXIT_CODE, 0.0) or 0)
                policy = pod.spec.restart_policy or "Always"
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    st.finished = "Succeeded" if code == 0 else "Failed"
                    st.exit_code = code
                else:
                    st.restarts += 1
                    st.started = now
                    later.append(exit_after)
            else:
                later.append(end - now)
        ready_after = _float(a, A_READY_AFTER, None)
        if ready_after is not None and st.started is not None and now < st.started + ready_after:
            later.append(st.started + ready_after - now)
    status = render_status(pod, st, host_ip, now)
    plan = PodPlan(later=min(later) if later else None)
    if not _same(status, pod.status):
        plan.status = status
    return plan


# ---------------------------------------------------------------- the agent
@dataclass
class HollowConfig:
    endpoints: Sequence[str]
    nodes: int = 10
    prefix: str = "hollow-"
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    lease_interval: float = 2.0
    status_interval: float = 60.0
    lease_namespace: str = LEASE_NAMESPACE
    start_delay: float = 0.0
    workers: int = 8
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class HollowNode:
    name: str
    host_ip: str
    cidr: ipaddress.IPv4Network | None = None
    next_ip: int = 2
    alive: bool = True
    lease: batch_pb2.Lease | None = None
    node: core_pb2.Node | None = None
    free_ips: list[str] = field(default_factory=list)

    def allocate_ip(self) -> str:
        if self.free_ips:
            return self.free_ips.pop()
        if self.cidr is None:
            return ""
        ip = str(self.cidr.network_address + self.next_ip)
        self.next_ip += 1
        return ip


class _Timers:
    """Keys due later; a thread moves them into the work queue when due."""

    def __init__(self, fire: Any) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._fire = fire
        self._stop = False

    def after(self, delay: float, key: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def run(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if due:
                    self._cond.release()
                    try:
                        for key in due:
                            self._fire(key)
                    finally:
                        self._cond.acquire()
                    continue
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()


class HollowCluster:
    def __init__(self, cfg: HollowConfig, client: Client | None = None) -> None:
        self.cfg = cfg
        self.client = client or Client(list(cfg.endpoints))
        self.nodes: dict[str, HollowNode] = {}
        for i in range(cfg.nodes):
            name = f"{cfg.prefix}{i}"
            self.nodes[name] = HollowNode(name, f"10.255.{i // 250}.{i % 250 + 1}")
        self._states: dict[str, PodState] = {}
        self._lock = threading.Lock()
        self._queue: list[tuple[str, str]] = []
        self._queued: set[tuple[str, str]] = set()
        self._qcond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers = _Timers(self._enqueue)
        self._informer = Informer(self.client, "Pod", on_add=self._pod_event,
                                  on_update=lambda old, new: self._pod_event(new),
                                  on_delete=self._pod_gone, name="hollow-pods")
        self._node_informer = Informer(self.client, "Node", on_add=self._node_changed,
                                       on_update=lambda old, new: self._node_changed(new),
                                       name="hollow-nodes")
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="hollow-lease")
        # Counters.
        self.status_writes = 0
        self.deletes = 0
        self.lease_renewals = 0

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> HollowCluster:
        list(self._pool.map(self._register, list(self.nodes.values())))
        list(self._pool.map(self._renew, list(self.nodes.values())))
        self._informer.start()
        self._node_informer.start()
        self._spawn(self._timers.run, "hollow-timers")
        for i in range(self.cfg.workers):
            self._spawn(self._work, f"hollow-{i}")
        self._spawn(self._heartbeats, "hollow-heartbeat")
        log.info("hollow: %d nodes registered", len(self.nodes))
        return self

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._qcond:
            self._qcond.notify_all()
        self._timers.stop()
        self._informer.stop()
        self._node_informer.stop()
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.stop()
        self.client.close()

    def __enter__(self) -> HollowCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return self._informer.wait_synced(timeout)

    def kill(self, node: str) -> None:
        """The node goes silent: no heartbeats, its pods are left as they are."""
        self.nodes[node].alive = False

    def revive(self, node: str) -> None:
        n = self.nodes[node]
        n.alive = True
        self._pool.submit(self._renew, n)
        for pod in self._informer.items():
            if pod.spec.node_name == node:
                self._enqueue((pod.metadata.namespace, pod.metadata.name))

    def delete_nodes(self) -> None:
        """Remove the Node and Lease objects this process registered."""
        for n in self.nodes.values():
            for kind, ns in (("Lease", self.cfg.lease_namespace), ("Node", "")):
                try:
                    self.client.delete(kind, n.name, ns)
                except NotFound:
                    pass

    # ---- nodes -------------------------------------------------------------------------
    def _node_object(self, n: HollowNode) -> core_pb2.Node:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = n.name
        node.metadata.labels.update({"kubernetes.io/hostname": n.name, "kubernetes.io/os":
                                     "linux", HOLLOW_LABEL: "true", **self.cfg.labels})
        res = {"cpu": self.cfg.cpu, "memory": self.cfg.memory, "pods": str(self.cfg.pods)}
        node.status.capacity.update(res)
        node.status.allocatable.update(res)
        node.status.addresses.add(type="InternalIP", address=n.host_ip)
        node.status.addresses.add(type="Hostname", address=n.name)
        node.status.node_info.kubelet_version = "corral-hollow/0.1.0"
        node.status.node_info.operating_system = "linux"
        self._ready(node, time.time())
        return node

    @staticmethod
    def _ready(node: core_pb2.Node, now: float) -> None:
        for c in list(node.status.conditions):
            if c.type == "Ready":
                node.status.conditions.remove(c)
        c = node.status.conditions.add(type="Ready", status="True", reason="KubeletReady",
                                       message="kubelet is posting ready status")
        c.last_heartbeat_time.CopyFrom(_ts(now))
        c.last_transition_time.CopyFrom(_ts(now))

    def _register(self, n: HollowNode) -> None:
        want = self._node_object(n)
        for attempt in range(20):
            try:
                node = self.client.create(want)
                break
            except AlreadyExists:
                node = self.client.get("Node", n.name)
                break
            except Conflict:
                # Pod CIDR allocation collided with concurrent registrations: again.
                if attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if not node.spec.pod_cidr:
            for _ in range(50):
                node = self.client.get("Node", n.name)
                if node.spec.pod_cidr:
                    break
                time.sleep(0.1)
        if node.spec.pod_cidr:
            n.cidr = ipaddress.IPv4Network(node.spec.pod_cidr)
        status_node = core_pb2.Node()
        status_node.CopyFrom(node)
        status_node.status.CopyFrom(want.status)
        n.node = self.client.update_status(status_node)

    def _renew(self, n: HollowNode) -> None:
        if not n.alive or self._stop.is_set():
            return
        now = time.time()
        for _ in range(3):
            lease = n.lease
            try:
                if lease is None:
                    try:
                        lease = self.client.get("Lease", n.name, self.cfg.lease_namespace)
                    except NotFound:
                        fresh = batch_pb2.Lease(api_version="coordination.k8s.io/v1",
                                                kind="Lease")
                        fresh.metadata.name = n.name
                        fresh.metadata.namespace = self.cfg.lease_namespace
                        fresh.spec.holder_identity = n.name
                        fresh.spec.lease_duration_seconds = 40
                        fresh.spec.acquire_time.CopyFrom(_ts(now))
                        fresh.spec.renew_time.CopyFrom(_ts(now))
                        n.lease = self.client.create(fresh)
                        self.lease_renewals += 1
                        return
                new = batch_pb2.Lease()
                new.CopyFrom(lease)
                new.spec.renew_time.CopyFrom(_ts(now))
                n.lease = self.client.update(new)
                self.lease_renewals += 1
                return
            except (Conflict, NotFound, AlreadyExists):
                n.lease = None
            except CorralError as err:
                log.info("hollow: lease of %s: %s", n.name, err)
                return

    def _node_status(self, n: HollowNode) -> None:
        if not n.alive or self._stop.is_set():
            return
        for _ in range(3):
            try:
                node = n.node or self.client.get("Node", n.name)
                new = core_pb2.Node()
                new.CopyFrom(node)
                self._ready(new, time.time())
                n.node = self.client.update_status(new)
                return
            except (Conflict, NotFound):
                n.node = None
            except CorralError as err:
                log.info("hollow: status of %s: %s", n.name, err)
                return

    def _heartbeats(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval
        while not self._stop.wait(self.cfg.lease_interval):
            nodes = list(self.nodes.values())
            list(self._pool.map(self._renew, nodes))
            if time.monotonic() >= next_status:
                list(self._pool.map(self._node_status, nodes))
                next_status = time.monotonic() + self.cfg.status_interval

    def _node_changed(self, node: core_pb2.Node) -> None:
        # The node lifecycle controller marked a live node Unknown (e.g. it was
        # killed and revived): report Ready at once, not at the next status round.
        n = self.nodes.get(node.metadata.name)
        if n is None or not n.alive or self._stop.is_set():
            return
        if any(c.type == "Ready" and c.status != "True" for c in node.status.conditions):
            n.node = node
            try:
                self._pool.submit(self._node_status, n)
            except RuntimeError:
                pass  # stopping

    # ---- pods ----------------------------------------------------------------------------
    def _pod_event(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name in self.nodes:
            self._enqueue((pod.metadata.namespace, pod.metadata.name))

    def _pod_gone(self, pod: core_pb2.Pod) -> None:
        with self._lock:
            st = self._states.pop(pod.metadata.uid, None)
        n = self.nodes.get(pod.spec.node_name)
        if st is not None and n is not None and st.ip:
            n.free_ips.append(st.ip)

    def _enqueue(self, key: tuple[str, str]) -> None:
        with self._qcond:
            if key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                self._qcond.notify()

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._qcond:
                while not self._queue and not self._stop.is_set():
                    self._qcond.wait(0.5)
                if self._stop.is_set():
                    return
                key = self._queue.pop(0)
                self._queued.discard(key)
            try:
                self._handle(key)
            except CorralError as err:
                log.debug("hollow: %s: %s", key, err)
                self._timers.after(0.2, key)
            except Exception:
                log.exception("hollow: %s failed", key)

    def _handle(self, key: tuple[str, str]) -> None:
        pod = self._informer.get(key[1], key[0])
        if pod is None:
            return
        n = self.nodes.get(pod.spec.node_name)
        if n is None or not n.alive:
            return
        now = time.time()
        with self._lock:
            st = self._states.get(pod.metadata.uid)
            if st is None:
                st = PodState(seen=now, ip=n.allocate_ip())
                self._states[pod.metadata.uid] = st
        plan = plan_pod(pod, st, n.host_ip, now, self.cfg.start_delay)
        if plan.delete:
            try:
                self.client.delete("Pod", pod.metadata.name, pod.metadata.namespace,
                                   grace_period_seconds=0, precondition_uid=pod.metadata.uid)
                self.deletes += 1
            except NotFound:
                pass
            return
        if plan.status is not None:
            new = core_pb2.Pod()
            new.CopyFrom(pod)
            new.status.CopyFrom(plan.status)
            try:
                self.client.update_status(new)
                self.status_writes += 1
            except (Conflict, NotFound):
                self._timers.after(0.05, key)
                return
        if plan.later is not None:
            self._timers.after(plan.later + 0.01, key)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corral-hollow",
                                description="Simulate many Corral nodes in one process "
                                            "(kubemark's hollow nodes).")
    p.add_argument("--server", required=True, help="control plane endpoints, comma-separated")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--prefix", default="hollow-")
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--pods", type=int, default=110)
    p.add_argument("--lease-interval", type=float, default=2.0)
    p.add_argument("--start-delay", type=float, default=0.0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = HollowConfig(endpoints=args.server.split(","), nodes=args.nodes, prefix=args.prefix,
                       cpu=args.cpu, memory=args.memory, pods=args.pods,
                       lease_interval=args.lease_interval, start_delay=args.start_delay)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    cluster = HollowCluster(cfg)
    try:
        cluster.start()
    except CorralError as err:
        print(f"corral-hollow: {err}", file=sys.stderr)
        return 1
    try:
        done.wait()
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
