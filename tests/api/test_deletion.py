"""Delete: immediate removal, graceful Pod deletion, finalizers, propagation, preconditions."""

from __future__ import annotations

import pytest

from controlplane.api.handler import Handler
from corral.errors import Conflict, Invalid, NotFound
from tests.api.conftest import config_map, deployment, pod


def bound_pod(h: Handler, name: str = "web", grace: int | None = None) -> None:
    p = pod(name=name)
    if grace is not None:
        p.spec.termination_grace_period_seconds = grace
    h.create(p)
    cur = h.get("Pod", "default", name)
    cur.spec.node_name = "n1"
    h.update(cur)
    cur = h.get("Pod", "default", name)
    cur.status.phase = "Running"
    h.update_status(cur)


def test_plain_delete_removes(h: Handler) -> None:
    h.create(config_map(a="1"))
    obj, removed = h.delete("ConfigMap", "default", "cfg")
    assert removed and obj.data["a"] == "1"
    with pytest.raises(NotFound):
        h.get("ConfigMap", "default", "cfg")
    with pytest.raises(NotFound):
        h.delete("ConfigMap", "default", "cfg")


def test_unbound_pod_is_removed_at_once(h: Handler) -> None:
    h.create(pod())
    _, removed = h.delete("Pod", "default", "web")
    assert removed


def test_bound_running_pod_is_deleted_gracefully(h: Handler) -> None:
    bound_pod(h, grace=20)
    obj, removed = h.delete("Pod", "default", "web")
    assert not removed
    m = obj.metadata
    assert m.HasField("deletion_timestamp")
    assert m.deletion_grace_period_seconds == 20
    assert m.deletion_timestamp.seconds >= m.creation_timestamp.seconds + 20
    # Still there for the node agent, which stops it and deletes with grace 0.
    assert h.get("Pod", "default", "web").metadata.HasField("deletion_timestamp")
    again, removed = h.delete("Pod", "default", "web")
    assert not removed and again.metadata.deletion_grace_period_seconds == 20
    _, removed = h.delete("Pod", "default", "web", grace_period_seconds=0)
    assert removed
    with pytest.raises(NotFound):
        h.get("Pod", "default", "web")


def test_request_grace_overrides_and_may_only_shorten(h: Handler) -> None:
    bound_pod(h)
    obj, _ = h.delete("Pod", "default", "web", grace_period_seconds=10)
    assert obj.metadata.deletion_grace_period_seconds == 10
    obj, _ = h.delete("Pod", "default", "web", grace_period_seconds=60)
    assert obj.metadata.deletion_grace_period_seconds == 10
    obj, _ = h.delete("Pod", "default", "web", grace_period_seconds=3)
    assert obj.metadata.deletion_grace_period_seconds == 3


def test_force_delete_of_bound_pod(h: Handler) -> None:
    bound_pod(h)
    _, removed = h.delete("Pod", "default", "web", grace_period_seconds=0)
    assert removed


def test_finished_pod_is_removed_at_once(h: Handler) -> None:
    bound_pod(h)
    cur = h.get("Pod", "default", "web")
    cur.status.phase = "Succeeded"
    h.update_status(cur)
    _, removed = h.delete("Pod", "default", "web")
    assert removed


def test_finalizers_hold_the_object_until_emptied(h: Handler) -> None:
    cm = config_map(a="1")
    cm.metadata.finalizers.append("example.com/cleanup")
    h.create(cm)
    obj, removed = h.delete("ConfigMap", "default", "cfg")
    assert not removed and obj.metadata.HasField("deletion_timestamp")
    # Updates still work; adding a new finalizer does not.
    cur = h.get("ConfigMap", "default", "cfg")
    cur.metadata.finalizers.append("another.io/x")
    with pytest.raises(Invalid):
        h.update(cur)
    cur = h.get("ConfigMap", "default", "cfg")
    del cur.metadata.finalizers[:]
    h.update(cur)
    with pytest.raises(NotFound):
        h.get("ConfigMap", "default", "cfg")


def test_graceful_pod_with_finalizer(h: Handler) -> None:
    bound_pod(h)
    cur = h.get("Pod", "default", "web")
    cur.metadata.finalizers.append("example.com/f")
    h.update(cur)
    h.delete("Pod", "default", "web")
    # Emptying finalizers does not remove a pod its node agent has not stopped yet.
    cur = h.get("Pod", "default", "web")
    del cur.metadata.finalizers[:]
    h.update(cur)
    assert h.get("Pod", "default", "web").metadata.deletion_grace_period_seconds == 30
    _, removed = h.delete("Pod", "default", "web", grace_period_seconds=0)
    assert removed


@pytest.mark.parametrize(("policy", "finalizer"), [("Foreground", "foregroundDeletion"),
                                                   ("Orphan", "orphan")])
def test_propagation_policies_add_their_finalizer(h: Handler, policy: str,
                                                  finalizer: str) -> None:
    h.create(deployment())
    obj, removed = h.delete("Deployment", "default", "web", propagation_policy=policy)
    assert not removed
    assert list(obj.metadata.finalizers) == [finalizer]
    assert obj.metadata.HasField("deletion_timestamp")
    # What the garbage collector does when it is done: remove the finalizer.
    cur = h.get("Deployment", "default", "web")
    del cur.metadata.finalizers[:]
    h.update(cur)
    with pytest.raises(NotFound):
        h.get("Deployment", "default", "web")


def test_background_is_the_default(h: Handler) -> None:
    h.create(deployment())
    _, removed = h.delete("Deployment", "default", "web", propagation_policy="Background")
    assert removed


def test_bad_delete_options(h: Handler) -> None:
    h.create(deployment())
    with pytest.raises(Invalid) as info:
        h.delete("Deployment", "default", "web", propagation_policy="Sideways")
    assert info.value.field == "propagationPolicy"
    with pytest.raises(Invalid):
        h.delete("Deployment", "default", "web", grace_period_seconds=-1)
    h.get("Deployment", "default", "web")


def test_preconditions(h: Handler) -> None:
    created = h.create(config_map(a="1"))
    with pytest.raises(Conflict) as info:
        h.delete("ConfigMap", "default", "cfg", precondition_uid="not-the-uid")
    assert "UID in precondition" in str(info.value)
    with pytest.raises(Conflict):
        h.delete("ConfigMap", "default", "cfg", precondition_resource_version="1")
    _, removed = h.delete("ConfigMap", "default", "cfg", precondition_uid=created.metadata.uid,
                          precondition_resource_version=created.metadata.resource_version)
    assert removed


def test_dry_run_delete(h: Handler) -> None:
    h.create(config_map(a="1"))
    _, removed = h.delete("ConfigMap", "default", "cfg", dry_run=True)
    assert removed
    h.get("ConfigMap", "default", "cfg")
