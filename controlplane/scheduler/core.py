"""The scheduling decision: pods + snapshot -> plan. Pure; no I/O, no clock.

For each pod, in the order given (oldest first):
1. pod-level checks (its claims exist and are not being deleted);
2. static predicates per node, cached per pod *shape* for the batch (pods of
   one ReplicaSet share their nodeSelector, affinity and tolerations, so 3,000
   pods of a few Deployments cost a few static passes, not 3,000);
3. dynamic predicates (ports, resources) per node against the snapshot as
   updated by the pods placed before it in this batch;
4. scores of the feasible nodes; the best wins, ties broken by `rng`;
5. the pod is assumed on that node (the snapshot is updated) before the next.
A pod that fits nowhere gets kube-scheduler's message:
"0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {k: v}."

Threads model: pure; the snapshot passed in is mutated (assumed pods).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.errors import Invalid
from corral.v1 import core_pb2

from . import predicates, ranking
from .snapshot import NodeInfo, PodInfo, Snapshot


@dataclass
class Binding:
    pod: core_pb2.Pod
    node: str
    # The pod's claims that are still unbound: bind them to `node` first.
    claims: tuple[str, ...] = ()


@dataclass
class Failure:
    pod: core_pb2.Pod
    message: str
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Plan:
    bindings: list[Binding] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def fit_message(total: int, reasons: Counter[str] | dict[str, int]) -> str:
    """kube-scheduler's FitError text: counts per reason, most frequent first."""
    if total == 0:
        return "0/0 nodes are available: no nodes available to schedule pods."
    parts = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    body = ", ".join(f"{n} {reason}" for reason, n in parts)
    return f"0/{total} nodes are available: {body}." if body else \
        f"0/{total} nodes are available."


@dataclass
class _Shape:
    """Static predicate results of one pod shape against the snapshot's nodes."""

    nodes: list[NodeInfo]
    reasons: Counter[str]
    affinity: list[float]
    taints: list[float]


def _signature(p: PodInfo) -> bytes | None:
    if p.claims:
        return None  # claims bind during the batch: no sharing
    spec = p.pod.spec
    parts = [spec.affinity.SerializeToString(deterministic=True)]
    parts.extend(t.SerializeToString(deterministic=True) for t in spec.tolerations)
    parts.extend(f"{k}={v}".encode() for k, v in sorted(spec.node_selector.items()))
    return b"\x00".join(parts)


def _shape(p: PodInfo, snap: Snapshot) -> _Shape:
    nodes: list[NodeInfo] = []
    reasons: Counter[str] = Counter()
    for n in snap.order:
        why = predicates.check(predicates.STATIC, p, n, snap)
        if why:
            reasons.update(why)
        else:
            nodes.append(n)
    aff = ranking.normalize([ranking.preferred_affinity_raw(p, n) for n in nodes])
    taints = ranking.normalize([ranking.prefer_no_schedule_raw(p, n) for n in nodes], reverse=True)
    return _Shape(nodes, reasons, aff, taints)


def _claims_problem(p: PodInfo, snap: Snapshot) -> str:
    ns = p.pod.metadata.namespace
    for claim in p.claims:
        node = snap.claim_bound_node(ns, claim)
        if node is None:
            return f'persistentvolumeclaim "{claim}" not found'
        c = snap.claims.get((ns, claim))
        if c is not None and c.metadata.HasField("deletion_timestamp") and \
                c.metadata.deletion_timestamp.seconds:
            return f'persistentvolumeclaim "{claim}" is being deleted'
    return ""


def schedule_one(p: PodInfo, snap: Snapshot, shape: _Shape, rng: random.Random
                 ) -> Binding | Failure:
    total = len(snap.nodes)
    problem = _claims_problem(p, snap)
    if problem:
        return Failure(p.pod, f"0/{total} nodes are available: {problem}.", {problem: total})
    reasons = Counter(shape.reasons)
    feasible: list[int] = []
    for i, n in enumerate(shape.nodes):
        why = predicates.check(predicates.DYNAMIC, p, n, snap)
        if why:
            reasons.update(why)
        else:
            feasible.append(i)
    if not feasible:
        return Failure(p.pod, fit_message(total, reasons), dict(reasons))
    w = ranking.WEIGHTS
    spread_raw = [ranking.spread_raw(p, shape.nodes[i]) for i in feasible]
    spread = ranking.normalize(spread_raw, reverse=True)
    best: list[int] = []
    best_score = -1.0
    for j, i in enumerate(feasible):
        n = shape.nodes[i]
        score = (w["least_requested"] * ranking.least_requested(p, n)
                 + w["spread"] * spread[j]
                 + w["node_affinity"] * shape.affinity[i]
                 + w["taint_toleration"] * shape.taints[i])
        if score > best_score + 1e-9:
            best_score = score
            best = [i]
        elif abs(score - best_score) <= 1e-9:
            best.append(i)
    chosen = shape.nodes[best[0] if len(best) == 1 else rng.choice(best)]
    ns = p.pod.metadata.namespace
    unbound = tuple(c for c in p.claims if not snap.claim_bound_node(ns, c))
    return Binding(p.pod, chosen.name, unbound)


def schedule(pods: Sequence[core_pb2.Pod], snap: Snapshot,
             rng: random.Random | None = None) -> Plan:
    """Place `pods` (unbound) in order; the snapshot is updated as each is placed."""
    rng = rng or random.Random()
    plan = Plan()
    shapes: dict[bytes, _Shape] = {}
    for pod in pods:
        try:
            p = PodInfo.of(pod)
        except Invalid as err:
            plan.failures.append(Failure(pod, f"invalid pod: {err}"))
            continue
        sig = _signature(p)
        shape = shapes.get(sig) if sig is not None else None
        if shape is None:
            shape = _shape(p, snap)
            if sig is not None:
                shapes[sig] = shape
        decision = schedule_one(p, snap, shape, rng)
        if isinstance(decision, Binding):
            snap.assume(p, decision.node)
            plan.bindings.append(decision)
        else:
            plan.failures.append(decision)
    return plan
