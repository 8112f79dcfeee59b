"""ReplicaSet reconcile: scaling, adoption, release, deletion order, status."""

from __future__ import annotations

from controlplane.controllers import replicaset
from controlplane.controllers.actions import Create, Delete, Update, UpdateStatus

from .objects import NOW, pod
from .objects import replicaset as make_rs
from .world import World


def test_creates_missing_pods_with_owner_and_template():
    rs = make_rs("web-abc", 3, {"app": "web"})
    result = replicaset.reconcile(rs, [], NOW)
    creates = result.of_type(Create)
    assert len(creates) == 3
    p = creates[0].obj
    assert p.metadata.generate_name == "web-abc-"
    assert p.metadata.labels["app"] == "web"
    ref = p.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ReplicaSet", "web-abc",
                                                            rs.metadata.uid, True)
    assert creates[0].event.message == "Created pod: {name}"


def test_adopts_matching_orphans_and_ignores_other_controllers():
    rs = make_rs("web-abc", 2, {"app": "web"})
    other = make_rs("other", 1, {"app": "web"})
    orphan = pod("orphan", labels={"app": "web"})
    foreign = pod("foreign", labels={"app": "web"}, owner=other)
    unrelated = pod("db", labels={"app": "db"})
    result = replicaset.reconcile(rs, [orphan, foreign, unrelated], NOW)
    updates = result.of_type(Update)
    assert [u.obj.metadata.name for u in updates] == ["orphan"]
    assert updates[0].obj.metadata.owner_references[0].uid == rs.metadata.uid
    # Conditional on the version the decision read.
    assert updates[0].obj.metadata.resource_version == orphan.metadata.resource_version
    assert len(result.of_type(Create)) == 1


def test_releases_owned_pods_that_stop_matching():
    rs = make_rs("web-abc", 1, {"app": "web"})
    relabelled = pod("p1", labels={"app": "debug"}, owner=rs)
    result = replicaset.reconcile(rs, [relabelled], NOW)
    update = result.of_type(Update)[0]
    assert list(update.obj.metadata.owner_references) == []
    assert len(result.of_type(Create)) == 1


def test_scale_down_deletes_least_valuable_pods_first():
    rs = make_rs("web-abc", 2, {"app": "web"})
    labels = {"app": "web"}
    pods = [
        pod("ready-old", labels=labels, owner=rs, node_name="n1", phase="Running", ready=True,
            created=NOW - 500),
        pod("unscheduled", labels=labels, owner=rs),
        pod("notready", labels=labels, owner=rs, node_name="n1", phase="Running"),
        pod("ready-new", labels=labels, owner=rs, node_name="n1", phase="Running", ready=True,
            created=NOW - 10, ready_since=NOW - 5),
    ]
    result = replicaset.reconcile(rs, pods, NOW)
    assert [d.name for d in result.of_type(Delete)] == ["unscheduled", "notready"]


def test_terminating_and_finished_pods_do_not_count():
    rs = make_rs("web-abc", 2, {"app": "web"})
    labels = {"app": "web"}
    done = pod("done", labels=labels, owner=rs, phase="Succeeded")
    going = pod("going", labels=labels, owner=rs, node_name="n1", phase="Running")
    going.metadata.deletion_timestamp.seconds = int(NOW)
    result = replicaset.reconcile(rs, [done, going], NOW)
    assert len(result.of_type(Create)) == 2


def test_status_counts_and_min_ready_seconds_requeue():
    rs = make_rs("web-abc", 2, {"app": "web"})
    rs.spec.min_ready_seconds = 10
    labels = {"app": "web"}
    pods = [
        pod("a", labels=labels, owner=rs, phase="Running", ready=True, ready_since=NOW - 60),
        pod("b", labels=labels, owner=rs, phase="Running", ready=True, ready_since=NOW - 4),
    ]
    result = replicaset.reconcile(rs, pods, NOW)
    status = result.of_type(UpdateStatus)[0].obj.status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 1)
    assert 5.9 < result.requeue_after < 6.2


def test_being_deleted_is_not_scaled():
    rs = make_rs("web-abc", 3, {"app": "web"})
    rs.metadata.deletion_timestamp.seconds = int(NOW)
    assert replicaset.reconcile(rs, [], NOW).of_type(Create) == []


def test_converges_in_a_world_and_is_then_quiet():
    w = World(NOW)
    rs = w.add(make_rs("web-abc", 3, {"app": "web"}))
    for _ in range(4):
        w.apply(replicaset.reconcile(w.get("ReplicaSet", "web-abc"), w.list("Pod"), w.now))
        w.kubelet()
    assert len(w.list("Pod")) == 3
    final = replicaset.reconcile(w.get("ReplicaSet", "web-abc"), w.list("Pod"), w.now)
    assert final.actions == [], str(final)
    assert w.get("ReplicaSet", "web-abc").status.ready_replicas == 3
    assert rs.metadata.uid
