"""Every verb of the CLI against a real API server (one in-process replica over the
MemoryStore, controllers off: the tests write statuses themselves)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from corral import manifest
from corral.client import Client
from corral.errors import NotFound
from tests.cli.conftest import Result

Cli = Callable[..., Result]

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: localhost/busybox:latest
        command: [httpd, -f, -p, "8080"]
        ports: [{containerPort: 8080, name: http}]
        resources:
          requests: {cpu: 0.1, memory: 16Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop, labels: {tier: back}}
data:
  mode: fast
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
"""


@pytest.fixture
def client(memserver: str) -> Iterator[Client]:
    c = Client([memserver])
    try:
        yield c
    finally:
        c.close()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_creates_namespaces_first_then_reports_unchanged(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", APP)
    r = cli("apply", "-f", path)
    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == ["namespace/shop created", "deployment.apps/web created",
                                  "service/web created", "configmap/settings created"]
    r = cli("apply", "-f", path)
    assert r.out.splitlines() == ["namespace/shop unchanged", "deployment.apps/web unchanged",
                                  "service/web unchanged", "configmap/settings unchanged"]
    r = cli("apply", "-f", write(tmp_path, "app2.yaml", APP.replace("replicas: 2",
                                                                     "replicas: 4")))
    assert "deployment.apps/web configured" in r.out.splitlines()


def test_bad_document_anywhere_writes_nothing(cli: Cli, client: Client, tmp_path: Path) -> None:
    bad_name = APP + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, " \
                     "namespace: shop}\n"
    r = cli("apply", "-f", write(tmp_path, "bad.yaml", bad_name))
    assert r.code == 1 and r.out == ""
    assert len(r.err.splitlines()) == 1
    first = r.err.splitlines()[0]
    assert first.startswith(f"error: {tmp_path}/bad.yaml: document 5 (ConfigMap Bad_Name): ")
    assert "metadata.name" in first
    with pytest.raises(NotFound):
        client.get("Namespace", "shop")

    missing_ns = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: nowhere}\n"
    r = cli("apply", "-f", write(tmp_path, "ns.yaml", missing_ns))
    assert r.code == 1
    assert r.err.startswith(f'error: {tmp_path}/ns.yaml: document 1 (ConfigMap a): '
                            f'namespaces "nowhere" not found')

    r = cli("apply", "-n", "other", "-f", write(tmp_path, "app.yaml", APP))
    assert r.code == 1
    assert 'the namespace from the manifest "shop" does not match the namespace "other"' in r.err
    with pytest.raises(NotFound):
        client.get("Namespace", "shop")


def test_apply_from_stdin_and_a_folder(cli: Cli, client: Client, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "b-cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: team}\n")
    (folder / "a-ns.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}')
    r = cli("apply", "-f", str(folder))
    assert r.out.splitlines() == ["namespace/team created", "configmap/b created"]
    r = cli("apply", "-f", "-", "-n", "team",
            stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n")
    assert r.out == "configmap/c created\n"
    assert client.get("ConfigMap", "c", "team").data["k"] == "v"


def test_get_outputs(cli: Cli, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    r = cli("get", "deploy", "-n", "shop")
    assert r.out.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert r.out.splitlines()[1].split()[:4] == ["web", "0/2", "0", "0"]
    r = cli("get", "deploy", "-n", "shop", "-o", "wide")
    assert r.out.splitlines()[1].split()[5:] == ["web", "localhost/busybox:latest", "app=web"]
    r = cli("get", "all", "-n", "shop")
    assert [line.split()[0] for line in r.out.splitlines() if line] == [
        "NAME", "service/web", "NAME", "deployment.apps/web"]
    r = cli("get", "cm,svc", "-n", "shop", "-o", "name")
    assert r.out.splitlines() == ["configmap/settings", "service/web"]
    r = cli("get", "cm", "-A", "-l", "tier=back")
    assert r.out.splitlines()[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert r.out.splitlines()[1].split()[:3] == ["shop", "settings", "1"]
    r = cli("get", "cm", "-n", "shop", "-l", "tier in (front)")
    assert (r.code, r.out, r.err) == (0, "", "No resources found in shop namespace.\n")
    r = cli("get", "ns", "--field-selector", "metadata.name=shop", "-o", "name")
    assert r.out == "namespace/shop\n"
    r = cli("get", "svc", "web", "-n", "shop", "-o", "json")
    obj = json.loads(r.out)
    assert obj["kind"] == "Service" and obj["spec"]["ports"][0]["targetPort"] == "http"
    r = cli("get", "svc", "-n", "shop", "-o", "yaml")
    assert yaml.safe_load(r.out)["kind"] == "List"
    r = cli("get", "svc", "web", "nope", "-n", "shop")
    assert r.code == 1
    assert r.out.splitlines()[1].split()[0] == "web"
    assert r.err == 'error: services "nope" not found\n'
    r = cli("get", "svc", "web", "-A")
    assert r.code == 1 and "across all namespaces" in r.err


def test_yaml_output_applies_back_unchanged(cli: Cli, client: Client, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    out = cli("get", "deploy,svc,cm", "-n", "shop", "-o", "yaml").out
    # A controller writes the status meanwhile: the saved resourceVersion is stale now,
    # and apply (declarative) still finds nothing to change.
    set_status(client, replicas=1)
    r = cli("apply", "-f", "-", stdin=out)
    assert r.out.splitlines() == ["deployment.apps/web unchanged", "service/web unchanged",
                                  "configmap/settings unchanged"]
    one = cli("get", "deploy", "web", "-n", "shop", "-o", "json").out
    assert cli("apply", "-f", "-", stdin=one).out == "deployment.apps/web unchanged\n"


def test_delete_variants(cli: Cli, client: Client, tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", APP)
    cli("apply", "-f", path)
    r = cli("delete", "cm", "settings", "nope", "-n", "shop")
    assert r.code == 1
    assert r.out == 'configmap "settings" deleted\n'
    assert r.err == 'error: configmaps "nope" not found\n'
    assert cli("delete", "cm", "nope", "-n", "shop", "--ignore-not-found").code == 0
    r = cli("delete", "deploy/web", "-n", "shop", "--cascade=orphan", "--wait=false")
    assert (r.code, r.out) == (0, 'deployment.apps "web" deleted\n')
    # Orphan: the garbage collector's finalizer holds the object until it has run.
    d = client.get("Deployment", "web", "shop")
    assert "orphan" in d.metadata.finalizers and d.metadata.HasField("deletion_timestamp")
    r = cli("delete", "-f", path, "--wait=false")
    assert r.out.splitlines()[-1] == 'namespace "shop" deleted'
    with pytest.raises(NotFound):
        client.get("Namespace", "shop")


def test_delete_by_selector_and_all(cli: Cli, client: Client) -> None:
    cli("create", "namespace", "lab")
    for name, tier in (("a", "x"), ("b", "y"), ("c", "x")):
        cli("apply", "-n", "lab", "-f", "-", stdin=(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: "
            f"{{tier: {tier}}}}}\n"))
    assert cli("delete", "cm", "-l", "tier=x", "-n", "lab").out.splitlines() == [
        'configmap "a" deleted', 'configmap "c" deleted']
    assert cli("delete", "cm", "--all", "-n", "lab").out == 'configmap "b" deleted\n'
    r = cli("delete", "cm", "--all", "-n", "lab")
    assert (r.code, r.err) == (0, "No resources found in lab namespace.\n")
    r = cli("create", "namespace", "lab")
    assert r.code == 1 and r.err.startswith("error: ") and "already exists" in r.err


def test_scale(cli: Cli, client: Client, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    r = cli("scale", "deployment", "web", "-n", "shop", "--replicas", "5")
    assert (r.code, r.out) == (0, "deployment.apps/web scaled\n")
    assert client.get("Deployment", "web", "shop").spec.replicas == 5
    r = cli("scale", "deploy/web", "-n", "shop", "--replicas", "1", "--current-replicas", "3")
    assert r.code == 1 and "expected replicas to be 3, was 5" in r.err
    r = cli("scale", "svc", "web", "-n", "shop", "--replicas", "1")
    assert r.code == 1 and "services are not supported here" in r.err
    r = cli("scale", "deploy", "nope", "-n", "shop", "--replicas", "1")
    assert (r.code, r.err) == (1, 'error: deployments.apps "nope" not found\n')


def make_revision(client: Client, deployment: object, revision: int, image: str,
                  cause: str) -> None:
    from corral.v1 import apps_pb2

    d = deployment
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = f"web-rev{revision}"
    rs.metadata.namespace = "shop"
    rs.metadata.annotations["deployment.kubernetes.io/revision"] = str(revision)
    rs.metadata.annotations["kubernetes.io/change-cause"] = cause
    rs.metadata.owner_references.add(api_version="apps/v1", kind="Deployment", name="web",
                                     uid=d.metadata.uid, controller=True)  # type: ignore[attr-defined]
    rs.spec.replicas = 0
    rs.spec.selector.CopyFrom(d.spec.selector)  # type: ignore[attr-defined]
    rs.spec.template.CopyFrom(d.spec.template)  # type: ignore[attr-defined]
    rs.spec.template.metadata.labels["pod-template-hash"] = f"rev{revision}"
    rs.spec.template.spec.containers[0].image = image
    client.create(rs)


def test_rollout_history_undo_pause_resume(cli: Cli, client: Client, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    d = client.get("Deployment", "web", "shop")
    make_revision(client, d, 1, "localhost/busybox:1", "first")
    make_revision(client, d, 2, "localhost/busybox:2", "second")
    r = cli("rollout", "history", "deployment", "web", "-n", "shop")
    assert r.out == ("deployment.apps/web\nREVISION   CHANGE-CAUSE\n1          first\n"
                     "2          second\n")
    r = cli("rollout", "history", "deploy/web", "-n", "shop", "--revision", "1")
    assert "deployment.apps/web with revision #1" in r.out
    assert "Image:        localhost/busybox:1" in r.out

    r = cli("rollout", "undo", "deployment/web", "-n", "shop")
    assert (r.code, r.out) == (0, "deployment.apps/web rolled back\n")
    d = client.get("Deployment", "web", "shop")
    assert d.spec.template.spec.containers[0].image == "localhost/busybox:1"
    assert "pod-template-hash" not in d.spec.template.metadata.labels
    r = cli("rollout", "undo", "deployment/web", "-n", "shop", "--to-revision", "1")
    assert r.out == ("deployment.apps/web skipped rollback (current template already matches "
                     "revision 1)\n")
    r = cli("rollout", "undo", "deployment/web", "-n", "shop", "--to-revision", "7")
    assert (r.code, r.err) == (1, "error: unable to find specified revision 7 in history\n")

    assert cli("rollout", "pause", "deployment/web", "-n", "shop").out == (
        "deployment.apps/web paused\n")
    assert client.get("Deployment", "web", "shop").spec.paused
    r = cli("rollout", "pause", "deployment/web", "-n", "shop")
    assert (r.code, r.err) == (1, 'error: deployments.apps "web" is already paused\n')
    r = cli("rollout", "undo", "deployment/web", "-n", "shop")
    assert r.code == 1 and "cannot rollback a paused deployment" in r.err
    assert cli("rollout", "resume", "deployment/web", "-n", "shop").out == (
        "deployment.apps/web resumed\n")
    assert not client.get("Deployment", "web", "shop").spec.paused


def set_status(client: Client, **fields: int) -> None:
    d = client.get("Deployment", "web", "shop")
    d.status.observed_generation = d.metadata.generation
    for key, value in fields.items():
        setattr(d.status, key, value)
    client.update_status(d)


def test_rollout_status_follows_until_done(cli: Cli, client: Client, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    set_status(client, replicas=2, updated_replicas=1)

    def controller() -> None:  # plays the deployment controller
        time.sleep(0.5)
        set_status(client, replicas=2, updated_replicas=2, ready_replicas=1)
        time.sleep(0.3)
        set_status(client, replicas=2, updated_replicas=2, ready_replicas=2,
                   available_replicas=2)

    t = threading.Thread(target=controller)
    t.start()
    try:
        r = cli("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "20s")
    finally:
        t.join()
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == ('Waiting for deployment "web" rollout to finish: 1 out of 2 new '
                        "replicas have been updated...")
    assert lines[-1] == 'deployment "web" successfully rolled out'
    assert any("1 of 2 updated replicas are ready" in line for line in lines)


def test_rollout_status_fails_on_progress_deadline(cli: Cli, client: Client,
                                                   tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    d = client.get("Deployment", "web", "shop")
    d.status.observed_generation = d.metadata.generation
    d.status.conditions.add(type="Progressing", status="False",
                            reason="ProgressDeadlineExceeded")
    client.update_status(d)
    r = cli("rollout", "status", "deployment/web", "-n", "shop")
    assert (r.code, r.err) == (1, 'error: deployment "web" exceeded its progress deadline\n')
    r = cli("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "1s",
            "--watch=false")
    assert r.code == 1
    set_status(client, replicas=2, updated_replicas=0)
    d = client.get("Deployment", "web", "shop")
    del d.status.conditions[:]
    client.update_status(d)
    r = cli("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "1s")
    assert r.code == 1 and "timed out waiting for the rollout" in r.err


NODES = """\
apiVersion: v1
kind: Node
metadata: {name: h1, labels: {node-role.kubernetes.io/worker: ""}}
---
apiVersion: v1
kind: Node
metadata: {name: h2}
"""


def bound_pod(client: Client, name: str, node: str, owner: str = "",
              namespace: str = "default") -> None:
    from corral.v1 import core_pb2

    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    if owner:
        pod.metadata.owner_references.add(api_version="apps/v1", kind=owner, name="o",
                                          uid=f"uid-{owner}", controller=True)
    pod.spec.node_name = node
    pod.spec.containers.add(name="c", image="localhost/busybox:latest")
    client.create(pod)


def test_cordon_uncordon_drain(cli: Cli, client: Client, tmp_path: Path) -> None:
    assert cli("apply", "-f", write(tmp_path, "nodes.yaml", NODES)).code == 0
    assert cli("cordon", "h2").out == "node/h2 cordoned\n"
    assert cli("cordon", "h2").out == "node/h2 already cordoned\n"
    assert client.get("Node", "h2").spec.unschedulable
    r = cli("get", "nodes")
    assert r.out.splitlines()[1].split()[:3] == ["h1", "Unknown", "worker"]
    assert r.out.splitlines()[2].split()[:2] == ["h2", "Unknown,SchedulingDisabled"]
    assert cli("uncordon", "h2").out == "node/h2 uncordoned\n"
    assert cli("cordon", "nope").err == 'error: nodes "nope" not found\n'

    bound_pod(client, "rs-1", "h1", "ReplicaSet")
    bound_pod(client, "rs-2", "h1", "ReplicaSet")
    bound_pod(client, "ds-1", "h1", "DaemonSet")
    bound_pod(client, "bare", "h1")
    bound_pod(client, "elsewhere", "h2", "ReplicaSet")
    r = cli("drain", "h1", "--grace-period", "0")
    assert r.code == 1
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): " \
           "default/ds-1" in r.err
    assert "cannot delete Pods that declare no controller (use --force to override): " \
           "default/bare" in r.err
    assert client.get("Node", "h1").spec.unschedulable  # cordoned even so, as kubectl
    assert client.get("Pod", "rs-1", "default")  # nothing deleted

    r = cli("drain", "h1", "--ignore-daemonsets", "--force", "--grace-period", "0",
            "--timeout", "20s")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == "node/h1 already cordoned"
    assert r.out.splitlines()[-1] == "node/h1 drained"
    assert "evicting pod default/rs-1" in r.out and "pod/rs-2 evicted" in r.out
    assert "Warning: ignoring DaemonSet-managed Pods: default/ds-1" in r.err
    left = {p.metadata.name for p in client.list("Pod", "default")[0]}
    assert left == {"ds-1", "elsewhere"}


def test_top_nodes(cli: Cli, client: Client, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "nodes.yaml", NODES))
    node = client.get("Node", "h1")
    node.status.capacity.update({"cpu": "2", "memory": "2Gi"})
    node.status.allocatable.update({"cpu": "2", "memory": "2Gi"})
    node.status.usage.cpu_percent = 50.0
    node.status.usage.memory_used_bytes = 512 * 2**20
    node.status.usage.timestamp.GetCurrentTime()
    client.update_status(node)
    r = cli("top", "nodes")
    assert r.out.splitlines() == [
        "NAME   CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%",
        "h1     1000m        50%         512Mi           25%",
        "h2     <unknown>    <unknown>   <unknown>       <unknown>"]


def test_get_watch_prints_changes(cli: Cli, client: Client) -> None:
    cli("create", "ns", "w")
    results: list[Result] = []
    t = threading.Thread(target=lambda: results.append(
        cli("get", "cm", "-n", "w", "-w", "--request-timeout", "4s")))
    t.start()
    time.sleep(1.5)
    cli("apply", "-n", "w", "-f", "-",
        stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: b}\n")
    cli("delete", "cm", "first", "-n", "w")
    t.join(timeout=30)
    r = results[0]
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == ["first", "first"]


def test_describe_shows_events_of_the_object(cli: Cli, client: Client, tmp_path: Path) -> None:
    from corral.v1 import core_pb2

    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    d = client.get("Deployment", "web", "shop")
    for target, reason in ((d, "ScalingReplicaSet"), (None, "Unrelated")):
        ev = core_pb2.Event(api_version="v1", kind="Event", reason=reason, type="Normal",
                            message=f"{reason} happened", count=1)
        ev.metadata.name = f"web.{reason.lower()}"
        ev.metadata.namespace = "shop"
        ev.involved_object.kind = "Deployment"
        ev.involved_object.name = "web" if target is not None else "other"
        ev.involved_object.namespace = "shop"
        ev.involved_object.uid = d.metadata.uid if target is not None else "x"
        ev.source.component = "deployment-controller"
        ev.last_timestamp.GetCurrentTime()
        client.create(ev)
    r = cli("describe", "deployment", "web", "-n", "shop")
    assert r.code == 0
    assert r.out.startswith("Name:")
    events = r.out[r.out.index("Events:"):]
    assert "ScalingReplicaSet" in events and "deployment-controller" in events
    assert "Unrelated" not in events
    r = cli("get", "events", "-n", "shop")
    assert r.out.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT",
                                             "MESSAGE"]
    assert "deployment/web" in r.out
    r = cli("describe", "deploy", "nope", "-n", "shop")
    assert (r.code, r.err) == (1, 'error: deployments.apps "nope" not found\n')


def test_dry_runs_write_nothing(cli: Cli, client: Client, tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", APP)
    r = cli("apply", "-f", path, "--dry-run", "client")
    assert r.out.splitlines()[0] == "namespace/shop checked (client dry run)"
    r = cli("apply", "-f", path, "--dry-run", "server")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "namespace/shop created (server dry run)", "deployment.apps/web created (server dry run)",
        "service/web created (server dry run)", "configmap/settings created (server dry run)"]
    with pytest.raises(NotFound):
        client.get("Namespace", "shop")


def test_output_of_objects_is_kubernetes_shaped(cli: Cli, tmp_path: Path) -> None:
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    data = yaml.safe_load(cli("get", "deploy", "web", "-n", "shop", "-o", "yaml").out)
    assert list(data)[:3] == ["apiVersion", "kind", "metadata"]
    assert isinstance(data["metadata"]["generation"], int)
    assert data["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "0.1", "memory": "16Mi"}
    assert manifest.parse_dict(data).spec.replicas == 2


def test_kubernetes_docs_manifests_apply_and_reapply_unchanged(cli: Cli) -> None:
    docs = str(Path(__file__).parent / "manifests" / "k8s-docs.yaml")
    assert cli("create", "namespace", "kube-system").code == 0
    r = cli("apply", "-f", docs)
    assert r.code == 0, r.err
    assert [line.rsplit(" ", 1)[1] for line in r.out.splitlines()] == ["created"] * 11
    assert r.out.splitlines()[0] == "namespace/development created"  # Namespaces first
    r = cli("apply", "-f", docs)
    assert [line.rsplit(" ", 1)[1] for line in r.out.splitlines()] == ["unchanged"] * 11
