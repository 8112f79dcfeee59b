"""Deployment reconcile, driven step by step in an in-memory world."""

from __future__ import annotations

from google.protobuf import struct_pb2

from controlplane.controllers import deployment, replicaset
from controlplane.controllers import rollout as ru
from controlplane.controllers.actions import Create, UpdateStatus
from controlplane.controllers.podutil import copy, get_condition, is_ready, is_terminating

from .objects import NOW
from .objects import deployment as make_deployment
from .world import World


def step(w: World, *, slow: bool = True, kubelet: bool = True, ready: bool = True) -> None:
    for d in w.list("Deployment"):
        w.apply(deployment.reconcile(d, w.list("ReplicaSet"), w.list("Pod"), w.now))
    for rs in w.list("ReplicaSet"):
        w.apply(replicaset.reconcile(rs, w.list("Pod"), w.now))
    if kubelet:
        w.kubelet(slow=slow, ready=ready)
    w.now += 1


def ready_pods(w: World, image: str | None = None) -> int:
    return sum(1 for p in w.list("Pod") if is_ready(p) and not is_terminating(p)
               and (image is None or p.spec.containers[0].image == image))


def set_image(w: World, name: str, image: str) -> None:
    d = w.get("Deployment", name)
    d.spec.template.spec.containers[0].image = image
    d.metadata.generation += 1
    w.objects[("Deployment", "default", name)] = d


def settle(w: World, steps: int = 40, **kw) -> None:
    for _ in range(steps):
        step(w, **kw)


def test_hash_is_stable_and_safe():
    d = make_deployment("web", 3, {"app": "web"})
    h = ru.template_hash(d.spec.template)
    assert h == ru.template_hash(copy(d.spec.template))
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert ru.template_hash(d.spec.template, 1) != h


def test_first_sync_creates_a_replicaset_with_revision_and_hash():
    d = make_deployment("web", 3, {"app": "web"})
    result = deployment.reconcile(d, [], [], NOW)
    rs = result.of_type(Create)[0].obj
    h = ru.template_hash(d.spec.template)
    assert rs.metadata.name == f"web-{h}"
    assert rs.metadata.labels["pod-template-hash"] == h
    assert rs.spec.selector.match_labels == {"app": "web", "pod-template-hash": h}
    assert rs.spec.template.metadata.labels["pod-template-hash"] == h
    assert rs.metadata.annotations[ru.REVISION] == "1"
    assert rs.metadata.annotations[ru.DESIRED_REPLICAS] == "3"
    assert rs.metadata.annotations[ru.MAX_REPLICAS] == "4"
    assert rs.spec.replicas == 3
    assert rs.metadata.owner_references[0].controller


def test_rollout_completes_with_status_and_conditions():
    w = World(NOW)
    w.add(make_deployment("web", 3, {"app": "web"}))
    settle(w, 12)
    d = w.get("Deployment", "web")
    s = d.status
    assert (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas) == (3, 3, 3, 3)
    assert d.metadata.annotations[ru.REVISION] == "1"
    prog = get_condition(s.conditions, "Progressing")
    assert (prog.status, prog.reason) == ("True", "NewReplicaSetAvailable")
    assert get_condition(s.conditions, "Available").status == "True"
    # Settled: nothing more to do.
    assert deployment.reconcile(d, w.list("ReplicaSet"), w.list("Pod"), w.now).actions == []


def test_rolling_update_never_drops_below_min_available_and_never_exceeds_surge():
    w = World(NOW)
    d = make_deployment("web", 4, {"app": "web"}, image="img:1")
    d.spec.strategy.rolling_update.max_unavailable.CopyFrom(struct_pb2.Value(number_value=1))
    d.spec.strategy.rolling_update.max_surge.CopyFrom(struct_pb2.Value(number_value=1))
    w.add(d)
    settle(w, 12)
    assert ready_pods(w, "img:1") == 4
    set_image(w, "web", "img:2")
    seen_min, seen_max = 99, 0
    for _ in range(60):
        step(w)
        seen_min = min(seen_min, ready_pods(w))
        live = [p for p in w.list("Pod") if not is_terminating(p)]
        seen_max = max(seen_max, len(live))
    assert ready_pods(w, "img:2") == 4 and ready_pods(w, "img:1") == 0
    assert seen_min >= 3, seen_min
    assert seen_max <= 5, seen_max
    d = w.get("Deployment", "web")
    assert d.metadata.annotations[ru.REVISION] == "2"
    revisions = sorted(ru.revision(rs) for rs in w.list("ReplicaSet"))
    assert revisions == [1, 2]
    assert any(e.startswith("ScalingReplicaSet: Scaled down replica set") for e in w.events)


def test_undo_brings_back_the_old_replicaset_with_the_next_revision():
    w = World(NOW)
    w.add(make_deployment("web", 2, {"app": "web"}, image="img:1"))
    settle(w, 10)
    first = w.list("ReplicaSet")[0].metadata.name
    set_image(w, "web", "img:2")
    settle(w, 20)
    # `corral rollout undo`: copy the old ReplicaSet's template back.
    old_rs = w.get("ReplicaSet", first)
    d = w.get("Deployment", "web")
    d.spec.template.CopyFrom(old_rs.spec.template)
    d.spec.template.metadata.labels.pop("pod-template-hash")
    w.objects[("Deployment", "default", "web")] = d
    settle(w, 20)
    rs = w.get("ReplicaSet", first)
    assert rs.metadata.annotations[ru.REVISION] == "3"
    assert rs.metadata.annotations[ru.REVISION_HISTORY] == "1"
    assert rs.spec.replicas == 2
    assert w.get("Deployment", "web").metadata.annotations[ru.REVISION] == "3"
    assert len(w.list("ReplicaSet")) == 2
    assert ready_pods(w, "img:1") == 2


def test_recreate_stops_all_old_pods_before_starting_new_ones():
    w = World(NOW)
    d = make_deployment("web", 3, {"app": "web"}, image="img:1")
    d.spec.strategy.type = "Recreate"
    w.add(d)
    settle(w, 10)
    set_image(w, "web", "img:2")
    for _ in range(20):
        step(w)
        images = {p.spec.containers[0].image for p in w.list("Pod")}
        assert images != {"img:1", "img:2"}, "old and new pods at once"
    assert ready_pods(w, "img:2") == 3


def test_paused_deployment_does_not_roll_but_scales():
    w = World(NOW)
    w.add(make_deployment("web", 2, {"app": "web"}, image="img:1"))
    settle(w, 10)
    d = w.get("Deployment", "web")
    d.spec.paused = True
    d.spec.template.spec.containers[0].image = "img:2"
    d.spec.replicas = 4
    w.objects[("Deployment", "default", "web")] = d
    settle(w, 10)
    assert ready_pods(w, "img:1") == 4 and ready_pods(w, "img:2") == 0
    cond = get_condition(w.get("Deployment", "web").status.conditions, "Progressing")
    assert (cond.status, cond.reason) == ("Unknown", "DeploymentPaused")
    d = w.get("Deployment", "web")
    d.spec.paused = False
    w.objects[("Deployment", "default", "web")] = d
    settle(w, 30)
    assert ready_pods(w, "img:2") == 4 and ready_pods(w, "img:1") == 0


def test_scaling_mid_rollout_is_proportional():
    w = World(NOW)
    d = make_deployment("web", 10, {"app": "web"}, image="img:1")
    w.add(d)
    settle(w, 10)
    set_image(w, "web", "img:2")
    # Pods of the new version never become ready: the rollout is stuck half-way.
    for _ in range(6):
        step(w, ready=False)
    before = {rs.metadata.name: rs.spec.replicas for rs in w.list("ReplicaSet")}
    d = w.get("Deployment", "web")
    d.spec.replicas = 20
    w.objects[("Deployment", "default", "web")] = d
    step(w, ready=False)
    after = {rs.metadata.name: rs.spec.replicas for rs in w.list("ReplicaSet")}
    assert sum(after.values()) == 20 + 5  # 25% surge of 20
    for name, size in before.items():
        assert after[name] >= size


def test_progress_deadline_exceeded():
    w = World(NOW)
    d = make_deployment("web", 2, {"app": "web"})
    d.spec.progress_deadline_seconds = 30
    w.add(d)
    for _ in range(5):
        step(w, ready=False)
    d = w.get("Deployment", "web")
    result = deployment.reconcile(d, w.list("ReplicaSet"), w.list("Pod"), w.now)
    assert result.requeue_after is not None and result.requeue_after <= 31
    w.now += 40
    step(w, ready=False)
    cond = get_condition(w.get("Deployment", "web").status.conditions, "Progressing")
    assert (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")
    assert 'has timed out progressing' in cond.message
    avail = get_condition(w.get("Deployment", "web").status.conditions, "Available")
    assert avail.status == "False"


def test_revision_history_limit_deletes_oldest_empty_replicasets():
    w = World(NOW)
    d = make_deployment("web", 1, {"app": "web"}, image="img:0")
    d.spec.revision_history_limit = 2
    w.add(d)
    settle(w, 8)
    for i in range(1, 6):
        set_image(w, "web", f"img:{i}")
        settle(w, 10)
    rss = w.list("ReplicaSet")
    assert sorted(ru.revision(rs) for rs in rss) == [4, 5, 6]
    assert ready_pods(w, "img:5") == 1


def test_adopts_orphan_replicaset_and_status_only_when_deleting():
    w = World(NOW)
    d = w.add(make_deployment("web", 1, {"app": "web"}))
    h = ru.template_hash(d.spec.template)
    orphan = deployment.reconcile(d, [], [], NOW).of_type(Create)[0].obj
    orphan.metadata.owner_references.pop()
    w.add(orphan)
    result = deployment.reconcile(w.get("Deployment", "web"), w.list("ReplicaSet"), [], NOW)
    adopted = [a for a in result.actions if str(a).startswith("update ReplicaSet")]
    assert adopted and adopted[0].obj.metadata.owner_references[0].uid == d.metadata.uid
    assert result.of_type(Create) == []
    d = w.get("Deployment", "web")
    d.metadata.deletion_timestamp.seconds = int(NOW)
    result = deployment.reconcile(d, w.list("ReplicaSet"), [], NOW)
    assert all(isinstance(a, UpdateStatus) or "ReplicaSet" in str(a) for a in result.actions)
    assert h
