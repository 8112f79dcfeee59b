"""Handler semantics over a MemoryStore: create, get, list, update (CAS and
read-modify-write), status, apply, defaulting, size cap, namespaces, dedup."""

from __future__ import annotations

import threading

import pytest

from controlplane.api.handler import Handler
from corral.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Invalid,
    NotFound,
    TooLarge,
)
from corral.limits import MAX_OBJECT_BYTES
from tests.api.conftest import config_map, deployment, obj, pod, service


def test_create_stamps_and_defaults(h: Handler) -> None:
    created = h.create(pod())
    m = created.metadata
    assert m.uid and m.generation == 1 and m.creation_timestamp.seconds > 0
    assert int(m.resource_version) == h.store.revision
    assert created.api_version == "v1" and created.kind == "Pod"
    assert created.spec.restart_policy == "Always"
    assert created.spec.termination_grace_period_seconds == 30
    assert created.spec.dns_policy == "ClusterFirst"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.status.phase == "Pending"
    got = h.get("Pod", "default", "web")
    assert got == created


def test_create_twice_already_exists(h: Handler) -> None:
    h.create(pod())
    with pytest.raises(AlreadyExists):
        h.create(pod())


def test_missing_namespace_is_not_found_naming_it(h: Handler) -> None:
    with pytest.raises(NotFound) as info:
        h.create(pod(ns="nowhere"))
    assert "nowhere" in str(info.value)


def test_generate_name(h: Handler) -> None:
    p = pod(name="")
    p.metadata.generate_name = "web-"
    a, b = h.create(p), h.create(p)
    assert a.metadata.name.startswith("web-") and len(a.metadata.name) == 9
    assert a.metadata.name != b.metadata.name


def test_dry_run_writes_nothing(h: Handler) -> None:
    before = h.store.revision
    out = h.create(service(), dry_run=True)
    assert out.spec.cluster_ip
    assert h.store.revision == before
    with pytest.raises(NotFound):
        h.get("Service", "default", "web")


def test_update_with_resource_version_is_compare_and_set(h: Handler) -> None:
    created = h.create(config_map(a="1"))
    first = config_map(a="2")
    first.metadata.resource_version = created.metadata.resource_version
    updated = h.update(first)
    assert updated.data["a"] == "2"
    stale = config_map(a="3")
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(Conflict) as info:
        h.update(stale)
    assert "get it again" in str(info.value)
    assert h.get("ConfigMap", "default", "cfg").data["a"] == "2"


def test_update_without_resource_version_is_read_modify_write(h: Handler) -> None:
    h.create(config_map(a="1"))
    out = h.update(config_map(a="9"))
    assert out.data["a"] == "9"


def test_update_of_missing_object(h: Handler) -> None:
    with pytest.raises(NotFound):
        h.update(config_map(a="1"))


def test_update_keeps_status_and_server_metadata(h: Handler) -> None:
    created = h.create(deployment())
    st = h.get("Deployment", "default", "web")
    st.status.replicas = 3
    st = h.update_status(st)
    d = deployment()
    d.spec.replicas = 4
    d.metadata.labels["x"] = "y"
    out = h.update(d)
    assert out.status.replicas == 3
    assert out.metadata.uid == created.metadata.uid
    assert out.metadata.creation_timestamp == created.metadata.creation_timestamp
    assert out.metadata.labels["x"] == "y"
    assert out.metadata.generation == 2  # spec changed


def test_generation_only_on_spec_change(h: Handler) -> None:
    h.create(deployment())
    d = deployment()
    d.metadata.labels["x"] = "y"
    assert h.update(d).metadata.generation == 1
    d.spec.replicas = 5
    assert h.update(d).metadata.generation == 2


def test_update_status_keeps_spec(h: Handler) -> None:
    h.create(pod())
    p = pod()
    p.spec.containers[0].image = "other:2"
    p.status.phase = "Running"
    p.status.pod_ip = "10.244.1.5"
    out = h.update_status(p)
    assert out.status.phase == "Running"
    assert out.spec.containers[0].image == "busybox:1.36"


def test_update_status_on_kind_without_status(h: Handler) -> None:
    h.create(config_map(a="1"))
    with pytest.raises(Invalid):
        h.update_status(config_map(a="1"))


def test_noop_update_writes_nothing(h: Handler) -> None:
    h.create(config_map(a="1"))
    before = h.store.revision
    h.update(config_map(a="1"))
    assert h.store.revision == before


def test_concurrent_read_modify_writes_all_land(h: Handler) -> None:
    h.create(config_map())
    errors: list[Exception] = []

    def writer(i: int) -> None:
        for j in range(10):
            try:
                cur = h.get("ConfigMap", "default", "cfg")
                cur.data[f"w{i}-{j}"] = "x"
                cur.metadata.resource_version = ""
                # Without resourceVersion the handler retries lost CAS itself, but the
                # object it writes is what this thread read: concurrent keys may be lost.
                h.update(cur)
            except Exception as err:
                errors.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_cas_loop_gives_every_writer_its_turn(h: Handler) -> None:
    """The pattern controllers use: get, change, update with resourceVersion, retry."""
    h.create(config_map())

    def writer(i: int) -> None:
        for j in range(10):
            while True:
                cur = h.get("ConfigMap", "default", "cfg")
                cur.data[f"w{i}-{j}"] = "x"
                try:
                    h.update(cur)
                    break
                except Conflict:
                    continue

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h.get("ConfigMap", "default", "cfg").data) == 40


def test_immutable_selector(h: Handler) -> None:
    h.create(deployment())
    d = deployment()
    d.spec.selector.match_labels["extra"] = "x"
    d.spec.template.metadata.labels["extra"] = "x"
    with pytest.raises(FailedPrecondition) as info:
        h.update(d)
    assert "spec.selector: field is immutable" in str(info.value)


def test_pod_spec_is_immutable_except_images(h: Handler) -> None:
    h.create(pod())
    p = pod()
    p.spec.containers[0].image = "busybox:2"
    assert h.update(p).spec.containers[0].image == "busybox:2"
    p.spec.containers[0].args.append("x")
    with pytest.raises(FailedPrecondition) as info:
        h.update(p)
    assert "pod updates may not change fields other than" in str(info.value)


def test_pod_binding_sets_node_name_once(h: Handler) -> None:
    created = h.create(pod())
    bind = h.get("Pod", "default", "web")
    bind.spec.node_name = "n1"
    bound = h.update(bind)
    assert bound.spec.node_name == "n1"
    # A second scheduler with the old resourceVersion loses.
    again = pod()
    again.spec.node_name = "n2"
    again.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(Conflict):
        h.update(again)
    again.metadata.resource_version = bound.metadata.resource_version
    with pytest.raises(FailedPrecondition) as info:
        h.update(again)
    assert "spec.nodeName" in str(info.value)


def test_tolerations_may_only_be_added(h: Handler) -> None:
    h.create(pod(tolerations=[{"key": "a", "operator": "Exists"}]))
    p = pod(tolerations=[{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}])
    assert len(h.update(p).spec.tolerations) == 2
    with pytest.raises(FailedPrecondition):
        h.update(pod(tolerations=[{"key": "b", "operator": "Exists"}]))


def test_apply_created_configured_unchanged(h: Handler) -> None:
    out, result = h.apply(deployment())
    assert result == "created"
    rev = h.store.revision
    out2, result = h.apply(deployment())
    assert result == "unchanged"
    assert h.store.revision == rev, "unchanged apply must not write"
    assert out2.metadata.resource_version == out.metadata.resource_version
    _, result = h.apply(deployment(minReadySeconds=5))
    assert result == "configured"


def test_apply_keeps_status_allocations_node_name_and_scaled_replicas(h: Handler) -> None:
    svc, _ = h.apply(service(type="NodePort"))
    ip, port = svc.spec.cluster_ip, svc.spec.ports[0].node_port
    again, result = h.apply(service(type="NodePort"))
    assert result == "unchanged"
    assert (again.spec.cluster_ip, again.spec.ports[0].node_port) == (ip, port)
    # A scale and a status write, then the same manifest again: both kept.
    d, _ = h.apply(deployment())
    d.spec.replicas = 7
    h.update(d)
    st = h.get("Deployment", "default", "web")
    st.status.ready_replicas = 7
    h.update_status(st)
    out, result = h.apply(deployment())
    assert result == "unchanged"
    assert out.spec.replicas == 7 and out.status.ready_replicas == 7
    # Bound pods keep their node.
    h.apply(pod())
    bind = h.get("Pod", "default", "web")
    bind.spec.node_name = "n1"
    h.update(bind)
    out, result = h.apply(pod())
    assert result == "unchanged" and out.spec.node_name == "n1"


def test_apply_keeps_controller_annotations(h: Handler) -> None:
    d, _ = h.apply(deployment())
    d.metadata.annotations["deployment.kubernetes.io/revision"] = "3"
    h.update(d)
    out, result = h.apply(deployment())
    assert result == "unchanged"
    assert out.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


def test_apply_job_keeps_generated_selector(h: Handler) -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "once", "namespace": "default"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "busybox:1.36"}]}}}}
    job, result = h.apply(obj(manifest))
    uid = job.metadata.uid
    assert job.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == uid
    assert job.spec.template.metadata.labels["job-name"] == "once"
    _, result = h.apply(obj(manifest))
    assert result == "unchanged"


def test_apply_invalid_writes_nothing(h: Handler) -> None:
    h.apply(deployment())
    before = h.store.revision
    bad = deployment(replicas=-2)
    with pytest.raises(Invalid):
        h.apply(bad)
    assert h.store.revision == before


def test_size_cap(h: Handler) -> None:
    big = config_map(blob="x" * (MAX_OBJECT_BYTES + 10))
    before = h.store.revision
    with pytest.raises(TooLarge) as info:
        h.create(big)
    assert "limit is 1048576 bytes" in str(info.value)
    assert h.store.revision == before
    fits = config_map(blob="x" * (MAX_OBJECT_BYTES - 1000))
    h.create(fits)


def test_secret_string_data_merged_and_not_stored(h: Handler) -> None:
    s = obj({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "creds", "namespace": "default"},
             "stringData": {"password": "s3cret"}})
    out = h.create(s)
    assert out.type == "Opaque"
    assert out.data["password"] == b"s3cret"
    assert not out.string_data
    raw = h.store.get(("Secret", "default", "creds"))
    assert raw is not None and raw.data.count(b"s3cret") == 1


def test_big_secret_error_has_no_value(h: Handler) -> None:
    s = obj({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "creds", "namespace": "default"}})
    s.data["k"] = b"SECRETVALUE" * (MAX_OBJECT_BYTES // 10)
    with pytest.raises((TooLarge, Invalid)) as info:
        h.create(s)
    assert "SECRETVALUE" not in str(info.value)


def test_list_with_label_and_field_selectors(h: Handler) -> None:
    for name, labels, node in (("a", {"app": "web", "tier": "fe"}, "n1"),
                               ("b", {"app": "web", "tier": "be"}, "n2"),
                               ("c", {"app": "db"}, "")):
        p = pod(name=name)
        p.metadata.labels.clear()
        p.metadata.labels.update(labels)
        h.create(p)
        if node:
            cur = h.get("Pod", "default", name)
            cur.spec.node_name = node
            h.update(cur)

    def names(**kw: str) -> list[str]:
        return [o.metadata.name for o in h.list("Pod", "default", **kw)[0]]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app!=web") == ["c"]
    assert names(label_selector="tier in (fe,xx)") == ["a"]
    assert names(label_selector="tier notin (fe)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(field_selector="spec.nodeName=n1") == ["a"]
    assert names(field_selector="spec.nodeName=") == ["c"]
    assert names(field_selector="spec.nodeName!=,metadata.name!=a") == ["b"]
    assert names(label_selector="app=web", field_selector="spec.nodeName=n2") == ["b"]
    with pytest.raises(Invalid) as info:
        names(field_selector="spec.image=x")
    assert "field label not supported" in str(info.value)
    with pytest.raises(Invalid):
        names(label_selector="app in (")


def test_list_all_namespaces_and_revision(h: Handler) -> None:
    h.create(obj({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}))
    h.create(pod())
    h.create(pod(ns="other"))
    items, rev = h.list("pods")
    assert [(o.metadata.namespace, o.metadata.name) for o in items] == [
        ("default", "web"), ("other", "web")]
    assert rev == h.store.revision


def test_namespace_cascade_is_one_revision(h: Handler) -> None:
    h.create(obj({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
    h.create(pod(ns="team"))
    h.create(config_map(ns="team"))
    h.create(pod(ns="default"))
    before = h.store.revision
    _, removed = h.delete("Namespace", "", "team")
    assert removed
    assert h.store.revision == before + 1
    assert h.list("Pod", "team")[0] == []
    assert h.list("ConfigMap", "team")[0] == []
    assert len(h.list("Pod", "default")[0]) == 1
    with pytest.raises(NotFound):
        h.create(pod(ns="team"))


@pytest.mark.parametrize("name", ["default", "corral-system"])
def test_system_namespaces_cannot_be_deleted(h: Handler, name: str) -> None:
    with pytest.raises(FailedPrecondition):
        h.delete("Namespace", "", name)
    assert h.get("Namespace", "", name).status.phase == "Active"


def test_ensure_namespaces_is_idempotent(h: Handler) -> None:
    before = h.store.revision
    assert h.ensure_namespaces() == []
    assert h.store.revision == before


def test_retried_write_with_same_request_id_applies_once(h: Handler) -> None:
    first = h.create(pod(), request_id="req-1")
    again = h.create(pod(), request_id="req-1")
    assert again.metadata.uid == first.metadata.uid
    assert again.metadata.resource_version == first.metadata.resource_version
    c = h.create(config_map(a="1"))
    u = config_map(a="2")
    u.metadata.resource_version = c.metadata.resource_version
    one = h.update(u, request_id="req-2")
    two = h.update(u, request_id="req-2")  # would conflict without the id
    assert one.metadata.resource_version == two.metadata.resource_version
    gone, removed = h.delete("ConfigMap", "default", "cfg", request_id="req-3")
    again_gone, removed2 = h.delete("ConfigMap", "default", "cfg", request_id="req-3")
    assert removed and removed2
    assert again_gone.metadata.resource_version == gone.metadata.resource_version
    with pytest.raises(NotFound):
        h.delete("ConfigMap", "default", "cfg", request_id="req-4")


def test_get_unknown_kind(h: Handler) -> None:
    with pytest.raises(Invalid) as info:
        h.get("Gadget", "default", "x")
    assert "Gadget" in str(info.value)
