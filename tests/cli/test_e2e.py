"""End to end: the real `corral` console script, as a subprocess, against three real
`corral-controlplane` replicas on loopback (tests/cluster.py).

One cluster serves the whole module (starting three replicas is the slow part);
each test works in namespaces of its own. The test that kills a replica runs
last.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from tests.cluster import Cluster, free_port

pytestmark = pytest.mark.integration

CORRAL = str(Path(sys.executable).parent / "corral")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    failed_before = request.session.testsfailed
    c = Cluster(tmp_path_factory.mktemp("e2e"), 3)
    try:
        yield c
    finally:
        if request.session.testsfailed > failed_before:
            for r in c.replicas:
                print(c.tail(r, 40), file=sys.stderr)
        c.close()


def corral(*args: str, servers: Sequence[str], stdin: str | None = None,
           env: dict[str, str] | None = None, home: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    full_env["HOME"] = str(home or "/nonexistent")
    if servers:
        full_env["CORRAL_SERVER"] = ",".join(servers)
    full_env.update(env or {})
    return subprocess.run([CORRAL, *args], input=stdin, capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def app_manifest(ns: str) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: localhost/busybox:latest
        command: [httpd, -f, -p, "8080"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  greeting: hello
"""


def test_apply_on_one_replica_read_on_another(cluster: Cluster, tmp_path: Path) -> None:
    ns = unique("e2e")
    first, _, third = cluster.endpoints
    path = tmp_path / "app.yaml"
    path.write_text(app_manifest(ns))
    r = corral("apply", "-f", str(path), servers=[first])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"namespace/{ns} created", "deployment.apps/web created",
                                     "service/web created", "configmap/settings created"]

    r = corral("get", "all", "-n", ns, servers=[third])
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines() if line]
    # (the controllers may have made the ReplicaSet and pods by now)
    assert {"service/web", "deployment.apps/web"} <= set(names)
    assert names[0] == "NAME"
    r = corral("get", "deploy", "web", "-n", ns, "-o", "json", servers=[third])
    assert json.loads(r.stdout)["spec"]["replicas"] == 3

    r = corral("describe", "svc", "web", "-n", ns, servers=[third])
    assert r.returncode == 0, r.stderr
    assert f"Namespace:          {ns}" in r.stdout
    assert "TargetPort:         8080/TCP" in r.stdout
    assert r.stdout.rstrip().endswith("Events:  <none>")

    r = corral("delete", "cm", "settings", "-n", ns, servers=[first])
    assert (r.returncode, r.stdout) == (0, 'configmap "settings" deleted\n')
    r = corral("get", "cm", "settings", "-n", ns, servers=[third])
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", 'error: configmaps "settings" not found\n')
    r = corral("delete", "ns", ns, servers=[third])
    assert r.returncode == 0, r.stderr
    r = corral("get", "deploy", "-n", ns, servers=[first])
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr == f"No resources found in {ns} namespace.\n"


def test_bad_multi_document_apply_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    ns = unique("bad")
    bad = app_manifest(ns).replace("containerPort: 8080", "containerPort: x")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    r = corral("apply", "-f", str(path), servers=cluster.endpoints)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines()[0] == (
        f'error: {path}: document 2 (Deployment web): spec.template.spec.containers[0].'
        f'ports[0].containerPort: expected an integer, got string "x"')

    # Server-side validation (an out-of-range port) refuses the whole file too.
    path.write_text(app_manifest(ns).replace("port: 80,", "port: 80000,"))
    r = corral("apply", "-f", str(path), servers=cluster.endpoints)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith(
        f"error: {path}: document 3 (Service web): ")
    assert "spec.ports[0].port" in r.stderr
    for kind, name in (("namespace", ns), ("deployment", "web")):
        r = corral("get", kind, name, "-n", ns, servers=cluster.endpoints)
        assert r.returncode == 1 and "not found" in r.stderr

    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
                    "  - name: c\n    image: x\n   bad: indent\n")
    r = corral("apply", "-f", str(path), servers=cluster.endpoints)
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {path}: document 1: YAML syntax error at line 8")

    r = corral("get", "widgets", servers=cluster.endpoints)
    assert r.returncode == 1
    assert r.stderr.startswith("error: the server doesn't have a resource type 'widgets'")


def test_yaml_output_round_trips_through_apply(cluster: Cluster, tmp_path: Path) -> None:
    ns = unique("rt")
    corral("apply", "-f", "-", stdin=app_manifest(ns), servers=cluster.endpoints)
    out = corral("get", "deploy,svc,cm", "-n", ns, "-o", "yaml", servers=cluster.endpoints)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["kind"] == "List"
    r = corral("apply", "-f", "-", stdin=out.stdout, servers=cluster.endpoints[::-1])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["deployment.apps/web unchanged", "service/web unchanged",
                                     "configmap/settings unchanged"]
    corral("delete", "ns", ns, servers=cluster.endpoints)


def test_cluster_status_json(cluster: Cluster) -> None:
    r = corral("cluster", "status", "-o", "json", servers=cluster.endpoints)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    names = sorted(m["name"] for m in status["members"])
    assert names == sorted(rep.name for rep in cluster.replicas)
    assert status["leader"] == cluster.leader().name
    assert status["term"] >= 1 and status["commitIndex"] >= 1
    for m in status["members"]:
        assert m["reachable"] is True
        assert m["appliedIndex"] >= 1
        assert m["raftAddress"] == cluster.replica(m["name"]).raft_address
    assert [m["state"] for m in status["members"]].count("leader") == 1
    r = corral("cluster", "status", servers=cluster.endpoints)
    assert r.stdout.splitlines()[0].startswith(f"Leader: {status['leader']}   Term: ")


def test_config_file_and_unix_socket(cluster: Cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".corral").mkdir(parents=True)
    ns = unique("cfg")
    sock = cluster.replicas[1].socket
    (home / ".corral" / "config.yaml").write_text(
        yaml.safe_dump({"servers": [f"unix:{sock}"], "namespace": ns}))
    r = corral("create", "namespace", ns, servers=[], home=home)
    assert (r.returncode, r.stdout) == (0, f"namespace/{ns} created\n"), r.stderr
    r = corral("apply", "-f", "-", servers=[], home=home,
               stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert r.stdout == "configmap/c created\n", r.stderr
    r = corral("get", "cm", "-o", "name", servers=[cluster.endpoints[0]], home=home)
    assert r.stdout == "configmap/c\n"  # namespace from the file, server from CORRAL_SERVER
    corral("delete", "ns", ns, servers=cluster.endpoints)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


def test_rollout_history_undo_and_scale_with_the_controllers(cluster: Cluster) -> None:
    """The leader's deployment controller makes a ReplicaSet per template; the CLI reads
    the revisions it records and rolls back to one."""
    ns = unique("roll")
    servers = cluster.endpoints
    v1 = app_manifest(ns)
    v2 = v1.replace("localhost/busybox:latest", "localhost/busybox:v2").replace(
        "labels: {app: web}\nspec:\n  replicas",
        "labels: {app: web}\n  annotations: {kubernetes.io/change-cause: image v2}\nspec:\n"
        "  replicas")
    assert corral("apply", "-f", "-", stdin=v1, servers=servers).returncode == 0

    def revisions() -> list[str]:
        r = corral("rollout", "history", "deployment/web", "-n", ns, servers=servers)
        return r.stdout.splitlines()[2:]

    wait_for(lambda: len(revisions()) == 1, "revision 1")
    r = corral("apply", "-f", "-", stdin=v2, servers=servers)
    assert "deployment.apps/web configured" in r.stdout
    wait_for(lambda: len(revisions()) == 2, "revision 2")
    assert [line.split(None, 1) for line in revisions()] == [["1", "<none>"],
                                                              ["2", "image v2"]]

    r = corral("rollout", "undo", "deployment", "web", "-n", ns, servers=servers)
    assert (r.returncode, r.stdout) == (0, "deployment.apps/web rolled back\n"), r.stderr
    r = corral("get", "deploy", "web", "-n", ns, "-o", "json", servers=servers)
    spec = json.loads(r.stdout)["spec"]["template"]
    assert spec["spec"]["containers"][0]["image"] == "localhost/busybox:latest"
    assert "pod-template-hash" not in spec["metadata"]["labels"]
    # The controller re-numbers revision 1's ReplicaSet as revision 3 (as Kubernetes).
    wait_for(lambda: [line.split(None, 1)[0] for line in revisions()] == ["2", "3"],
             "revision 3")
    # kubectl's rule: the change-cause is the one recorded with the revision rolled to.
    assert revisions()[-1].split(None, 1) == ["3", "<none>"]

    r = corral("scale", "deploy/web", "-n", ns, "--replicas", "1", servers=servers)
    assert r.stdout == "deployment.apps/web scaled\n"

    def desired() -> list[str]:
        r = corral("get", "rs", "-n", ns, "-o", "json", servers=servers)
        return sorted(str(rs["spec"].get("replicas", 0)) + ":" +
                      rs["spec"]["template"]["spec"]["containers"][0]["image"]
                      for rs in json.loads(r.stdout)["items"])

    wait_for(lambda: "1:localhost/busybox:latest" in desired(), "the ReplicaSet scaled to 1")
    corral("delete", "ns", ns, servers=servers)


def test_dead_first_endpoint_is_skipped(cluster: Cluster) -> None:
    """Runs last in this module: it kills a replica and leaves it dead (the module's
    cluster is torn down right after)."""
    never = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    r = corral("get", "ns", "default", "-o", "name", servers=[never, *cluster.endpoints])
    assert (r.returncode, r.stdout) == (0, "namespace/default\n"), r.stderr
    assert time.monotonic() - start < 15

    victim = cluster.followers()[0]
    live = [e for e in cluster.endpoints if e != victim.api_address]
    # A watch streaming from the victim carries on from another replica.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(HOME="/nonexistent", CORRAL_SERVER=",".join([victim.api_address, *live]))
    watcher = subprocess.Popen([CORRAL, "get", "ns", "-w", "-o", "name"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watcher.stdout],  # type: ignore[union-attr]
                     daemon=True).start()

    def next_line() -> str:
        return lines.get(timeout=30)

    try:
        assert "namespace/default\n" in [next_line(), next_line()]  # the initial list
        victim.kill()
        ns = unique("dead")
        r = corral("create", "namespace", ns, servers=[victim.api_address, *live])
        assert (r.returncode, r.stdout) == (0, f"namespace/{ns} created\n"), r.stderr
        r = corral("get", "ns", ns, "-o", "name", servers=[victim.api_address, *live])
        assert r.stdout == f"namespace/{ns}\n"
        r = corral("cluster", "status", "-o", "json", servers=[victim.api_address, *live])
        status = json.loads(r.stdout)
        dead = next(m for m in status["members"] if m["name"] == victim.name)
        assert dead["reachable"] is False
        corral("delete", "ns", ns, servers=live)
        r = corral("get", "ns", "--request-timeout", "2s", servers=[victim.api_address])
        assert r.returncode == 1
        assert r.stderr.startswith("error: no control plane replica answered")
        # The namespace's creation and deletion, seen through another replica.
        assert [next_line(), next_line()] == [f"namespace/{ns}\n", f"namespace/{ns}\n"]
    finally:
        watcher.kill()
        watcher.communicate(timeout=10)
