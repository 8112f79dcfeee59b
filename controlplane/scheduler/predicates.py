"""Feasibility: can this pod run on this node? One small function per rule.

Each predicate returns the reasons the node does not fit (empty: it fits), in
Kubernetes' words, so the FailedScheduling message reads as kube-scheduler's.
"Static" predicates depend only on the pod's spec and the node (not on what
else runs there); the scheduler evaluates them once per distinct pod shape per
batch. "Dynamic" ones depend on the node's current load and are evaluated
for every pod.

Threads model: pure functions.
"""

from __future__ import annotations

from collections.abc import Callable

from . import affinity
from .snapshot import TAINT_UNSCHEDULABLE, NodeInfo, PodInfo, Snapshot, ports_conflict

Predicate = Callable[[PodInfo, NodeInfo, Snapshot], list[str]]

UNSCHEDULABLE = "node(s) were unschedulable"
AFFINITY = "node(s) didn't match Pod's node affinity/selector"
PORTS = "node(s) didn't have free ports for the requested pod ports"
VOLUME_CONFLICT = "node(s) had volume node affinity conflict"
TOO_MANY_PODS = "Too many pods"
_UNSCHEDULABLE_TAINT = affinity.core_pb2.Taint(key=TAINT_UNSCHEDULABLE, effect="NoSchedule")


def unschedulable(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    """Cordoned (spec.unschedulable) unless the pod tolerates the unschedulable taint."""
    if n.unschedulable and not affinity.tolerated(_UNSCHEDULABLE_TAINT, p.pod.spec.tolerations):
        return [UNSCHEDULABLE]
    return []


def taints(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    taint = affinity.first_untolerated(n.taints, p.pod.spec.tolerations)
    if taint is None:
        return []
    return [f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"]


def node_affinity(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    if affinity.pod_matches_node(p.pod.spec, n.labels, n.name):
        return []
    return [AFFINITY]


def volumes(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    """A claim already bound to a folder on another node pins the pod there."""
    ns = p.pod.metadata.namespace
    for claim in p.claims:
        node = s.claim_bound_node(ns, claim)
        if node and node != n.name:
            return [VOLUME_CONFLICT]
    return []


def host_ports(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    if p.ports and ports_conflict(n.ports, p.ports):
        return [PORTS]
    return []


def resources(p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    """Requests within allocatable minus what the node's pods request (all shortfalls)."""
    out = []
    if n.pods + 1 > n.alloc_pods:
        out.append(TOO_MANY_PODS)
    if p.cpu and n.cpu + p.cpu > n.alloc_cpu:
        out.append("Insufficient cpu")
    if p.memory and n.memory + p.memory > n.alloc_memory:
        out.append("Insufficient memory")
    return out


# Kubernetes' filter order, which decides the reason reported for a node.
STATIC: tuple[Predicate, ...] = (unschedulable, taints, node_affinity, volumes)
DYNAMIC: tuple[Predicate, ...] = (host_ports, resources)


def check(predicates: tuple[Predicate, ...], p: PodInfo, n: NodeInfo, s: Snapshot) -> list[str]:
    """The first failing predicate's reasons (kube-scheduler stops at the first)."""
    for pred in predicates:
        reasons = pred(p, n, s)
        if reasons:
            return reasons
    return []
