"""The Node object of this host: registration, Lease renewals, status with psutil.

- Registration creates the Node (labels kubernetes.io/hostname, os, arch plus the
  config's; the config's taints; addresses; capacity and allocatable from psutil
  minus the reservation; nodeInfo; the agent's port) or, when it exists (an agent
  restart), adds the config's labels and keeps everything else, podCIDR included.
  The control plane allocates the pod CIDR on create; registration returns it.
- The Lease `corral-system/<node>` (holderIdentity = node name) is renewed every
  `lease_period`: cheap heartbeats, as Kubernetes' node leases.
- Node status every `status_period` (and at once when a condition flips): usage
  (CPU %, memory, disk of the state folder), conditions Ready, MemoryPressure,
  DiskPressure, PIDPressure and RuntimeUnhealthy (Podman not answering), written
  with compare-and-set and re-read on conflict.

Pure: `capacity`, `conditions`. Threads model: one thread for the lease and one
for status; `kick()` from any thread asks for a status update now.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from google.protobuf.timestamp_pb2 import Timestamp

from corral import kinds, quantity
from corral.client import Client
from corral.errors import AlreadyExists, Conflict, CorralError, NotFound
from corral.v1 import batch_pb2, core_pb2, meta_pb2
from nodeagent.config import AgentConfig

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "corral-system"
VERSION = "corral-agent/0.1.0"
MAX_PODS = 110
# Kubelet's default hard eviction thresholds.
MEMORY_AVAILABLE_MIN = 100 * 1024 * 1024
DISK_AVAILABLE_MIN_FRACTION = 0.10
PID_AVAILABLE_MIN_FRACTION = 0.10

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x"}


@dataclass(frozen=True)
class Sample:
    """What psutil and the runtime say now."""

    cpu_percent: float
    memory_total: int
    memory_available: int
    disk_total: int
    disk_available: int
    pids_used: int
    pids_max: int
    runtime_ok: bool
    runtime_message: str
    network_ok: bool = True
    network_message: str = ""


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(seconds))
    return ts


def capacity(cpu_count: int, memory_total: int, disk_total: int) -> dict[str, str]:
    return {
        "cpu": str(cpu_count),
        "memory": f"{memory_total // 1024}Ki",
        "ephemeral-storage": f"{disk_total // 1024}Ki",
        "pods": str(MAX_PODS),
    }


def allocatable(cap: Mapping[str, str], reserved_cpu_millis: int, reserved_memory: int
                ) -> dict[str, str]:
    out = dict(cap)
    cpu = max(0, quantity.cpu_millis(cap["cpu"]) - reserved_cpu_millis)
    out["cpu"] = quantity.format_cpu(cpu)
    mem = max(0, quantity.bytes_of(cap["memory"]) - reserved_memory)
    out["memory"] = f"{mem // 1024}Ki"
    return out


def conditions(sample: Sample, previous: Mapping[str, meta_pb2.Condition], now: float
               ) -> list[meta_pb2.Condition]:
    """Kubelet's node conditions, plus RuntimeUnhealthy."""
    mem_low = sample.memory_available < MEMORY_AVAILABLE_MIN
    disk_low = sample.disk_total > 0 and \
        sample.disk_available < DISK_AVAILABLE_MIN_FRACTION * sample.disk_total
    pid_low = sample.pids_max > 0 and \
        sample.pids_max - sample.pids_used < PID_AVAILABLE_MIN_FRACTION * sample.pids_max
    ready = sample.runtime_ok and sample.network_ok
    if ready:
        ready_reason, ready_msg = "KubeletReady", "corral-agent is posting ready status"
    elif not sample.runtime_ok:
        ready_reason, ready_msg = "KubeletNotReady", \
            f"container runtime is down: {sample.runtime_message}"
    else:
        ready_reason, ready_msg = "KubeletNotReady", \
            f"network is not ready: {sample.network_message}"
    table = [
        ("Ready", ready, ready_reason, ready_msg),
        ("MemoryPressure", mem_low,
         "KubeletHasInsufficientMemory" if mem_low else "KubeletHasSufficientMemory",
         "node has insufficient memory available" if mem_low
         else "node has sufficient memory available"),
        ("DiskPressure", disk_low,
         "KubeletHasDiskPressure" if disk_low else "KubeletHasNoDiskPressure",
         "node has disk pressure" if disk_low else "node has no disk pressure"),
        ("PIDPressure", pid_low,
         "KubeletHasInsufficientPID" if pid_low else "KubeletHasSufficientPID",
         "node has insufficient PID available" if pid_low
         else "node has sufficient PID available"),
        ("RuntimeUnhealthy", not sample.runtime_ok,
         "PodmanNotResponding" if not sample.runtime_ok else "PodmanResponding",
         sample.runtime_message if not sample.runtime_ok else "podman answers"),
    ]
    out = []
    for ctype, true, reason, message in table:
        status = "True" if true else "False"
        cond = meta_pb2.Condition(type=ctype, status=status, reason=reason, message=message)
        cond.last_heartbeat_time.CopyFrom(_ts(now))
        before = previous.get(ctype)
        if before is not None and before.status == status and \
                before.HasField("last_transition_time"):
            cond.last_transition_time.CopyFrom(before.last_transition_time)
        else:
            cond.last_transition_time.CopyFrom(_ts(now))
        out.append(cond)
    return out


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def os_image() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def architecture() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def take_sample(state_dir: str, runtime_health: Callable[[], tuple[bool, str]],
                network_health: Callable[[], tuple[bool, str]] | None = None) -> Sample:
    vm = psutil.virtual_memory()
    try:
        du = psutil.disk_usage(state_dir)
        disk_total, disk_free = du.total, du.free
    except OSError:
        disk_total = disk_free = 0
    try:
        pid_max = int(_read_first_line("/proc/sys/kernel/pid_max") or 0)
    except ValueError:
        pid_max = 0
    ok, message = runtime_health()
    net_ok, net_msg = network_health() if network_health else (True, "")
    return Sample(cpu_percent=psutil.cpu_percent(interval=None), memory_total=vm.total,
                  memory_available=vm.available, disk_total=disk_total,
                  disk_available=disk_free, pids_used=len(psutil.pids()), pids_max=pid_max,
                  runtime_ok=ok, runtime_message=message, network_ok=net_ok,
                  network_message=net_msg)


class NodeRegistration:
    def __init__(self, cfg: AgentConfig, client: Client, *,
                 runtime_version: Callable[[], str],
                 runtime_health: Callable[[], tuple[bool, str]],
                 network_health: Callable[[], tuple[bool, str]] | None = None) -> None:
        self.cfg = cfg
        self._client = client
        self._runtime_version = runtime_version
        self._runtime_health = runtime_health
        self._network_health = network_health
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._node: core_pb2.Node | None = None
        self._lease: batch_pb2.Lease | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_conditions: tuple[tuple[str, str], ...] = ()
        self._runtime_version_text = ""
        self.lease_renewals = 0
        self.status_updates = 0
        # Monotonic time at which the last acknowledged heartbeat was sent (fence.py);
        # before the first one, the agent's start (the last one was earlier still).
        self._heartbeat_sent = time.monotonic()
        psutil.cpu_percent(interval=None)  # the first call only primes the counter

    @property
    def node(self) -> core_pb2.Node | None:
        with self._lock:
            return self._node

    @property
    def pod_cidr(self) -> str:
        node = self.node
        return node.spec.pod_cidr if node is not None else ""

    # ---- registration -----------------------------------------------------------
    def _labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.cfg.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": architecture(),
        }
        labels.update(self.cfg.labels)
        return labels

    def _node_info(self) -> core_pb2.NodeSystemInfo:
        if not self._runtime_version_text:
            try:
                self._runtime_version_text = self._runtime_version()
            except Exception:
                pass  # asked again on the next status update
        runtime = f"podman://{self._runtime_version_text or 'unknown'}"
        return core_pb2.NodeSystemInfo(
            machine_id=_read_first_line("/etc/machine-id"),
            boot_id=_read_first_line("/proc/sys/kernel/random/boot_id"),
            kernel_version=platform.release(),
            os_image=os_image(),
            container_runtime_version=runtime,
            kubelet_version=VERSION,
            operating_system="linux",
            architecture=architecture(),
        )

    def _fill_status(self, node: core_pb2.Node, now: float) -> None:
        sample = take_sample(self.cfg.state_dir, self._runtime_health, self._network_health)
        cap = capacity(psutil.cpu_count() or 1, sample.memory_total, sample.disk_total)
        st = node.status
        previous = {c.type: c for c in st.conditions}
        st.capacity.clear()
        st.capacity.update(cap)
        st.allocatable.clear()
        st.allocatable.update(allocatable(cap, self.cfg.reserved_cpu_millis,
                                          self.cfg.reserved_memory_bytes))
        del st.addresses[:]
        st.addresses.add(type="InternalIP", address=self.cfg.node_ip)
        st.addresses.add(type="Hostname", address=self.cfg.node_name)
        st.node_info.CopyFrom(self._node_info())
        st.daemon_endpoints.kubelet_endpoint.port = self.cfg.agent_port
        conds = conditions(sample, previous, now)
        del st.conditions[:]
        st.conditions.extend(conds)
        self._last_conditions = tuple((c.type, c.status) for c in conds)
        st.usage.cpu_percent = round(sample.cpu_percent, 1)
        st.usage.memory_used_bytes = sample.memory_total - sample.memory_available
        st.usage.memory_available_bytes = sample.memory_available
        st.usage.disk_used_bytes = sample.disk_total - sample.disk_available
        st.usage.disk_available_bytes = sample.disk_available
        st.usage.timestamp.CopyFrom(_ts(now))

    def register(self, wait_cidr: float = 60.0) -> core_pb2.Node:
        """Create or adopt the Node; returns it once it has a pod CIDR. Retries
        until the control plane answers (or `stop()`)."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                node = self._register_once()
                deadline = time.monotonic() + wait_cidr
                while not node.spec.pod_cidr and time.monotonic() < deadline:
                    self._stop.wait(0.5)
                    node = self._client.get("Node", self.cfg.node_name)
                if not node.spec.pod_cidr:
                    raise CorralError(f"node {self.cfg.node_name} got no podCIDR from the "
                                      "control plane")
                with self._lock:
                    self._node = node
                self._write_status()
                log.info("registered node %s (podCIDR %s, InternalIP %s)", self.cfg.node_name,
                         node.spec.pod_cidr, self.cfg.node_ip)
                return self.node  # type: ignore[return-value]
            except CorralError as err:
                log.warning("node registration failed: %s; retrying in %.1fs", err, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        raise CorralError("stopped before the node was registered")

    def _register_once(self) -> core_pb2.Node:
        node = kinds.by_kind("Node").new()
        node.metadata.name = self.cfg.node_name
        node.metadata.labels.update(self._labels())
        for t in self.cfg.taints:
            node.spec.taints.add(key=t.key, value=t.value, effect=t.effect)
        self._fill_status(node, time.time())
        try:
            created: core_pb2.Node = self._client.create(node)
            return created
        except AlreadyExists:
            pass
        for _ in range(10):
            existing: core_pb2.Node = self._client.get("Node", self.cfg.node_name)
            wanted = self._labels()
            if all(existing.metadata.labels.get(k) == v for k, v in wanted.items()):
                return existing
            existing.metadata.labels.update(wanted)
            try:
                updated: core_pb2.Node = self._client.update(existing)
                return updated
            except Conflict:
                continue
        raise Conflict(f"node {self.cfg.node_name}: labels could not be updated")

    # ---- loops -------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._lease_loop, "node-lease"), (self._status_loop, "node-status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        for t in self._threads:
            t.join(timeout=5)

    def kick(self) -> None:
        self._kick.set()

    def last_heartbeat(self) -> float:
        """When (time.monotonic()) the last heartbeat the control plane acknowledged was
        sent: a Lease renewal or a Node status write (the lifecycle controller counts
        both). The control plane saw it no earlier than that."""
        with self._lock:
            return self._heartbeat_sent

    def _acknowledged(self, sent: float) -> None:
        with self._lock:
            self._heartbeat_sent = max(self._heartbeat_sent, sent)

    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.renew_lease()
            except CorralError as err:
                log.warning("lease renewal failed: %s", err)
            self._stop.wait(max(0.0, self.cfg.lease_period - (time.monotonic() - started)))

    def renew_lease(self) -> None:
        now = time.time()
        sent = time.monotonic()
        lease = self._lease
        for _ in range(3):
            if lease is None:
                try:
                    lease = self._client.get("Lease", self.cfg.node_name, LEASE_NAMESPACE)
                except NotFound:
                    fresh = kinds.by_kind("Lease").new()
                    fresh.metadata.name = self.cfg.node_name
                    fresh.metadata.namespace = LEASE_NAMESPACE
                    fresh.spec.holder_identity = self.cfg.node_name
                    fresh.spec.lease_duration_seconds = self.cfg.lease_duration
                    fresh.spec.acquire_time.CopyFrom(_ts(now))
                    fresh.spec.renew_time.CopyFrom(_ts_precise(now))
                    try:
                        self._lease = self._client.create(fresh)
                        self.lease_renewals += 1
                        self._acknowledged(sent)
                        return
                    except AlreadyExists:
                        continue
            assert lease is not None
            new = batch_pb2.Lease()
            new.CopyFrom(lease)
            new.spec.holder_identity = self.cfg.node_name
            new.spec.lease_duration_seconds = self.cfg.lease_duration
            new.spec.renew_time.CopyFrom(_ts_precise(now))
            try:
                self._lease = self._client.update(new)
                self.lease_renewals += 1
                self._acknowledged(sent)
                return
            except (Conflict, NotFound):
                lease = None
        raise Conflict("lease: too many conflicts")

    def _status_loop(self) -> None:
        next_full = time.monotonic() + self.cfg.status_period
        while not self._stop.is_set():
            timeout = max(0.0, next_full - time.monotonic())
            kicked = self._kick.wait(timeout=min(timeout, 1.0))
            if self._stop.is_set():
                return
            due = time.monotonic() >= next_full
            if kicked:
                self._kick.clear()
            elif not due and not self._conditions_changed():
                # Between full updates only a flipped condition is worth a write.
                continue
            try:
                self._write_status()
                next_full = time.monotonic() + self.cfg.status_period
            except CorralError as err:
                log.warning("node status update failed: %s", err)

    def _conditions_changed(self) -> bool:
        ok, _ = self._runtime_health()
        net_ok = self._network_health()[0] if self._network_health else True
        current = dict(self._last_conditions)
        return (current.get("RuntimeUnhealthy") == "True") == ok or \
            (current.get("Ready") == "True") != (ok and net_ok)

    def _write_status(self) -> None:
        sent = time.monotonic()
        node = self.node
        for _ in range(5):
            if node is None:
                node = self._client.get("Node", self.cfg.node_name)
            new = core_pb2.Node()
            new.CopyFrom(node)
            self._fill_status(new, time.time())
            try:
                written: Any = self._client.update_status(new)
            except Conflict:
                node = None
                continue
            except NotFound:
                # Someone deleted our Node: register again (same name keeps no CIDR
                # promise then; the control plane allocates a fresh one).
                log.warning("node %s was deleted; registering again", self.cfg.node_name)
                written = self._register_once()
            with self._lock:
                self._node = written
            self.status_updates += 1
            self._acknowledged(sent)
            return
        raise Conflict(f"node {self.cfg.node_name}: status kept conflicting")

    def set_node(self, node: core_pb2.Node) -> None:
        """The informer saw a newer version of our Node (spec changes by others)."""
        with self._lock:
            cur = self._node
            if cur is None or _rv(node) > _rv(cur):
                self._node = node


def _rv(obj: Any) -> int:
    try:
        return int(obj.metadata.resource_version)
    except ValueError:
        return 0


def _ts_precise(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts

