"""Node selectors, node affinity terms, taints and tolerations: Kubernetes' matching rules.

Used by the scheduler's predicates and by the DaemonSet controller (which must
know where its pods may run). Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corral.v1 import core_pb2

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"


def requirement_matches(req: core_pb2.NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    op = req.operator
    has = req.key in labels
    if op == "In":
        return has and labels[req.key] in req.values
    if op == "NotIn":
        return not has or labels[req.key] not in req.values
    if op == "Exists":
        return has
    if op == "DoesNotExist":
        return not has
    if op in ("Gt", "Lt"):
        if not has or len(req.values) != 1:
            return False
        try:
            value, bound = int(labels[req.key]), int(req.values[0])
        except ValueError:
            return False
        return value > bound if op == "Gt" else value < bound
    return False


def term_matches(term: core_pb2.NodeSelectorTerm, labels: Mapping[str, str],
                 node_name: str) -> bool:
    """ANDed expressions and fields; a term with neither matches nothing (Kubernetes)."""
    if not term.match_expressions and not term.match_fields:
        return False
    for req in term.match_expressions:
        if not requirement_matches(req, labels):
            return False
    for req in term.match_fields:
        # Kubernetes supports only metadata.name as a node field.
        if req.key != "metadata.name" or not requirement_matches(
                req, {"metadata.name": node_name}):
            return False
    return True


def selector_matches(selector: core_pb2.NodeSelector, labels: Mapping[str, str],
                     node_name: str) -> bool:
    """ORed terms."""
    return any(term_matches(t, labels, node_name) for t in selector.node_selector_terms)


def pod_matches_node(spec: core_pb2.PodSpec, labels: Mapping[str, str], node_name: str) -> bool:
    """nodeSelector AND required node affinity (Kubernetes' NodeAffinity filter)."""
    for k, v in spec.node_selector.items():
        if labels.get(k) != v:
            return False
    if spec.HasField("affinity") and spec.affinity.HasField("node_affinity"):
        na = spec.affinity.node_affinity
        if na.HasField("required_during_scheduling_ignored_during_execution"):
            return selector_matches(na.required_during_scheduling_ignored_during_execution,
                                    labels, node_name)
    return True


def preferred_score(spec: core_pb2.PodSpec, labels: Mapping[str, str], node_name: str) -> int:
    """Sum of the weights of the preferred terms this node matches."""
    if not spec.HasField("affinity") or not spec.affinity.HasField("node_affinity"):
        return 0
    total = 0
    for pref in spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution:
        if term_matches(pref.preference, labels, node_name):
            total += pref.weight
    return total


def tolerates(toleration: core_pb2.Toleration, taint: core_pb2.Taint) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator in ("", "Equal"):
        # An empty key with Equal is refused by validation; it matches nothing here.
        return bool(toleration.key) and toleration.value == taint.value
    return False


def tolerated(taint: core_pb2.Taint, tolerations: Iterable[core_pb2.Toleration]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[core_pb2.Taint],
                      tolerations: Iterable[core_pb2.Toleration],
                      effects: tuple[str, ...] = (NO_SCHEDULE, NO_EXECUTE),
                      ) -> core_pb2.Taint | None:
    tols = list(tolerations)
    for taint in taints:
        if taint.effect in effects and not tolerated(taint, tols):
            return taint
    return None


def pinned_node(spec: core_pb2.PodSpec) -> str:
    """The node a pod is pinned to by `metadata.name In [node]` affinity ("" if none).

    DaemonSet and StatefulSet pods are pinned this way, as in Kubernetes.
    """
    if not spec.HasField("affinity") or not spec.affinity.HasField("node_affinity"):
        return ""
    na = spec.affinity.node_affinity
    if not na.HasField("required_during_scheduling_ignored_during_execution"):
        return ""
    terms = na.required_during_scheduling_ignored_during_execution.node_selector_terms
    if len(terms) != 1:
        return ""
    for req in terms[0].match_fields:
        if req.key == "metadata.name" and req.operator == "In" and len(req.values) == 1:
            return req.values[0]
    return ""


def pin_to_node(spec: core_pb2.PodSpec, node_name: str) -> None:
    """Require `node_name` (replaces any metadata.name field requirement), in place."""
    na = spec.affinity.node_affinity
    required = na.required_during_scheduling_ignored_during_execution
    if not required.node_selector_terms:
        required.node_selector_terms.add()
    for term in required.node_selector_terms:
        kept = [r for r in term.match_fields if r.key != "metadata.name"]
        del term.match_fields[:]
        term.match_fields.extend(kept)
        term.match_fields.add(key="metadata.name", operator="In", values=[node_name])
