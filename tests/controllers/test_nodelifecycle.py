"""Node lifecycle decisions on a fake timeline (the pure `reconcile_node`)."""

from __future__ import annotations

from controlplane.controllers.actions import Delete, Update, UpdateStatus
from controlplane.controllers.clock import to_timestamp
from controlplane.controllers.config import ControllersConfig
from controlplane.controllers.nodelifecycle import reconcile_node
from controlplane.controllers.podutil import get_condition

from .objects import NOW, node, pod, toleration

CFG = ControllersConfig()


def unreachable(n, since: float):
    for effect in ("NoSchedule", "NoExecute"):
        t = n.spec.taints.add(key="node.kubernetes.io/unreachable", effect=effect)
        t.time_added.CopyFrom(to_timestamp(since))
    n.status.conditions[0].status = "Unknown"
    return n


def test_quiet_node_within_grace_is_left_alone():
    n = node("n1")
    assert reconcile_node(n, 9.9, NOW, CFG, [pod("p", node_name="n1")]).actions == []


def test_silent_node_becomes_unknown_tainted_and_its_pods_not_ready():
    n = node("n1")
    p = pod("p", node_name="n1", phase="Running", ready=True)
    result = reconcile_node(n, 10.0, NOW, CFG, [p])
    node_status = next(a.obj for a in result.of_type(UpdateStatus) if a.obj.kind == "Node")
    ready = get_condition(node_status.status.conditions, "Ready")
    assert (ready.status, ready.reason) == ("Unknown", "NodeStatusUnknown")
    taints = result.of_type(Update)[0].obj.spec.taints
    assert {(t.key, t.effect) for t in taints} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute")}
    pod_status = next(a.obj for a in result.of_type(UpdateStatus) if a.obj.kind == "Pod")
    assert get_condition(pod_status.status.conditions, "Ready").status == "False"
    assert result.of_type(Delete) == []
    assert 19 < result.requeue_after <= 20.1


def test_pods_are_force_deleted_after_the_eviction_timeout():
    n = unreachable(node("n1"), NOW - 20)
    plain = pod("plain", node_name="n1")
    tolerant = pod("ds", node_name="n1", tolerations=[
        toleration("node.kubernetes.io/unreachable", operator="Exists", effect="NoExecute")])
    patient = pod("patient", node_name="n1")
    patient.spec.tolerations.add(key="node.kubernetes.io/unreachable", operator="Exists",
                                 effect="NoExecute", toleration_seconds=300)
    result = reconcile_node(n, 30.0, NOW, CFG, [plain, tolerant, patient])
    deletes = result.of_type(Delete)
    assert [(d.name, d.grace_period_seconds) for d in deletes] == [("plain", 0)]
    early = reconcile_node(unreachable(node("n2"), NOW - 19), 29.0, NOW, CFG, [plain])
    assert early.of_type(Delete) == []


def test_fresh_leader_does_not_evict_before_its_own_grace_period():
    # The previous leader tainted the node long ago, but this leader has seen it
    # silent for only 3 s (its timers start when it took over).
    n = unreachable(node("n1"), NOW - 600)
    result = reconcile_node(n, 3.0, NOW, CFG, [pod("p", node_name="n1")])
    assert result.of_type(Delete) == []


def test_node_that_comes_back_loses_the_unreachable_taints():
    n = unreachable(node("n1"), NOW - 5)
    result = reconcile_node(n, 0.5, NOW, CFG, [])
    assert list(result.of_type(Update)[0].obj.spec.taints) == []


def test_agent_reporting_not_ready_gets_the_no_schedule_taint_only():
    n = node("n1", ready=False)
    result = reconcile_node(n, 1.0, NOW, CFG, [pod("p", node_name="n1")])
    taints = result.of_type(Update)[0].obj.spec.taints
    assert [(t.key, t.effect) for t in taints] == [("node.kubernetes.io/not-ready",
                                                    "NoSchedule")]
    assert result.of_type(Delete) == []
    n = node("n1")
    n.spec.taints.add(key="node.kubernetes.io/not-ready", effect="NoSchedule")
    assert list(reconcile_node(n, 1.0, NOW, CFG, []).of_type(Update)[0].obj.spec.taints) == []
