"""Controllers and the scheduler against a real 3-replica control plane with hollow nodes.

Every behaviour is observed through the API, as a user would see it: objects,
status fields, conditions and Events.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from controlplane.controllers import rollout as ru
from controlplane.controllers.podutil import condition_true, get_condition, is_ready
from corral.client import Client
from corral.errors import NotFound

from .conftest import obj, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def deployment(name: str, ns: str, replicas: int, *, image: str = "localhost/busybox:1",
               annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                     "spec": {"containers": [{"name": "main", "image": image}]}},
    }
    body.update(spec)
    return obj({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns}, "spec": body})


def pods(client: Client, ns: str, selector: str = "") -> list[Any]:
    items, _ = client.list("Pod", ns, label_selector=selector)
    return items


def events(client: Client, ns: str, reason: str = "") -> list[Any]:
    items, _ = client.list("Event", ns)
    return [e for e in items if not reason or e.reason == reason]


def deployment_done(client: Client, ns: str, name: str, replicas: int) -> bool:
    d = client.get("Deployment", name, ns)
    s = d.status
    return (s.observed_generation >= d.metadata.generation and s.updated_replicas == replicas
            and s.replicas == replicas and s.available_replicas == replicas)


def test_deployment_runs_spread_with_status_and_events(client, ns, hollow):
    hollow(3)
    client.create(deployment("web", ns, 6))
    wait_until(lambda: deployment_done(client, ns, "web", 6), 20, "6 available replicas")
    d = client.get("Deployment", "web", ns)
    assert d.metadata.annotations[ru.REVISION] == "1"
    assert condition_true(d.status.conditions, "Available")
    prog = get_condition(d.status.conditions, "Progressing")
    assert (prog.status, prog.reason) == ("True", "NewReplicaSetAvailable")
    per_node: dict[str, int] = {}
    for p in pods(client, ns, "app=web"):
        per_node[p.spec.node_name] = per_node.get(p.spec.node_name, 0) + 1
        assert p.status.phase == "Running" and p.status.pod_ip
    assert sorted(per_node.values()) == [2, 2, 2]
    rs = client.list("ReplicaSet", ns)[0][0]
    assert rs.metadata.labels["pod-template-hash"] in rs.metadata.name
    assert rs.status.ready_replicas == 6
    wait_until(lambda: len(events(client, ns, "Scheduled")) == 6, 10, "Scheduled events")
    assert {e.reason for e in events(client, ns)} >= {"ScalingReplicaSet", "SuccessfulCreate",
                                                      "Scheduled"}


def test_rolling_update_keeps_min_available_and_undo(client, ns, hollow):
    hollow(3)
    # Each new pod becomes Ready 1 s after it starts: the rollout takes a while.
    d = deployment("web", ns, 4, annotations={"corral.dev/hollow-ready-seconds": "1"},
                   strategy={"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}})
    client.create(d)
    wait_until(lambda: deployment_done(client, ns, "web", 4), 30, "first rollout")
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            ready = [p for p in pods(client, ns, "app=web")
                     if is_ready(p) and not p.metadata.HasField("deletion_timestamp")]
            samples.append(len(ready))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        d = client.get("Deployment", "web", ns)
        d.spec.template.spec.containers[0].image = "localhost/busybox:2"
        client.update(d)
        wait_until(lambda: deployment_done(client, ns, "web", 4)
                   and all(p.spec.containers[0].image.endswith(":2")
                           for p in pods(client, ns, "app=web")), 60, "rolling update")
    finally:
        stop.set()
        sampler.join(5)
    assert len(samples) > 20
    assert min(samples) >= 3, f"fewer than replicas - maxUnavailable ready: {min(samples)}"
    d = client.get("Deployment", "web", ns)
    assert d.metadata.annotations[ru.REVISION] == "2"
    rss = {rs.metadata.annotations[ru.REVISION]: rs for rs in client.list("ReplicaSet", ns)[0]}
    assert set(rss) == {"1", "2"} and rss["1"].spec.replicas == 0
    # `corral rollout undo`: the revision-1 template goes back into the Deployment.
    d.spec.template.CopyFrom(rss["1"].spec.template)
    d.spec.template.metadata.labels.pop("pod-template-hash")
    client.update(d)
    wait_until(lambda: deployment_done(client, ns, "web", 4)
               and all(p.spec.containers[0].image.endswith(":1")
                       for p in pods(client, ns, "app=web")), 60, "undo")
    back = client.get("ReplicaSet", rss["1"].metadata.name, ns)
    assert back.metadata.annotations[ru.REVISION] == "3"
    assert back.metadata.annotations[ru.REVISION_HISTORY] == "1"
    assert client.get("Deployment", "web", ns).metadata.annotations[ru.REVISION] == "3"


def test_scale_and_replicaset_adoption(client, ns, hollow):
    hollow(2)
    orphan = obj({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "stray", "namespace": ns, "labels": {"app": "rs"}},
                  "spec": {"containers": [{"name": "c", "image": "localhost/busybox:1"}]}})
    client.create(orphan)
    rs = obj({"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": "rs", "namespace": ns},
              "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                       "template": {"metadata": {"labels": {"app": "rs"}},
                                    "spec": {"containers": [{"name": "c",
                                                             "image": "localhost/busybox:1"}]}}}})
    client.create(rs)
    wait_until(lambda: client.get("ReplicaSet", "rs", ns).status.ready_replicas == 3, 20,
               "3 ready")
    stray = client.get("Pod", "stray", ns)
    assert stray.metadata.owner_references[0].name == "rs"
    assert len(pods(client, ns)) == 3
    rs = client.get("ReplicaSet", "rs", ns)
    rs.spec.replicas = 1
    client.update(rs)
    wait_until(lambda: len(pods(client, ns)) == 1, 20, "scale down to 1")


def test_unschedulable_message_event_and_retry(client, ns, hollow):
    hollow(2, memory="1Gi", prefix=f"{ns}-small-")
    big = obj({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "big", "namespace": ns},
               "spec": {"containers": [{"name": "c", "image": "localhost/busybox:1",
                                        "resources": {"requests": {"memory": "2Gi"}}}]}})
    client.create(big)

    def message() -> str:
        c = get_condition(client.get("Pod", "big", ns).status.conditions, "PodScheduled")
        return c.message if c is not None and c.status == "False" else ""

    msg = wait_until(message, 15, "PodScheduled=False")
    assert msg.startswith("0/") and "2 Insufficient memory" in msg, msg
    ev = wait_until(lambda: events(client, ns, "FailedScheduling"), 10, "FailedScheduling")
    assert "Insufficient memory" in ev[0].message and ev[0].type == "Warning"
    hollow(1, memory="4Gi", prefix=f"{ns}-big-")
    node = wait_until(lambda: client.get("Pod", "big", ns).spec.node_name, 15, "binding")
    assert node == f"{ns}-big-0"


def test_statefulset_ordered_with_claims_that_survive(client, ns, hollow):
    hollow(3)
    svc = obj({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
               "spec": {"clusterIP": "None", "selector": {"app": "db"},
                        "ports": [{"name": "pg", "port": 5432}]}})
    client.create(svc)
    sts = obj({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "namespace": ns},
               "spec": {"replicas": 3, "serviceName": "db",
                        "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}, "annotations": {
                            "corral.dev/hollow-ready-seconds": "0.5"}},
                            "spec": {"containers": [{"name": "c",
                                                     "image": "localhost/busybox:1"}]}},
                        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}}}]}})
    client.create(sts)
    wait_until(lambda: client.get("StatefulSet", "db", ns).status.ready_replicas == 3, 30,
               "3 ready")
    by_name = {p.metadata.name: p for p in pods(client, ns)}
    assert sorted(by_name) == ["db-0", "db-1", "db-2"]
    started = {n: p.status.start_time.ToNanoseconds() for n, p in by_name.items()}
    assert started["db-0"] < started["db-1"] < started["db-2"]
    for n, p in by_name.items():
        assert p.spec.hostname == n and p.spec.subdomain == "db"
        claim = client.get("PersistentVolumeClaim", f"data-{n}", ns)
        assert claim.status.phase == "Bound"
        assert claim.spec.volume_name.startswith(f"{p.spec.node_name}:")
    ep = wait_until(lambda: _endpoint_hosts(client, ns, "db"), 10, "endpoints")
    assert ep == {"db-0", "db-1", "db-2"}
    # A pod deleted comes back with the same name, on the node of its claim.
    node_of_1 = by_name["db-1"].spec.node_name
    old_uid = by_name["db-1"].metadata.uid
    client.delete("Pod", "db-1", ns)
    wait_until(lambda: _uid(client, ns, "db-1") not in ("", old_uid)
               and is_ready(client.get("Pod", "db-1", ns)), 30, "db-1 back")
    assert client.get("Pod", "db-1", ns).spec.node_name == node_of_1
    # Scale down: the highest ordinal goes first; claims stay.
    s = client.get("StatefulSet", "db", ns)
    s.spec.replicas = 1
    client.update(s)
    wait_until(lambda: sorted(p.metadata.name for p in pods(client, ns)) == ["db-0"], 30,
               "scale down")
    deletes = [e.message for e in sorted(events(client, ns, "SuccessfulDelete"),
                                         key=lambda e: e.first_timestamp.ToNanoseconds())]
    assert deletes[-2:] == ["delete Pod db-2 in StatefulSet db successful",
                            "delete Pod db-1 in StatefulSet db successful"]
    assert len(client.list("PersistentVolumeClaim", ns)[0]) == 3


def _uid(client: Client, ns: str, name: str) -> str:
    try:
        return str(client.get("Pod", name, ns).metadata.uid)
    except NotFound:
        return ""


def _endpoint_hosts(client: Client, ns: str, name: str) -> set[str]:
    try:
        ep = client.get("Endpoints", name, ns)
    except NotFound:
        return set()
    return {a.hostname for s in ep.subsets for a in s.addresses}


def test_daemonset_on_every_node_and_nodes_joining_and_leaving(client, ns, hollow):
    first = hollow(2)
    ds = obj({"apiVersion": "apps/v1", "kind": "DaemonSet",
              "metadata": {"name": "agent", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "agent"}},
                       "template": {"metadata": {"labels": {"app": "agent"}},
                                    "spec": {"containers": [{"name": "c",
                                                             "image": "localhost/busybox:1"}]}}}})
    client.create(ds)

    def nodes_with_pods() -> set[str]:
        return {p.spec.node_name for p in pods(client, ns) if is_ready(p)}

    wait_until(lambda: nodes_with_pods() == set(first.nodes), 20, "a pod on both nodes")
    second = hollow(1)
    everything = set(first.nodes) | set(second.nodes)
    wait_until(lambda: nodes_with_pods() == everything, 20, "a pod on the new node")
    s = client.get("DaemonSet", "agent", ns).status
    assert s.desired_number_scheduled == 3
    second.stop()
    second.delete_nodes()
    wait_until(lambda: {p.spec.node_name for p in pods(client, ns)} == set(first.nodes), 20,
               "the pod of the removed node gone")


def test_job_five_completions_two_at_a_time(client, ns, hollow):
    hollow(3)
    job = obj({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "batch", "namespace": ns},
               "spec": {"completions": 5, "parallelism": 2, "template": {
                   "metadata": {"annotations": {"corral.dev/hollow-exit-seconds": "0.5"}},
                   "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "localhost/busybox:1"}]}}}})
    client.create(job)
    peak = 0

    def done() -> bool:
        nonlocal peak
        running = [p for p in pods(client, ns) if p.status.phase in ("Pending", "Running", "")]
        peak = max(peak, len(running))
        return condition_true(client.get("Job", "batch", ns).status.conditions, "Complete")

    wait_until(done, 40, "Complete", interval=0.05)
    j = client.get("Job", "batch", ns)
    assert j.status.succeeded == 5 and j.status.active == 0
    assert peak <= 2
    assert len([p for p in pods(client, ns) if p.status.phase == "Succeeded"]) == 5


def test_job_backoff_limit(client, ns, hollow):
    hollow(1)
    job = obj({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "fail", "namespace": ns},
               "spec": {"backoffLimit": 1, "template": {
                   "metadata": {"annotations": {"corral.dev/hollow-exit-seconds": "0.2",
                                                "corral.dev/hollow-exit-code": "3"}},
                   "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "localhost/busybox:1"}]}}}})
    client.create(job)

    def failed() -> Any:
        return get_condition(client.get("Job", "fail", ns).status.conditions, "Failed")

    cond = wait_until(failed, 30, "Failed")
    assert cond.reason == "BackoffLimitExceeded"
    assert client.get("Job", "fail", ns).status.failed == 2


def test_endpoints_follow_readiness_and_named_ports(client, ns, hollow):
    hollow(2)
    svc = obj({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    client.create(svc)
    d = deployment("web", ns, 2)
    d.spec.template.spec.containers[0].ports.add(name="http", container_port=8080)
    client.create(d)

    def addresses() -> tuple[set[str], list[int]]:
        try:
            ep = client.get("Endpoints", "web", ns)
        except NotFound:
            return set(), []
        return ({a.ip for s in ep.subsets for a in s.addresses},
                [p.port for s in ep.subsets for p in s.ports])

    wait_until(lambda: len(addresses()[0]) == 2, 20, "2 endpoint addresses")
    ips = {p.status.pod_ip for p in pods(client, ns)}
    assert addresses() == (ips, [8080])
    client.delete("Deployment", "web", ns)
    wait_until(lambda: addresses()[0] == set(), 20, "addresses removed")


def test_garbage_collection_background_foreground_orphan(client, ns, hollow):
    hollow(2)
    for name in ("bg", "fg", "orphan"):
        client.create(deployment(name, ns, 2))
    for name in ("bg", "fg", "orphan"):
        wait_until(lambda name=name: deployment_done(client, ns, name, 2), 20, f"{name} up")
    client.delete("Deployment", "bg", ns)
    wait_until(lambda: not pods(client, ns, "app=bg") and
               not client.list("ReplicaSet", ns, label_selector="app=bg")[0], 20, "bg collected")
    client.delete("Deployment", "fg", ns, propagation_policy="Foreground")
    wait_until(lambda: _gone(client, "Deployment", "fg", ns), 20, "fg removed last")
    assert not pods(client, ns, "app=fg")
    client.delete("Deployment", "orphan", ns, propagation_policy="Orphan")
    wait_until(lambda: _gone(client, "Deployment", "orphan", ns), 20, "orphan removed")
    rss, _ = client.list("ReplicaSet", ns, label_selector="app=orphan")
    assert len(rss) == 1 and not rss[0].metadata.owner_references
    assert len(pods(client, ns, "app=orphan")) == 2


def _gone(client: Client, kind: str, name: str, ns: str) -> bool:
    try:
        client.get(kind, name, ns)
    except NotFound:
        return True
    return False
