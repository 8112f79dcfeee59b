"""corral.manifest: Kubernetes manifests in, one-line errors naming document and field,
Kubernetes-shaped output that reads back into the same messages."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import yaml

from corral import manifest
from corral.manifest import ManifestError

HERE = Path(__file__).parent
DOCS = HERE / "manifests" / "k8s-docs.yaml"


def parse(text: str, source: str = "app.yaml") -> list[manifest.Document]:
    return manifest.parse_text(text, source)


def error_of(text: str, source: str = "app.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        parse(text, source)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------- Kubernetes' own manifests


def test_kubernetes_docs_manifests_parse() -> None:
    docs = manifest.load([str(DOCS)])
    kinds = [d.info.kind for d in docs]
    assert kinds == ["Deployment", "Service", "ConfigMap", "Secret", "Secret", "Service",
                     "StatefulSet", "Job", "DaemonSet", "Pod", "Namespace"]
    deploy = docs[0].obj
    assert deploy.spec.replicas == 3
    assert deploy.spec.template.spec.containers[0].ports[0].container_port == 80
    svc = docs[1].obj
    assert svc.spec.ports[0].target_port.number_value == 9376
    cm = docs[2].obj
    assert cm.data["player_initial_lives"] == "3"
    assert cm.data["game.properties"] == "enemy.types=aliens,monsters\nplayer.maximum-lives=5\n"
    assert docs[3].obj.data[".secret-file"] == b"value-2\r\n\r\n"
    assert docs[4].obj.string_data["password"] == "t0p-Secret"
    assert docs[5].obj.spec.cluster_ip == "None"
    sts = docs[6].obj
    assert sts.spec.service_name == "nginx"
    assert sts.spec.volume_claim_templates[0].spec.resources.requests["storage"] == "1Gi"
    job = docs[7].obj
    assert list(job.spec.template.spec.containers[0].command) == [
        "perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"]
    assert job.spec.backoff_limit == 4
    ds = docs[8].obj
    assert ds.metadata.namespace == "kube-system"
    assert ds.spec.template.spec.tolerations[0].operator == "Exists"
    assert ds.spec.template.spec.volumes[0].host_path.path == "/var/log"
    pod = docs[9].obj
    assert pod.spec.containers[0].liveness_probe.http_get.port.number_value == 8080
    assert docs[0].where == f"{DOCS}: document 1 (Deployment nginx-deployment)"


def test_round_trip_through_yaml_and_json_gives_the_same_messages() -> None:
    docs = manifest.load([str(DOCS)])
    as_yaml = "---\n".join(manifest.dump_yaml(manifest.to_dict(d.obj)) for d in docs)
    again = parse(as_yaml)
    assert [d.obj for d in again] == [d.obj for d in docs]
    as_json = manifest.dump_json(manifest.as_list(manifest.to_dict(d.obj) for d in docs))
    assert [d.obj for d in parse(as_json, "all.json")] == [d.obj for d in docs]


def test_output_is_kubernetes_shaped() -> None:
    docs = manifest.load([str(DOCS)])
    svc = manifest.to_dict(docs[1].obj)
    assert list(svc)[:4] == ["apiVersion", "kind", "metadata", "spec"]
    assert svc["spec"]["ports"][0]["targetPort"] == 9376  # not 9376.0
    assert "status" not in svc
    deploy = docs[0].obj
    deploy.metadata.generation = 4
    deploy.metadata.creation_timestamp.FromJsonString("2024-01-02T03:04:05Z")
    deploy.status.ready_replicas = 2
    out = manifest.to_dict(deploy)
    assert list(out) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert out["metadata"]["generation"] == 4  # int64 as a number, not "4"
    assert out["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"
    assert out["status"] == {"readyReplicas": 2}
    # zero values are not printed
    assert "minReadySeconds" not in out["spec"]
    text = manifest.dump_yaml(manifest.to_dict(docs[2].obj))
    assert "game.properties: |\n" in text  # multi-line strings as blocks
    secret = manifest.to_dict(docs[3].obj)
    assert secret["data"] == {".secret-file": "dmFsdWUtMg0KDQo="}


def test_quantities_written_as_numbers_become_strings() -> None:
    docs = parse("""
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    resources:
      limits: {cpu: 1, memory: 134217728}
      requests: {cpu: 0.5}
""")
    res = docs[0].obj.spec.containers[0].resources
    assert dict(res.limits) == {"cpu": "1", "memory": "134217728"}
    assert dict(res.requests) == {"cpu": "0.5"}


def test_yaml_timestamps_stay_strings() -> None:
    docs = parse("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                 "  annotations: {since: 2024-01-01}\ndata: {when: 2024-01-01T10:00:00Z}\n")
    assert docs[0].obj.metadata.annotations["since"] == "2024-01-01"
    assert docs[0].obj.data["when"] == "2024-01-01T10:00:00Z"


def test_int_or_string_takes_names_and_percentages() -> None:
    docs = parse("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: "25%"}
  template:
    spec:
      containers:
      - name: c
        readinessProbe:
          tcpSocket: {port: http}
""")
    spec = docs[0].obj.spec
    assert spec.strategy.rolling_update.max_surge.number_value == 1
    assert spec.strategy.rolling_update.max_unavailable.string_value == "25%"
    out = manifest.to_dict(docs[0].obj)
    assert out["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": 1}


def test_empty_documents_and_nulls_are_skipped() -> None:
    docs = parse("---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n"
                 "  labels:\nspec:\n---\n")
    assert len(docs) == 1
    assert docs[0].index == 2  # the first `---` opens an empty document
    assert not docs[0].obj.metadata.labels


def test_kind_list_is_expanded() -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}, "spec": {"portz": 1}},
    ]})
    with pytest.raises(ManifestError) as info:
        parse(text, "list.json")
    assert str(info.value) == ("list.json: document 1 items[1] (Pod b): spec.portz: "
                               "unknown field (Corral does not support it)")


def test_json_stream_of_objects() -> None:
    text = ('{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}\n'
            '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}\n')
    assert [d.name for d in parse(text, "-")] == ["a", "b"]


# ----------------------------------------------------------- errors


def test_unknown_field_names_document_and_path() -> None:
    text = """apiVersion: v1
kind: Namespace
metadata: {name: first}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: web
        portz: [{containerPort: 80}]
"""
    assert error_of(text) == (
        "app.yaml: document 2 (Deployment web): spec.template.spec.containers[0].portz: "
        "unknown field (Corral does not support it; did you mean ports?)"
    )


def test_snake_case_spelling_is_refused_with_the_right_name() -> None:
    msg = error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                   "spec: {restart_policy: Never}\n")
    assert msg.endswith("spec.restart_policy: unknown field (Corral does not support it; "
                        "did you mean restartPolicy?)")


def test_unsupported_kubernetes_field_is_refused() -> None:
    msg = error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                   "spec: {containers: [{name: c, securityContext: {privileged: true}}]}\n")
    assert msg == ("app.yaml: document 1 (Pod p): spec.containers[0].securityContext: "
                   "unknown field (Corral does not support it)")


def test_wrong_types_name_what_was_expected() -> None:
    base = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n"
    assert error_of(base + "    ports: [{containerPort: x}]\n").endswith(
        'spec.containers[0].ports[0].containerPort: expected an integer, got string "x"')
    assert error_of(base + "    ports: [{containerPort: 80.5}]\n").endswith(
        "containerPort: expected an integer, got number 80.5")
    assert error_of(base + "    ports: [{containerPort: 99999999999}]\n").endswith(
        "containerPort: 99999999999 is out of range (-2147483648 to 2147483647)")
    assert error_of(base + "    env: [{name: A, value: 8080}]\n").endswith(
        "spec.containers[0].env[0].value: expected a string, got integer 8080 (quote it)")
    assert error_of(base + "    command: sh\n").endswith(
        'spec.containers[0].command: expected a list, got string "sh"')
    assert error_of(base + "    livenessProbe: {tcpSocket: {port: true}}\n").endswith(
        "livenessProbe.tcpSocket.port: expected an integer or a string, got boolean true")
    assert error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {v: 1}}\n").endswith(
        "metadata.labels[v]: expected a string, got integer 1 (quote it)")
    assert error_of("apiVersion: v1\nkind: Pod\nmetadata: [a]\n").endswith(
        "metadata: expected a mapping, got a list")
    assert error_of("apiVersion: v1\nkind: Node\nmetadata: {name: n}\n"
                    "spec: {unschedulable: 'yes'}\n").endswith(
        'spec.unschedulable: expected a boolean (true or false), got string "yes"')
    assert error_of(base + "    resources: {limits: {cpu: 2x}}\n").startswith(
        "app.yaml: document 1 (Pod p): spec.containers[0].resources.limits[cpu]: quantities")


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: indent\n")
    assert error_of(text) == ("app.yaml: document 2: YAML syntax error at line 9, column 7: "
                              "mapping values are not allowed in this context")


def test_duplicate_keys_are_refused() -> None:
    msg = error_of("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\n")
    assert msg == ("app.yaml: document 1: YAML syntax error at line 5, column 3: "
                   "duplicate key 'name'")


def test_json_syntax_error_names_line_and_column() -> None:
    msg = error_of('{"apiVersion": "v1",\n "kind": "Pod",,}', "pod.json")
    assert msg.startswith("pod.json: document 1: JSON syntax error at line 2, column 16:")


def test_kind_and_api_version_errors() -> None:
    assert error_of("apiVersion: v1\nmetadata: {name: a}\n") == (
        "app.yaml: document 1: missing kind (every object needs apiVersion and kind)")
    assert error_of("apiVersion: networking.k8s.io/v1\nkind: Ingress\n").startswith(
        "app.yaml: document 1: unknown kind 'Ingress' (Corral serves: ConfigMap, ")
    assert error_of("apiVersion: apps/v1\nkind: deployment\n") == (
        "app.yaml: document 1: unknown kind 'deployment' (did you mean Deployment?)")
    assert error_of("apiVersion: extensions/v1beta1\nkind: Deployment\n"
                    "metadata: {name: w}\n") == (
        'app.yaml: document 1 (Deployment w): apiVersion: Deployment is served as apps/v1, '
        'not "extensions/v1beta1"')
    assert error_of("kind: Deployment\nmetadata: {name: w}\n") == (
        "app.yaml: document 1 (Deployment w): apiVersion: required (for Deployment: apps/v1)")
    assert error_of("- a\n- b\n") == (
        "app.yaml: document 1: expected a mapping with apiVersion, kind and metadata, "
        "got a list")


def test_secret_values_never_appear_in_errors() -> None:
    msg = error_of("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
                   "data: {password: 'hunter2-not-base64!'}\n")
    assert "hunter2" not in msg
    assert msg.endswith("data[password]: invalid base64 data (use stringData for plain text)")
    msg = error_of("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
                   "stringData: {pin: 123456}\n")
    assert "123456" not in msg
    assert msg.endswith("stringData[pin]: expected a string, got an integer")


# ----------------------------------------------------------- files and folders


def test_folder_reads_manifest_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    (tmp_path / "a.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}')
    (tmp_path / "c.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n")
    (tmp_path / "notes.txt").write_text("not a manifest: {")
    docs = manifest.load([str(tmp_path)])
    assert [d.name for d in docs] == ["a", "b", "c"]
    assert docs[0].source == os.path.join(str(tmp_path), "a.json")


def test_stdin_and_missing_files(tmp_path: Path) -> None:
    stdin = io.StringIO("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    docs = manifest.load(["-"], stdin=stdin)
    assert docs[0].where == "<stdin>: document 1 (Namespace x)"
    with pytest.raises(ManifestError) as info:
        manifest.load([str(tmp_path / "nope.yaml")])
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file or folder"
    with pytest.raises(ManifestError) as info:
        manifest.load([str(tmp_path)])
    assert "no manifests in this folder" in str(info.value)


def test_dump_yaml_quotes_what_would_read_back_as_another_type() -> None:
    docs = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                 "data: {a: 'true', b: '3', c: '2024-01-01', d: 'null'}\n")
    text = manifest.dump_yaml(manifest.to_dict(docs[0].obj))
    assert yaml.safe_load(text)["data"] == {"a": "true", "b": "3", "c": "2024-01-01",
                                            "d": "null"}
