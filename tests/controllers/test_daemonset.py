"""DaemonSet reconcile: eligibility, joins and leaves, rolling update."""

from __future__ import annotations

from controlplane.controllers import daemonset
from controlplane.controllers.actions import Create
from controlplane.controllers.podutil import is_terminating
from controlplane.scheduler import affinity

from .objects import NOW, node, toleration
from .objects import daemonset as make_ds
from .world import World


def step(w: World) -> None:
    for ds in w.list("DaemonSet"):
        w.apply(daemonset.reconcile(ds, w.list("Node", ""), w.list("Pod"), w.now))
    # A fake scheduler+kubelet: bind each pod to its pinned node.
    for key, pod in list(w.objects.items()):
        if key[0] == "Pod" and not pod.spec.node_name:
            pod.spec.node_name = affinity.pinned_node(pod.spec)
    w.kubelet(slow=True)
    w.now += 1


def per_node(w: World) -> dict[str, str]:
    return {p.spec.node_name: p.spec.containers[0].image for p in w.list("Pod")
            if not is_terminating(p)}


def test_one_pod_per_eligible_node_with_daemon_tolerations():
    w = World(NOW)
    for n in ("n1", "n2"):
        w.add(node(n))
    w.add(node("n3", unschedulable=True))
    w.add(node("gpu", taints=[("dedicated", "gpu", "NoSchedule")]))
    w.add(make_ds("agent", {"app": "agent"}))
    for _ in range(3):
        step(w)
    assert sorted(per_node(w)) == ["n1", "n2", "n3"]
    pod = w.list("Pod")[0]
    keys = {(t.key, t.effect) for t in pod.spec.tolerations}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
    s = w.get("DaemonSet", "agent").status
    assert (s.desired_number_scheduled, s.current_number_scheduled, s.number_ready) == (3, 3, 3)


def test_node_joins_and_leaves():
    w = World(NOW)
    w.add(node("n1"))
    w.add(make_ds("agent", {"app": "agent"}))
    step(w)
    w.add(node("n2"))
    step(w)
    assert sorted(per_node(w)) == ["n1", "n2"]
    del w.objects[("Node", "", "n2")]
    step(w)
    step(w)
    assert sorted(per_node(w)) == ["n1"]


def test_node_selector_and_tolerations_of_the_template():
    ds = make_ds("agent", {"app": "agent"})
    ds.spec.template.spec.node_selector["role"] = "edge"
    ds.spec.template.spec.tolerations.append(toleration("dedicated", "gpu"))
    nodes = [node("a", labels={"role": "edge"}), node("b"),
             node("c", labels={"role": "edge"}, taints=[("dedicated", "gpu", "NoSchedule")])]
    result = daemonset.reconcile(ds, nodes, [], NOW)
    pinned = sorted(affinity.pinned_node(c.obj.spec) for c in result.of_type(Create))
    assert pinned == ["a", "c"]


def test_untolerated_no_execute_taint_evicts_existing_pod():
    w = World(NOW)
    w.add(node("n1"))
    w.add(make_ds("agent", {"app": "agent"}))
    step(w)
    step(w)
    n = w.get("Node", "n1", "")
    n.spec.taints.add(key="maintenance", value="yes", effect="NoExecute")
    w.objects[("Node", "", "n1")] = n
    step(w)
    assert per_node(w) == {}


def test_rolling_update_one_node_at_a_time():
    w = World(NOW)
    for i in range(4):
        w.add(node(f"n{i}"))
    w.add(make_ds("agent", {"app": "agent"}))
    for _ in range(3):
        step(w)
    ds = w.get("DaemonSet", "agent")
    ds.spec.template.spec.containers[0].image = "img:2"
    ds.metadata.generation += 1
    w.objects[("DaemonSet", "default", "agent")] = ds
    worst = 4
    for _ in range(20):
        step(w)
        ready = [p for p in w.list("Pod") if not is_terminating(p)
                 and any(c.type == "Ready" for c in p.status.conditions)]
        worst = min(worst, len(ready))
    assert set(per_node(w).values()) == {"img:2"} and len(per_node(w)) == 4
    assert worst >= 3  # maxUnavailable 1
    assert w.get("DaemonSet", "agent").status.updated_number_scheduled == 4
