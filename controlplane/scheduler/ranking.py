"""Ranking: among the nodes that fit, which is best? Each scorer gives 0-100.

- least requested: prefer the node with the most room left after placing the
  pod (CPU and memory, non-zero defaults for pods that request nothing);
- spread: prefer nodes running fewer pods of the same owner (a ReplicaSet's
  pods land on different nodes);
- preferred node affinity: the weights of the preferred terms a node matches;
- taint toleration: avoid PreferNoSchedule taints the pod does not tolerate.
`WEIGHTS` follow kube-scheduler's defaults (affinity 2, spread 2, taints 3,
resources 1).

Threads model: pure functions.
"""

from __future__ import annotations

from . import affinity
from .snapshot import NodeInfo, PodInfo

WEIGHTS = {"least_requested": 1, "spread": 2, "node_affinity": 2, "taint_toleration": 3}


def least_requested(p: PodInfo, n: NodeInfo) -> float:
    def part(used: int, want: int, cap: int) -> float:
        if cap <= 0:
            return 0.0
        free = cap - used - want
        return max(free, 0) * 100.0 / cap

    return (part(n.nz_cpu, p.nz_cpu, n.alloc_cpu)
            + part(n.nz_memory, p.nz_memory, n.alloc_memory)) / 2


def normalize(raw: list[float], reverse: bool = False) -> list[float]:
    """Scale to 0-100 by the maximum; `reverse`: fewer is better."""
    top = max(raw, default=0.0)
    if top <= 0:
        return [100.0 if reverse else 0.0] * len(raw)
    if reverse:
        return [(top - r) * 100.0 / top for r in raw]
    return [r * 100.0 / top for r in raw]


def preferred_affinity_raw(p: PodInfo, n: NodeInfo) -> float:
    return float(affinity.preferred_score(p.pod.spec, n.labels, n.name))


def prefer_no_schedule_raw(p: PodInfo, n: NodeInfo) -> float:
    tolerations = p.pod.spec.tolerations
    return float(sum(1 for t in n.taints
                     if t.effect == affinity.PREFER_NO_SCHEDULE
                     and not affinity.tolerated(t, tolerations)))


def spread_raw(p: PodInfo, n: NodeInfo) -> float:
    return float(n.owners.get(p.owner, 0)) if p.owner else 0.0
