"""The controllers with real node agents and Podman, in the lab (3 hosts as namespaces).

Default controller timings throughout (grace 10 s, eviction 20 s). One lab per
module; each test works in a namespace of its own; the host kill comes last.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.controllers.podutil import condition_true, get_condition, is_ready
from corral.client import Client
from corral.errors import CorralError, NotFound
from corral.lab import Lab
from corral.lab import image as labimage
from corral.v1 import core_pb2
from tests.labfixture import running_lab

from .conftest import obj, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

IMAGE = "localhost/busybox:latest"
IMAGE_V2 = "localhost/busybox:v2"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(hosts=3, components=("controlplane", "agent"), show_logs=True) as made:
        _tag_second_image(made)
        with made.client(retry_for=60.0) as c:
            # An agent reports Ready=False until its runtime answers; the node
            # lifecycle controller then taints it not-ready for a moment.
            wait_until(lambda: all(
                not n.spec.taints and condition_true(n.status.conditions, "Ready")
                for n in c.list("Node")[0]), 60, "every node Ready and untainted")
        yield made


def _tag_second_image(lab: Lab) -> None:
    """localhost/busybox:v2: the same image under a second tag, in the lab's store."""
    p = lab.plan
    run = p.run / "image"
    argv = ["podman", "--root", str(p.images), "--runroot", str(run / "storage"),
            "--tmpdir", str(run / "libpod"), "--storage-driver", "overlay",
            "tag", IMAGE, IMAGE_V2]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                         env=labimage.podman_env(p.hosts[0].etc / "containers.conf"))
    assert res.returncode == 0, res.stderr


@pytest.fixture
def client(lab: Lab) -> Iterator[Client]:
    with lab.client(retry_for=60.0, timeout=20.0) as c:
        yield c


@pytest.fixture
def ns(client: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"l-{secrets.token_hex(3)}"
    n = core_pb2.Namespace(api_version="v1", kind="Namespace")
    n.metadata.name = name
    client.create(n)
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for e in sorted(client.list("Event", name)[0], key=lambda e: e.last_timestamp.seconds):
            print(f"event {e.involved_object.kind}/{e.involved_object.name} {e.reason}: "
                  f"{e.message}", file=sys.stderr)
        for p in client.list("Pod", name)[0]:
            print(f"pod {p.metadata.name} on {p.spec.node_name}: {p.status.phase} "
                  f"{[c.state for c in p.status.container_statuses]}", file=sys.stderr)
    try:
        client.delete("Namespace", name)
    except CorralError:
        pass


def container(image: str = IMAGE, **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": image, "imagePullPolicy": "Never", "command": SLEEP,
            **extra}


def deployment(name: str, ns: str, replicas: int, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"terminationGracePeriodSeconds": 2,
                              "containers": [container()]}},
    }
    body.update(spec)
    return obj({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns}, "spec": body})


def pods(client: Client, ns: str, selector: str = "") -> list[Any]:
    return client.list("Pod", ns, label_selector=selector)[0]


def live_ready(client: Client, ns: str, selector: str) -> list[Any]:
    return [p for p in pods(client, ns, selector)
            if is_ready(p) and not p.metadata.HasField("deletion_timestamp")]


def rolled_out(client: Client, ns: str, name: str, image: str, replicas: int) -> bool:
    d = client.get("Deployment", name, ns)
    s = d.status
    ours = pods(client, ns, f"app={name}")
    return (s.observed_generation >= d.metadata.generation and s.updated_replicas == replicas
            and s.available_replicas == replicas and s.replicas == replicas
            and len(ours) == replicas
            and all(p.spec.containers[0].image == image and is_ready(p) for p in ours))


def corral_cli(lab: Lab, *args: str) -> str:
    env = {**os.environ, "CORRAL_CONFIG": str(lab.plan.client_config)}
    env.pop("CORRAL_SERVER", None)
    res = subprocess.run([sys.executable, "-m", "corral.cli.main", *args], capture_output=True,
                         text=True, timeout=60, env=env)
    assert res.returncode == 0, f"corral {' '.join(args)}: {res.stderr}{res.stdout}"
    return res.stdout


def test_deployment_spread_rolling_update_and_undo(lab, client, ns):
    d = deployment("web", ns, 3, strategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}})
    client.create(d)
    wait_until(lambda: rolled_out(client, ns, "web", IMAGE, 3), 90, "3 replicas Ready")
    assert {p.spec.node_name for p in pods(client, ns, "app=web")} == {"h1", "h2", "h3"}

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with lab.client(retry_for=30.0) as c:
            while not stop.is_set():
                try:
                    samples.append(len(live_ready(c, ns, "app=web")))
                except CorralError:
                    pass
                stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        _set_image(client, ns, "web", IMAGE_V2)
        wait_until(lambda: rolled_out(client, ns, "web", IMAGE_V2, 3), 120, "rolled to v2")
    finally:
        stop.set()
        t.join(10)
    # A quiet machine rolls 3 pods in about a second: a handful of samples.
    assert len(samples) >= 5
    assert min(samples) >= 2, f"fewer than replicas - maxUnavailable Ready: {samples}"
    out = corral_cli(lab, "rollout", "history", "deployment/web", "-n", ns)
    assert "1" in out and "2" in out
    print(corral_cli(lab, "rollout", "undo", "deployment/web", "-n", ns))
    try:
        wait_until(lambda: rolled_out(client, ns, "web", IMAGE, 3), 120, "undone to latest")
    finally:
        d = client.get("Deployment", "web", ns)
        print("DEPLOYMENT", d.metadata.generation, d.status, d.spec.template)
        for rs in client.list("ReplicaSet", ns)[0]:
            print("RS", rs.metadata.name, rs.spec.replicas, rs.status, rs.spec.template)
    d = client.get("Deployment", "web", ns)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


def _set_image(client: Client, ns: str, name: str, image: str) -> None:
    for _ in range(5):
        d = client.get("Deployment", name, ns)
        d.spec.template.spec.containers[0].image = image
        try:
            client.update(d)
            return
        except CorralError:
            time.sleep(0.2)
    raise AssertionError("could not update the deployment")


def test_statefulset_ordered_with_a_claim_that_outlives_its_pod(lab, client, ns):
    client.create(obj({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "db", "namespace": ns},
                       "spec": {"clusterIP": "None", "selector": {"app": "db"},
                                "ports": [{"port": 80}]}}))
    sts = obj({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "namespace": ns},
               "spec": {"replicas": 3, "serviceName": "db",
                        "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"terminationGracePeriodSeconds": 2,
                                              "containers": [container(volumeMounts=[
                                                  {"name": "data", "mountPath": "/data"}])]}},
                        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}}}]}})
    client.create(sts)
    wait_until(lambda: client.get("StatefulSet", "db", ns).status.ready_replicas == 3, 120,
               "3 ready")
    by_name = {p.metadata.name: p for p in pods(client, ns)}
    # Ordered: each pod was created only after the one before it was Ready.
    for i in (1, 2):
        before = get_condition(by_name[f"db-{i - 1}"].status.conditions, "Ready")
        assert before is not None
        assert by_name[f"db-{i}"].metadata.creation_timestamp.ToNanoseconds() >= \
            before.last_transition_time.ToNanoseconds() - 1_000_000_000
    out, err, code = client.exec("db-0", ns, ["sh", "-c", "echo kept > /data/f && hostname"])
    assert code == 0, err
    assert out.decode().strip() == "db-0"
    node = by_name["db-0"].spec.node_name
    old_uid = by_name["db-0"].metadata.uid
    client.delete("Pod", "db-0", ns)

    def back() -> bool:
        try:
            p = client.get("Pod", "db-0", ns)
        except NotFound:
            return False
        return p.metadata.uid != old_uid and is_ready(p)

    wait_until(back, 90, "db-0 back")
    assert client.get("Pod", "db-0", ns).spec.node_name == node
    out, err, code = client.exec("db-0", ns, ["cat", "/data/f"])
    assert (code, out.decode().strip()) == (0, "kept"), err
    claim = client.get("PersistentVolumeClaim", "data-db-0", ns)
    assert claim.status.phase == "Bound" and claim.spec.volume_name.startswith(f"{node}:")


def test_daemonset_on_every_host(lab, client, ns):
    client.create(obj({"apiVersion": "apps/v1", "kind": "DaemonSet",
                       "metadata": {"name": "agent", "namespace": ns},
                       "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                "template": {"metadata": {"labels": {"app": "agent"}},
                                             "spec": {"terminationGracePeriodSeconds": 2,
                                                      "containers": [container()]}}}}))
    wait_until(lambda: {p.spec.node_name for p in live_ready(client, ns, "app=agent")}
               == {"h1", "h2", "h3"}, 90, "a Ready pod on every host")
    assert client.get("DaemonSet", "agent", ns).status.number_ready == 3


def test_job_five_completions_two_at_a_time(lab, client, ns):
    client.create(obj({"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"name": "batch", "namespace": ns},
                       "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {
                           "restartPolicy": "Never",
                           "containers": [{"name": "c", "image": IMAGE,
                                           "imagePullPolicy": "Never",
                                           "command": ["sh", "-c", "sleep 1"]}]}}}}))
    peak = 0

    def complete() -> bool:
        nonlocal peak
        active = [p for p in pods(client, ns) if p.status.phase in ("", "Pending", "Running")
                  and not p.metadata.HasField("deletion_timestamp")]
        peak = max(peak, len(active))
        return condition_true(client.get("Job", "batch", ns).status.conditions, "Complete")

    wait_until(complete, 180, "Job Complete", interval=0.2)
    j = client.get("Job", "batch", ns)
    assert j.status.succeeded == 5
    assert peak <= 2
    assert sum(1 for p in pods(client, ns) if p.status.phase == "Succeeded") == 5


@pytest.mark.parametrize("which", ["follower", "leader"])
def test_host_kill_replacements_running_elsewhere_within_40s(lab, client, ns, which):
    """Power loss of a host running pods. The leader's host is the worst case: the
    new leader first waits a full grace period of its own before judging nodes."""
    client.create(deployment("web", ns, 3))
    wait_until(lambda: rolled_out(client, ns, "web", IMAGE, 3), 90, "3 replicas Ready")
    leader = wait_until(lab.leader, 30, "a leader")
    victims = [p for p in pods(client, ns, "app=web")
               if (p.spec.node_name == leader) == (which == "leader")]
    host = victims[0].spec.node_name
    doomed = {p.metadata.name for p in pods(client, ns, "app=web") if p.spec.node_name == host}
    killed = time.monotonic()
    lab.kill(host)

    def replaced() -> bool:
        try:
            now = pods(client, ns, "app=web")
        except CorralError:
            return False
        running = [p for p in now if p.spec.node_name != host and p.status.phase == "Running"
                   and not p.metadata.HasField("deletion_timestamp")]
        return not ({p.metadata.name for p in now} & doomed) and len(running) == 3

    wait_until(replaced, 60, "replacements Running on the other hosts", interval=0.5)
    took = time.monotonic() - killed
    assert took <= 40, f"replacements took {took:.1f}s"
    print(f"replacements Running {took:.1f}s after the power loss of {host} ({which})")
    lab.start(host, wait=True, timeout=120)
    wait_until(lambda: not client.get("Node", host).spec.taints, 60, "taints gone")
