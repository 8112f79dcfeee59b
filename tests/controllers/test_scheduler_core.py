"""The scheduler's pure decision: predicates, ranking, messages, batching."""

from __future__ import annotations

import random
import time

from controlplane.scheduler import affinity
from controlplane.scheduler.core import Binding, fit_message, schedule
from controlplane.scheduler.snapshot import Snapshot
from corral.v1 import core_pb2

from .objects import claim, deployment, node, pod, toleration


def place(pods, nodes, bound=(), claims=(), seed=1):
    return schedule(pods, Snapshot(nodes, bound, claims), random.Random(seed))


def test_binds_to_a_fitting_node():
    plan = place([pod("a", cpu="1")], [node("n1")])
    assert [(b.pod.metadata.name, b.node) for b in plan.bindings] == [("a", "n1")]
    assert plan.failures == []


def test_message_counts_reasons_like_kube_scheduler():
    nodes = [
        node("n1", memory="1Gi"),
        node("n2", memory="1Gi"),
        node("n3", taints=[("dedicated", "gpu", "NoSchedule")]),
    ]
    plan = place([pod("a", memory="2Gi")], nodes)
    assert plan.bindings == []
    assert plan.failures[0].message == (
        "0/3 nodes are available: 2 Insufficient memory, "
        "1 node(s) had untolerated taint {dedicated: gpu}."
    )


def test_resources_account_for_bound_pods_and_the_batch():
    n = node("n1", cpu="2")
    bound = [pod("old", cpu="1", node_name="n1")]
    plan = place([pod("a", cpu="1"), pod("b", cpu="1")], [n], bound)
    assert [b.pod.metadata.name for b in plan.bindings] == ["a"]
    assert plan.failures[0].message == "0/1 nodes are available: 1 Insufficient cpu."


def test_finished_pods_free_their_resources():
    bound = [pod("done", cpu="2", node_name="n1", phase="Succeeded")]
    plan = place([pod("a", cpu="2")], [node("n1", cpu="2")], bound)
    assert len(plan.bindings) == 1


def test_init_container_requests_count_as_kubernetes_counts_them():
    p = pod("a", cpu="500m")
    init = p.spec.init_containers.add(name="init", image="x")
    init.resources.requests["cpu"] = "3"
    plan = place([p], [node("n1", cpu="2")])
    assert plan.failures[0].message == "0/1 nodes are available: 1 Insufficient cpu."


def test_too_many_pods():
    plan = place([pod("a"), pod("b")], [node("n1", pods="1")])
    assert len(plan.bindings) == 1
    assert "1 Too many pods" in plan.failures[0].message


def test_cordoned_and_not_ready_nodes_are_skipped():
    nodes = [node("n1", unschedulable=True), node("n2", ready=False), node("n3")]
    plan = place([pod("a")], nodes)
    assert plan.bindings[0].node == "n3"
    plan = place([pod("b")], nodes[:2])
    assert plan.failures[0].message == (
        "0/2 nodes are available: 1 node(s) had untolerated taint "
        "{node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
    )


def test_daemonset_style_tolerations_pass_cordon_and_not_ready():
    tols = [toleration("node.kubernetes.io/unschedulable", effect="NoSchedule",
                       operator="Exists"),
            toleration("node.kubernetes.io/not-ready", effect="NoSchedule", operator="Exists")]
    plan = place([pod("a", tolerations=tols)], [node("n1", unschedulable=True, ready=False)])
    assert plan.bindings[0].node == "n1"


def test_node_selector_and_required_affinity():
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2", labels={"disk": "hdd"})]
    plan = place([pod("a", node_selector={"disk": "hdd"})], nodes)
    assert plan.bindings[0].node == "n2"
    p = pod("b")
    term = p.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution \
        .node_selector_terms.add()
    term.match_expressions.add(key="disk", operator="NotIn", values=["hdd"])
    plan = place([p], nodes)
    assert plan.bindings[0].node == "n1"
    plan = place([pod("c", node_selector={"disk": "nvme"})], nodes)
    assert plan.failures[0].message == (
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")


def test_match_fields_pins_to_a_node():
    p = pod("a")
    affinity.pin_to_node(p.spec, "n2")
    assert affinity.pinned_node(p.spec) == "n2"
    plan = place([p], [node("n1"), node("n2"), node("n3")])
    assert plan.bindings[0].node == "n2"


def test_gt_lt_and_exists_operators():
    req = core_pb2.NodeSelectorRequirement(key="gen", operator="Gt", values=["3"])
    assert affinity.requirement_matches(req, {"gen": "4"})
    assert not affinity.requirement_matches(req, {"gen": "3"})
    assert not affinity.requirement_matches(req, {"gen": "x"})
    req = core_pb2.NodeSelectorRequirement(key="gen", operator="DoesNotExist")
    assert affinity.requirement_matches(req, {})
    # An empty term matches nothing (Kubernetes).
    assert not affinity.term_matches(core_pb2.NodeSelectorTerm(), {"a": "b"}, "n1")


def test_tolerations_match_as_kubernetes():
    taint = core_pb2.Taint(key="k", value="v", effect="NoSchedule")
    assert affinity.tolerates(toleration("k", "v"), taint)
    assert affinity.tolerates(toleration("k", operator="Exists"), taint)
    assert affinity.tolerates(toleration("", operator="Exists"), taint)
    assert not affinity.tolerates(toleration("k", "w"), taint)
    assert not affinity.tolerates(toleration("k", "v", effect="NoExecute"), taint)


def test_prefer_no_schedule_is_avoided_not_refused():
    nodes = [node("n1", taints=[("spot", "yes", "PreferNoSchedule")]), node("n2")]
    plan = place([pod("a")], nodes)
    assert plan.bindings[0].node == "n2"
    plan = place([pod("b")], nodes[:1])
    assert plan.bindings[0].node == "n1"


def test_host_ports_conflict():
    bound = [pod("web", node_name="n1", host_port=8080)]
    plan = place([pod("a", host_port=8080), pod("b", host_port=8080)],
                 [node("n1"), node("n2")], bound)
    assert [b.node for b in plan.bindings] == ["n2"]
    assert plan.failures[0].message == (
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.")


def test_spreads_one_owners_pods_and_prefers_least_loaded():
    owner = deployment("web", 3, {"app": "web"})
    nodes = [node("n1"), node("n2"), node("n3")]
    pods = [pod(f"web-{i}", owner=owner) for i in range(6)]
    plan = place(pods, nodes)
    counts: dict[str, int] = {}
    for b in plan.bindings:
        counts[b.node] = counts.get(b.node, 0) + 1
    assert counts == {"n1": 2, "n2": 2, "n3": 2}
    busy = [pod("big", cpu="3", memory="6Gi", node_name="n1")]
    plan = place([pod("x", cpu="100m")], nodes, busy)
    assert plan.bindings[0].node in ("n2", "n3")


def test_preferred_affinity_wins_when_room_is_equal():
    p = pod("a")
    pref = p.spec.affinity.node_affinity \
        .preferred_during_scheduling_ignored_during_execution.add(weight=50)
    pref.preference.match_expressions.add(key="zone", operator="In", values=["b"])
    nodes = [node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"})]
    assert place([p], nodes).bindings[0].node == "n2"


def test_claims_pin_pods_and_unbound_claims_are_bound_with_the_pod():
    claims = [claim("data-0", volume="n2:/vol/default/data-0"), claim("data-1")]
    plan = place([pod("a", claims=["data-0"])], [node("n1"), node("n2")], claims=claims)
    assert plan.bindings[0].node == "n2" and plan.bindings[0].claims == ()
    plan = place([pod("b", claims=["data-1"]), pod("c", claims=["data-1"])],
                 [node("n1"), node("n2")], claims=claims)
    first, second = plan.bindings
    assert first.claims == ("data-1",)
    # The claim was assumed bound to the first pod's node.
    assert second.node == first.node and second.claims == ()
    plan = place([pod("d", claims=["missing"])], [node("n1")], claims=claims)
    assert plan.failures[0].message == (
        '0/1 nodes are available: persistentvolumeclaim "missing" not found.')
    plan = place([pod("e", claims=["data-0"])], [node("n1")], claims=claims)
    assert plan.failures[0].message == (
        "0/1 nodes are available: 1 node(s) had volume node affinity conflict.")


def test_no_nodes_and_bad_quantities():
    assert place([pod("a")], []).failures[0].message.startswith("0/0 nodes are available")
    p = pod("b", cpu="lots")
    failure = place([p], [node("n1")]).failures[0]
    assert "spec.containers[0].resources.requests.cpu" in failure.message


def test_fit_message_orders_by_count_then_text():
    assert fit_message(5, {"b": 1, "a": 1, "c": 3}) == "0/5 nodes are available: 3 c, 1 a, 1 b."


def test_batch_of_3000_pods_on_100_nodes_is_fast():
    """The pure part must leave room for >= 100 binds/s (target: well under 3 s)."""
    nodes = [node(f"n{i:03d}", cpu="32", memory="64Gi") for i in range(100)]
    owners = [deployment(f"app{i}", 300, {"app": f"app{i}"}) for i in range(10)]
    pods = [pod(f"p{i}", cpu="100m", memory="64Mi", owner=owners[i % 10]) for i in range(3000)]
    start = time.perf_counter()
    plan = place(pods, nodes)
    took = time.perf_counter() - start
    assert len(plan.bindings) == 3000
    per_node: dict[str, int] = {}
    for b in plan.bindings:
        assert isinstance(b, Binding)
        per_node[b.node] = per_node.get(b.node, 0) + 1
    assert max(per_node.values()) - min(per_node.values()) <= 2
    assert took < 15, f"3000 pods took {took:.1f}s"
