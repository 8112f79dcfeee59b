"""Validation: every rule refuses bad input naming the field path, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.api.handler import Handler
from corral.errors import Invalid
from corral.v1 import core_pb2
from tests.api.conftest import deployment, obj, pod, service


def refused(h: Handler, o: Any) -> Invalid:
    before = h.store.revision
    with pytest.raises(Invalid) as info:
        h.create(o)
    assert h.store.revision == before, "a refused create must write nothing"
    return info.value


def test_container_port_out_of_range_names_the_full_path(h: Handler) -> None:
    d = deployment()
    c = d.spec.template.spec.containers[0]
    c.ports.add(container_port=80)
    c.ports.add(container_port=70000)
    err = refused(h, d)
    assert err.field == "spec.template.spec.containers[0].ports[1].containerPort"
    assert ("spec.template.spec.containers[0].ports[1].containerPort: must be between 1 and "
            "65535, got 70000") in str(err)


def test_every_problem_is_listed(h: Handler) -> None:
    p = pod()
    p.spec.restart_policy = "Sometimes"
    p.spec.containers[0].image = ""
    err = refused(h, p)
    text = str(err)
    assert "spec.containers[0].image: required value" in text
    assert "spec.restartPolicy: unsupported value 'Sometimes'" in text


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "a" * 254, "web."])
def test_invalid_names_are_refused(h: Handler, name: str) -> None:
    p = pod(name=name)
    err = refused(h, p)
    assert err.field == "metadata.name"


def test_service_names_are_dns1035_labels(h: Handler) -> None:
    err = refused(h, service(name="1web"))
    assert err.field == "metadata.name"
    assert "start with an alphabetic character" in str(err)


def test_namespace_required_for_namespaced_kinds(h: Handler) -> None:
    p = pod(ns="")
    with pytest.raises(Invalid) as info:
        h.create(p)
    assert "metadata.namespace" in str(info.value)


def test_bad_label_value(h: Handler) -> None:
    p = pod()
    p.metadata.labels["app"] = "not ok!"
    err = refused(h, p)
    assert err.field == "metadata.labels[app]"


def test_selector_must_match_template_labels(h: Handler) -> None:
    d = deployment()
    d.spec.template.metadata.labels["app"] = "other"
    err = refused(h, d)
    assert err.field == "spec.template.metadata.labels"
    assert "`selector` does not match template `labels`" in str(err)


def test_workload_selector_required(h: Handler) -> None:
    d = deployment()
    d.spec.ClearField("selector")
    err = refused(h, d)
    assert err.field == "spec.selector"


def test_unsupported_operator_in_match_expressions(h: Handler) -> None:
    d = deployment()
    d.spec.selector.match_expressions.add(key="tier", operator="Like", values=["a"])
    err = refused(h, d)
    assert err.field == "spec.selector.matchExpressions[0].operator"


def test_deployment_template_restart_policy_must_be_always(h: Handler) -> None:
    d = deployment()
    d.spec.template.spec.restart_policy = "Never"
    err = refused(h, d)
    assert err.field == "spec.template.spec.restartPolicy"


def test_job_needs_onfailure_or_never(h: Handler) -> None:
    job = obj({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "once", "namespace": "default"},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "c", "image": "busybox:1.36"}]}}}})
    err = refused(h, job)
    assert err.field == "spec.template.spec.restartPolicy"
    job.spec.template.spec.restart_policy = "Always"
    err = refused(h, job)
    assert "unsupported value 'Always'" in str(err)
    job.spec.template.spec.restart_policy = "Never"
    created = h.create(job)
    assert created.spec.completions == 1


def test_rolling_update_both_zero(h: Handler) -> None:
    d = deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    err = refused(h, d)
    assert err.field == "spec.strategy.rollingUpdate.maxUnavailable"


def test_recreate_with_rolling_update_params(h: Handler) -> None:
    d = deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
    err = refused(h, d)
    assert err.field == "spec.strategy.rollingUpdate"


def test_negative_replicas(h: Handler) -> None:
    d = deployment(replicas=-1)
    err = refused(h, d)
    assert str(err).endswith("spec.replicas: must be greater than or equal to 0, got -1")


def test_probe_rules(h: Handler) -> None:
    p = pod()
    c = p.spec.containers[0]
    c.liveness_probe.http_get.port.string_value = "http"
    c.liveness_probe.http_get.scheme = "HTTPS"
    c.readiness_probe.initial_delay_seconds = 1  # no handler
    err = refused(h, p)
    text = str(err)
    assert "spec.containers[0].livenessProbe.httpGet.port: no container port named 'http'" in text
    assert "spec.containers[0].livenessProbe.httpGet.scheme: unsupported value 'HTTPS'" in text
    assert "spec.containers[0].readinessProbe: must specify exactly one handler" in text


def test_probe_on_named_port_is_fine(h: Handler) -> None:
    p = pod()
    c = p.spec.containers[0]
    c.ports.add(name="http", container_port=8080)
    c.readiness_probe.tcp_socket.port.string_value = "http"
    created = h.create(p)
    probe = created.spec.containers[0].readiness_probe
    assert (probe.period_seconds, probe.timeout_seconds, probe.failure_threshold) == (10, 1, 3)


def test_volume_mount_needs_a_volume(h: Handler) -> None:
    p = pod()
    p.spec.containers[0].volume_mounts.add(name="data", mount_path="/data")
    err = refused(h, p)
    assert err.field == "spec.containers[0].volumeMounts[0].name"


def test_volume_needs_exactly_one_source(h: Handler) -> None:
    p = pod()
    v = p.spec.volumes.add(name="data")
    v.empty_dir.SetInParent()
    v.host_path.path = "/tmp"
    err = refused(h, p)
    assert err.field == "spec.volumes[0]"


def test_requests_above_limits(h: Handler) -> None:
    p = pod()
    r = p.spec.containers[0].resources
    r.limits["memory"] = "64Mi"
    r.requests["memory"] = "128Mi"
    r.requests["cpu"] = "lots"
    err = refused(h, p)
    text = str(err)
    assert "spec.containers[0].resources.requests[memory]: must be less than or equal" in text
    assert "spec.containers[0].resources.requests[cpu]: quantities must match" in text


def test_unsupported_protocol_is_refused_naming_the_field(h: Handler) -> None:
    p = pod()
    p.spec.containers[0].ports.add(container_port=80, protocol="SCTP")
    err = refused(h, p)
    assert err.field == "spec.containers[0].ports[0].protocol"


def test_unsupported_dns_policy(h: Handler) -> None:
    p = pod(dnsPolicy="None")
    err = refused(h, p)
    assert err.field == "spec.dnsPolicy"


def test_toleration_rules(h: Handler) -> None:
    p = pod(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}])
    err = refused(h, p)
    assert err.field == "spec.tolerations[0].operator"


def test_service_rules(h: Handler) -> None:
    assert refused(h, service(ports=[])).field == "spec.ports"
    err = refused(h, service(ports=[{"port": 80}, {"port": 81, "name": "b"}]))
    assert err.field == "spec.ports[0].name"
    err = refused(h, service(ports=[{"port": 80, "nodePort": 30080}]))
    assert err.field == "spec.ports[0].nodePort"
    assert "may not be used when `type` is 'ClusterIP'" in str(err)
    err = refused(h, service(type="NodePort", ports=[{"port": 80, "nodePort": 80}]))
    assert "80 is not in the node port range 30000-32767" in str(err)
    err = refused(h, service(type="Magic"))
    assert err.field == "spec.type"
    err = refused(h, service(clusterIP="192.168.1.1"))
    assert err.field == "spec.clusterIP"
    assert "not in the service CIDR 10.96.0.0/12" in str(err)
    err = refused(h, service(type="ExternalName", ports=[]))
    assert err.field == "spec.externalName"
    err = refused(h, service(ports=[{"port": 80, "targetPort": 0.5}]))
    assert err.field == "spec.ports[0].targetPort"


def test_configmap_and_secret_keys(h: Handler) -> None:
    cm = obj({"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "c", "namespace": "default"}, "data": {"a/b": "x"}})
    assert refused(h, cm).field == "data[a/b]"


def test_secret_values_never_appear_in_errors(h: Handler) -> None:
    s = core_pb2.Secret()
    s.metadata.name = "creds"
    s.metadata.namespace = "default"
    s.string_data["bad key"] = "hunter2-TOPSECRET"
    s.data["also bad!"] = b"other-TOPSECRET"
    s.type = "kubernetes.io/tls"
    err = refused(h, s)
    assert "TOPSECRET" not in str(err)
    assert "hunter2" not in str(err)
    assert "data[bad key]" in str(err)
    assert "data[tls.crt]" in str(err)


def test_unknown_binary_fields_are_refused(h: Handler) -> None:
    p = pod()
    data = p.SerializeToString() + b"\xf8\x06\x01"  # field 111, varint 1
    q = core_pb2.Pod()
    q.ParseFromString(data)
    err = refused(h, q)
    assert "unknown field number(s) [111]" in str(err)


def test_wrong_api_version_or_kind(h: Handler) -> None:
    p = pod()
    p.api_version = "v2"
    assert refused(h, p).field == "apiVersion"


def test_pvc_access_modes(h: Handler) -> None:
    pvc = obj({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "d", "namespace": "default"},
               "spec": {"accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "1Gi"}}}})
    err = refused(h, pvc)
    assert err.field == "spec.accessModes[0]"


def test_node_cidr_outside_cluster_cidr(h: Handler) -> None:
    node = obj({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "spec": {"podCIDR": "192.168.0.0/24"}})
    err = refused(h, node)
    assert err.field == "spec.podCIDR"


def test_cluster_scoped_object_with_namespace(h: Handler) -> None:
    node = obj({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "namespace": "default"}})
    assert refused(h, node).field == "metadata.namespace"


def test_resource_version_on_create(h: Handler) -> None:
    p = pod()
    p.metadata.resource_version = "5"
    with pytest.raises(Invalid) as info:
        h.create(p)
    assert info.value.field == "metadata.resourceVersion"


def test_two_controllers_in_owner_references(h: Handler) -> None:
    p = pod()
    for name in ("a", "b"):
        p.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name=name,
                                        uid=name, controller=True)
    assert refused(h, p).field == "metadata.ownerReferences"


def test_statefulset_mounts_may_name_claim_templates(h: Handler) -> None:
    sts = obj({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                            "containers": [{"name": "c", "image": "nginx:1.25",
                                            "volumeMounts": [{"name": "www",
                                                              "mountPath": "/www"}]}]}},
                        "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}}}]}})
    created = h.create(sts)
    assert created.spec.pod_management_policy == "OrderedReady"
    del sts.spec.volume_claim_templates[:]
    sts.metadata.name = "other"
    assert refused(h, sts).field == "spec.template.spec.containers[0].volumeMounts[0].name"
