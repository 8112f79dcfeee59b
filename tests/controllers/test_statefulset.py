"""StatefulSet reconcile: order, identity, claims, scale-down, rolling update."""

from __future__ import annotations

from controlplane.controllers import statefulset
from controlplane.controllers.actions import Create, Delete
from controlplane.controllers.podutil import is_terminating
from controlplane.scheduler import affinity

from .objects import NOW, claim
from .objects import statefulset as make_sts
from .world import World


def step(w: World, kubelet: bool = True) -> None:
    for s in w.list("StatefulSet"):
        w.apply(statefulset.reconcile(s, w.list("Pod"), w.list("PersistentVolumeClaim"), w.now))
    if kubelet:
        w.kubelet(slow=True)
    w.now += 1


def names(w: World) -> list[str]:
    return sorted(p.metadata.name for p in w.list("Pod") if not is_terminating(p))


def test_pods_start_in_order_each_after_the_previous_is_ready():
    w = World(NOW)
    w.add(make_sts("web", 3, {"app": "web"}, claims=["www"], service="web"))
    history = []
    for _ in range(10):
        step(w)
        history.append(names(w))
    assert history[0] == ["web-0"]
    # web-1 appears only after web-0 was Ready (slow kubelet: one step to start, one to ready).
    assert history[1] == ["web-0"]
    assert history[2] == ["web-0", "web-1"]
    assert history[-1] == ["web-0", "web-1", "web-2"]
    pod = w.get("Pod", "web-1")
    assert pod.spec.hostname == "web-1" and pod.spec.subdomain == "web"
    assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == "web-1"
    assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == "1"
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "www-web-1"
    claims = sorted(c.metadata.name for c in w.list("PersistentVolumeClaim"))
    assert claims == ["www-web-0", "www-web-1", "www-web-2"]
    assert w.get("PersistentVolumeClaim", "www-web-0").metadata.labels["app"] == "web"
    s = w.get("StatefulSet", "web").status
    assert (s.replicas, s.ready_replicas, s.updated_replicas) == (3, 3, 3)
    assert s.current_revision == s.update_revision


def test_claims_come_before_the_pod_and_a_bound_claim_pins_it():
    sts = make_sts("db", 1, {"app": "db"}, claims=["data"])
    result = statefulset.reconcile(sts, [], [], NOW)
    kinds = [type(a).__name__ + ":" + a.obj.kind for a in result.of_type(Create)]
    assert kinds == ["Create:PersistentVolumeClaim", "Create:Pod"]
    bound = claim("data-db-0", volume="n2:/vol/default/data-db-0")
    result = statefulset.reconcile(sts, [], [bound], NOW)
    pod = result.of_type(Create)[0].obj
    assert affinity.pinned_node(pod.spec) == "n2"


def test_a_replacement_waits_until_the_old_pod_object_is_gone():
    w = World(NOW)
    w.add(make_sts("web", 2, {"app": "web"}))
    for _ in range(6):
        step(w)
    # web-0's node died: the pod is marked for deletion but not yet confirmed gone.
    old = w.get("Pod", "web-0")
    old.metadata.deletion_timestamp.seconds = int(w.now)
    w.objects[("Pod", "default", "web-0")] = old
    for _ in range(3):
        step(w, kubelet=False)
    assert w.get("Pod", "web-0").metadata.uid == old.metadata.uid
    assert not any(str(a).startswith("create Pod") for a in w.log[-3:])
    # Force-deleted: now the identity is free and comes back.
    del w.objects[("Pod", "default", "web-0")]
    step(w)
    assert w.get("Pod", "web-0").metadata.uid != old.metadata.uid


def test_scale_down_in_reverse_order_keeps_claims():
    w = World(NOW)
    w.add(make_sts("web", 3, {"app": "web"}, claims=["www"]))
    for _ in range(10):
        step(w)
    s = w.get("StatefulSet", "web")
    s.spec.replicas = 1
    w.objects[("StatefulSet", "default", "web")] = s
    step(w, kubelet=False)
    deletes = [a for a in w.log if a.startswith("delete Pod")]
    assert deletes == ["delete Pod default/web-2"]
    for _ in range(4):
        step(w)
    assert names(w) == ["web-0"]
    assert len(w.list("PersistentVolumeClaim")) == 3


def test_rolling_update_from_the_highest_ordinal():
    w = World(NOW)
    w.add(make_sts("web", 3, {"app": "web"}))
    for _ in range(10):
        step(w)
    s = w.get("StatefulSet", "web")
    s.spec.template.spec.containers[0].image = "img:2"
    w.objects[("StatefulSet", "default", "web")] = s
    order = []
    for _ in range(20):
        before = len(w.log)
        step(w)
        order += [a.split("/")[1] for a in w.log[before:] if a.startswith("delete Pod")]
    assert order == ["web-2", "web-1", "web-0"]
    assert {p.spec.containers[0].image for p in w.list("Pod")} == {"img:2"}
    s = w.get("StatefulSet", "web").status
    assert s.current_revision == s.update_revision and s.updated_replicas == 3


def test_partition_and_parallel_policy():
    w = World(NOW)
    s = make_sts("web", 3, {"app": "web"})
    s.spec.pod_management_policy = "Parallel"
    w.add(s)
    step(w, kubelet=False)
    assert names(w) == ["web-0", "web-1", "web-2"]
    for _ in range(4):
        step(w)
    s = w.get("StatefulSet", "web")
    s.spec.template.spec.containers[0].image = "img:2"
    s.spec.update_strategy.rolling_update.partition = 2
    w.objects[("StatefulSet", "default", "web")] = s
    for _ in range(10):
        step(w)
    images = {p.metadata.name: p.spec.containers[0].image for p in w.list("Pod")}
    assert images["web-2"] == "img:2"
    assert images["web-0"] != "img:2" and images["web-1"] != "img:2"


def test_failed_pod_is_recreated():
    w = World(NOW)
    w.add(make_sts("web", 1, {"app": "web"}))
    for _ in range(3):
        step(w)
    p = w.get("Pod", "web-0")
    p.status.phase = "Failed"
    w.objects[("Pod", "default", "web-0")] = p
    result = statefulset.reconcile(w.get("StatefulSet", "web"), w.list("Pod"), [], w.now)
    assert [d.name for d in result.of_type(Delete)] == ["web-0"]
