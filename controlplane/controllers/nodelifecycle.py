"""Node lifecycle: notice a node that went silent, and move its pods away.

The time budget, from a node's last heartbeat (defaults, `controllers:` keys):

    node_monitor_grace_period (10 s)  no heartbeat -> Ready=Unknown, taints
                                      node.kubernetes.io/unreachable NoSchedule +
                                      NoExecute, its pods marked not Ready (they
                                      leave Service endpoints)
    + pod_eviction_timeout (20 s)     its pods are deleted at once (force: grace 0),
                                      so their controllers create replacements
                                      on healthy nodes
    = 30 s from the last heartbeat to replacement pods being created.

Heartbeats are the node's Lease renewals (namespace `node_lease_namespace`,
or kube-node-lease; name = node name) and the Ready condition's
lastHeartbeatTime in the agent's status updates. Silence is measured on this
replica's monotonic clock from the moment it *saw* a heartbeat, never from
timestamps written by other hosts (no clock-skew risk), as Nomad's leader does
with its heartbeat timers.

A fresh leader starts every node's timer at the moment it took over, so it
waits one full grace period before judging any node: a leader change never
triggers mass eviction because its timers started late. A node tainted
unreachable by the previous leader is evicted only once this leader has
itself seen it silent for a grace period *and* the taint is older than the
eviction timeout.

Eviction is a force-delete because the node is confirmed dead by then: its
agent has not been heard of for the whole budget. That is also what frees a
StatefulSet pod's identity (a replacement is created only once the old pod
object is gone). Exempt, as in Kubernetes' taint manager: pods tolerating the
unreachable NoExecute taint without tolerationSeconds (DaemonSet pods); pods
with tolerationSeconds are evicted that long after the taint.

A node that comes back (heartbeats again) loses the unreachable taints; its
agent reports Ready and stops whatever the store no longer binds to it.
A node whose agent reports Ready=False (alive, but e.g. its runtime hangs)
gets the not-ready NoSchedule taint: no new pods, no eviction (its agent still
manages its pods).

Threads model: informer threads record heartbeat times under a lock; a monitor
thread queues every node once a second; workers run the pure `reconcile_node`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from corral.errors import NotFound
from corral.v1 import core_pb2

from ..scheduler import affinity
from ..scheduler.snapshot import TAINT_NOT_READY, TAINT_UNREACHABLE
from .actions import Delete, Emit, Result, Update, UpdateStatus, event
from .base import Controller
from .clock import from_timestamp, is_set, to_timestamp
from .config import ControllersConfig
from .informers import Handlers
from .podutil import controller_ref, copy, get_condition, is_ready, is_terminating

NODE_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
LEASE_NAMESPACES = ("kube-node-lease",)


def _taint(key: str, effect: str, now: float) -> core_pb2.Taint:
    t = core_pb2.Taint(key=key, effect=effect)
    t.time_added.CopyFrom(to_timestamp(now))
    return t


def _set_taints(node: core_pb2.Node, keep: list[core_pb2.Taint]) -> None:
    del node.spec.taints[:]
    node.spec.taints.extend(keep)


def eviction_due(pod: core_pb2.Pod, tainted_for: float, eviction_timeout: float) -> bool | None:
    """True: evict now; False: not yet; None: never (tolerates unreachable forever)."""
    taint = core_pb2.Taint(key=TAINT_UNREACHABLE, effect="NoExecute")
    for tol in pod.spec.tolerations:
        if affinity.tolerates(tol, taint):
            if not tol.HasField("toleration_seconds"):
                return None
            return tainted_for >= max(tol.toleration_seconds, 0)
    return tainted_for >= eviction_timeout


def reconcile_node(node: core_pb2.Node, silent_for: float, now: float, cfg: ControllersConfig,
                   pods: Iterable[core_pb2.Pod]) -> Result:
    """One look at one node. `silent_for`: seconds since this replica last saw a
    heartbeat of it (or since it became leader, if later)."""
    result = Result()
    name = node.metadata.name
    grace = cfg.node_monitor_grace_period
    ready = get_condition(node.status.conditions, "Ready")
    taints = list(node.spec.taints)
    if silent_for >= grace:
        if ready is None or ready.status != "Unknown":
            new = copy(node)
            for type_ in NODE_CONDITIONS:
                c = get_condition(new.status.conditions, type_)
                if c is None:
                    if type_ != "Ready":
                        continue
                    c = new.status.conditions.add(type="Ready")
                c.status = "Unknown"
                c.reason = "NodeStatusUnknown"
                c.message = "Kubelet stopped posting node status."
                c.last_transition_time.CopyFrom(to_timestamp(now))
            result.add(UpdateStatus(new))
            result.add(Emit(event(node, "NodeNotReady",
                                  f"Node {name} status is now: NodeNotReady")))
        unreachable = [t for t in taints if t.key == TAINT_UNREACHABLE]
        if {t.effect for t in unreachable} != {"NoSchedule", "NoExecute"}:
            kept = [t for t in taints if t.key not in (TAINT_UNREACHABLE, TAINT_NOT_READY)]
            kept += [_taint(TAINT_UNREACHABLE, "NoSchedule", now),
                     _taint(TAINT_UNREACHABLE, "NoExecute", now)]
            new = copy(node)
            _set_taints(new, kept)
            result.add(Update(new))
            result.why = f"node {name} silent for {silent_for:.1f}s: unreachable"
            tainted_since = now
        else:
            added = [from_timestamp(t.time_added) for t in unreachable
                     if t.effect == "NoExecute" and is_set(t.time_added)]
            tainted_since = min(added) if added else now
        tainted_for = now - tainted_since
        for pod in pods:
            if is_terminating(pod) and pod.metadata.deletion_grace_period_seconds == 0:
                continue
            if is_ready(pod):
                p = copy(pod)
                c = get_condition(p.status.conditions, "Ready")
                assert c is not None
                c.status = "False"
                c.reason = "NodeNotReady"
                c.message = f"node {name} is not ready"
                c.last_transition_time.CopyFrom(to_timestamp(now))
                result.add(UpdateStatus(p))
            due = eviction_due(pod, tainted_for, cfg.pod_eviction_timeout)
            if due is None:
                continue
            if due:
                m = pod.metadata
                result.add(Delete.of(pod, grace_period_seconds=0, event=event(
                    pod, "TaintManagerEviction",
                    f"Marking for deletion Pod {m.namespace}/{m.name}")))
                result.why = f"node {name} unreachable for {silent_for:.0f}s: evicting its pods"
            else:
                left = cfg.pod_eviction_timeout - tainted_for
                for tol in pod.spec.tolerations:
                    if tol.HasField("toleration_seconds"):
                        left = tol.toleration_seconds - tainted_for
                result.requeue(max(left, 0.0) + 0.05)
        return result
    # Heard from recently.
    new_taints = [t for t in taints if t.key != TAINT_UNREACHABLE]
    agent_not_ready = ready is not None and ready.status == "False"
    has_not_ready = any(t.key == TAINT_NOT_READY for t in new_taints)
    if agent_not_ready and not has_not_ready:
        new_taints.append(_taint(TAINT_NOT_READY, "NoSchedule", now))
    elif ready is not None and ready.status == "True" and has_not_ready:
        new_taints = [t for t in new_taints if t.key != TAINT_NOT_READY]
    if new_taints != taints:
        new = copy(node)
        _set_taints(new, new_taints)
        result.add(Update(new))
        result.why = f"node {name} heard from: taints {[t.key for t in new_taints]}"
        if len(new_taints) < len(taints):
            result.add(Emit(event(node, "NodeReachable", f"Node {name} is reachable again")))
    return result


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    monitor_period = 1.0

    def setup(self) -> None:
        self._lock = threading.Lock()
        # node name -> (last heartbeat value seen, monotonic time it was seen)
        self._seen: dict[str, tuple[str, float]] = {}
        self._started = self.ctx.clock.monotonic()
        inf = self.ctx.informers
        inf["Node"].subscribe(Handlers(self._node, lambda old, new: self._node(new),
                                       self._node_gone))
        inf["Lease"].subscribe(Handlers(self._lease, lambda old, new: self._lease(new), None))
        inf["Pod"].subscribe(Handlers(None, None, None))

    def _beat(self, node: str, value: str) -> None:
        now = self.ctx.clock.monotonic()
        with self._lock:
            last = self._seen.get(node)
            if last is None or last[0] != value:
                # First sight counts as a heartbeat now: for the nodes of the first
                # list that is the moment this replica became leader (module doc).
                self._seen[node] = (value, now)

    def _node(self, node: core_pb2.Node) -> None:
        ready = get_condition(node.status.conditions, "Ready")
        if ready is not None and ready.status != "Unknown" and is_set(ready.last_heartbeat_time):
            self._beat(node.metadata.name,
                       "node:" + ready.last_heartbeat_time.SerializeToString().hex())
        else:
            with self._lock:
                self._seen.setdefault(node.metadata.name, ("", self.ctx.clock.monotonic()))

    def _node_gone(self, node: core_pb2.Node) -> None:
        with self._lock:
            self._seen.pop(node.metadata.name, None)
        self.queue.add(("gone", node.metadata.name))

    def _lease(self, lease: Any) -> None:
        ns = lease.metadata.namespace
        if ns != self.ctx.config.node_lease_namespace and ns not in LEASE_NAMESPACES:
            return
        self._beat(lease.metadata.name, "lease:" + lease.spec.renew_time.SerializeToString().hex())

    def silent_for(self, node: str) -> float:
        now = self.ctx.clock.monotonic()
        with self._lock:
            seen = self._seen.get(node)
        since = seen[1] if seen is not None else self._started
        return now - since

    def start(self) -> None:
        super().start()
        threading.Thread(target=self._monitor, name="node-monitor", daemon=True).start()

    def _monitor(self) -> None:
        sweeps = 0
        while not self.ctx.stop.wait(self.monitor_period):
            for key in self.resync_keys():
                self.queue.add(key)
            sweeps += 1
            if sweeps % 30 == 1:
                self._sweep()

    def resync_keys(self) -> Iterable[Any]:
        return [n.metadata.name for n in self.ctx.informers["Node"].items()]

    def _sweep(self) -> None:
        """Queue the nodes that pods are bound to but that do not exist."""
        known = {n.metadata.name for n in self.ctx.informers["Node"].items()}
        for name in {p.spec.node_name for p in self.ctx.informers["Pod"].items()}:
            if name and name not in known:
                self.queue.add(("gone", name))

    def _orphans(self, node_name: str) -> Result | None:
        """Pods bound to a node that was deleted: nobody will ever stop them or
        confirm their end, so they are force-deleted (Kubernetes' pod GC), once a
        linearizable read confirms the node is really gone."""
        if self.ctx.informers["Node"].get(node_name) is not None:
            return None
        try:
            self.ctx.client.get("Node", node_name)
            return None
        except NotFound:
            pass
        pods = [p for p in self.ctx.informers["Pod"].items() if p.spec.node_name == node_name]
        return orphaned_pods(node_name, pods)

    def sync(self, key: Any) -> Result | None:
        if isinstance(key, tuple):
            return self._orphans(key[1])
        node = self.ctx.informers["Node"].get(key)
        if node is None:
            return None
        silent = self.silent_for(key)
        # Every node is looked at every second: scan the pods only for a silent one.
        pods = [p for p in self.ctx.informers["Pod"].items() if p.spec.node_name == key] \
            if silent >= self.ctx.config.node_monitor_grace_period else []
        result = reconcile_node(node, silent, self.ctx.clock.time(), self.ctx.config, pods)
        # Pods owned by a DaemonSet stay on their node (they tolerate unreachable).
        result.actions = [a for a in result.actions
                          if not (isinstance(a, Delete) and _daemon_pod(pods, a.name))]
        return result


def orphaned_pods(node_name: str, pods: Iterable[core_pb2.Pod]) -> Result:
    result = Result()
    for pod in pods:
        if is_terminating(pod) and pod.metadata.deletion_grace_period_seconds == 0:
            continue
        result.add(Delete.of(pod, grace_period_seconds=0, event=event(
            pod, "PodGC", f"Deleting pod {pod.metadata.name}: its node {node_name} is gone")))
        result.why = f"node {node_name} was deleted"
    return result


def _daemon_pod(pods: list[core_pb2.Pod], name: str) -> bool:
    for p in pods:
        if p.metadata.name == name:
            ref = controller_ref(p)
            return ref is not None and ref.kind == "DaemonSet"
    return False
