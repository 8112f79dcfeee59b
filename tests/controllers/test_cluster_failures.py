"""Node death, node return, and leader death, against real control plane processes.

The shared cluster of this module uses fast node timings (grace 3 s, eviction
3 s, see conftest.FAST); the default 10 s + 20 s budget is exercised in the lab.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.controllers.podutil import get_condition, is_ready
from corral.client import Client
from corral.errors import NotFound
from corral.informer import Informer
from tests.cluster import Cluster

from .conftest import FAST, obj, wait_until
from .test_cluster_workloads import deployment, deployment_done, pods

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ready_condition(client: Client, node: str) -> str:
    c = get_condition(client.get("Node", node).status.conditions, "Ready")
    return c.status if c is not None else ""


def taint_keys(client: Client, node: str) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in client.get("Node", node).spec.taints}


def test_dead_node_pods_are_replaced_elsewhere_and_it_comes_back(client, ns, hollow):
    h = hollow(3)
    client.create(deployment("web", ns, 6))
    wait_until(lambda: deployment_done(client, ns, "web", 6), 20, "6 available")
    victim = "" + pods(client, ns)[0].spec.node_name
    doomed = {p.metadata.name for p in pods(client, ns) if p.spec.node_name == victim}
    assert doomed
    killed = time.monotonic()
    h.kill(victim)
    wait_until(lambda: ready_condition(client, victim) == "Unknown", 15, "Ready=Unknown")
    unknown_after = time.monotonic() - killed
    assert taint_keys(client, victim) == {("node.kubernetes.io/unreachable", "NoSchedule"),
                                          ("node.kubernetes.io/unreachable", "NoExecute")}
    # Its pods leave the Service endpoints at once: marked not ready.
    wait_until(lambda: all(not is_ready(p) for p in pods(client, ns)
                           if p.metadata.name in doomed), 10, "pods not ready")

    def replaced() -> bool:
        now = pods(client, ns)
        names = {p.metadata.name for p in now}
        ready_elsewhere = [p for p in now if is_ready(p) and p.spec.node_name != victim]
        return not (names & doomed) and len(ready_elsewhere) == 6

    wait_until(replaced, 30, "replacements Ready on the other nodes")
    replaced_after = time.monotonic() - killed
    budget = FAST["node_monitor_grace_period"] + FAST["pod_eviction_timeout"]
    assert FAST["node_monitor_grace_period"] - 0.5 <= unknown_after
    assert budget - 0.5 <= replaced_after <= budget + 10, replaced_after
    evictions = [e for e in client.list("Event", ns)[0] if e.reason == "TaintManagerEviction"]
    assert {e.involved_object.name for e in evictions} == doomed
    h.revive(victim)
    wait_until(lambda: ready_condition(client, victim) == "True"
               and not taint_keys(client, victim), 15, "node back without taints")


def test_statefulset_identity_waits_for_the_old_pod_to_be_gone(client, ns, hollow):
    h = hollow(2)
    sts = obj({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "namespace": ns},
               "spec": {"replicas": 1, "serviceName": "db",
                        "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"containers": [{"name": "c",
                                                              "image": "localhost/busybox:1"}]}}}})
    client.create(sts)
    wait_until(lambda: client.get("StatefulSet", "db", ns).status.ready_replicas == 1, 20,
               "db-0 ready")
    old = client.get("Pod", "db-0", ns)
    # Watch every db-0 incarnation: when each appeared and when each went.
    seen: dict[str, list[float]] = {}
    lock = threading.Lock()

    def note(pod: Any, what: int) -> None:
        with lock:
            seen.setdefault(pod.metadata.uid, [0.0, 0.0])[what] = time.monotonic()

    inf = Informer(client, "Pod", namespace=ns,
                   on_add=lambda p: note(p, 0), on_delete=lambda p: note(p, 1)).start()
    try:
        inf.wait_synced(10)
        h.kill(old.spec.node_name)
        wait_until(lambda: _other_incarnation_ready(client, ns, old.metadata.uid), 30,
                   "db-0 replaced")
        time.sleep(0.5)
    finally:
        inf.stop()
    new = client.get("Pod", "db-0", ns)
    assert new.spec.node_name != old.spec.node_name
    with lock:
        old_gone = seen[old.metadata.uid][1]
        new_seen = seen[new.metadata.uid][0]
    assert old_gone and new_seen >= old_gone, "the new db-0 existed before the old one was gone"


def _other_incarnation_ready(client: Client, ns: str, uid: str) -> bool:
    try:
        p = client.get("Pod", "db-0", ns)
    except NotFound:
        return False
    return p.metadata.uid != uid and is_ready(p)


def _binds(client: Client) -> tuple[Informer, dict[str, int], Callable[[], None]]:
    """Count, per pod uid, how often spec.nodeName went from empty to set."""
    binds: dict[str, int] = {}
    lock = threading.Lock()

    def added(p: Any) -> None:
        if p.spec.node_name:
            with lock:
                binds.setdefault(p.metadata.uid, 1)

    def updated(old: Any, new: Any) -> None:
        if new.spec.node_name and old.spec.node_name != new.spec.node_name:
            with lock:
                binds[new.metadata.uid] = binds.get(new.metadata.uid, 0) + 1

    inf = Informer(client, "Pod", on_add=added, on_update=updated)
    return inf, binds, lambda: None


def test_fresh_leader_does_not_evict_live_nodes(make_cluster, tmp_path):
    cluster: Cluster = make_cluster(3, extra_config={"controllers": FAST})
    client = cluster.client(retry_for=30.0)
    from corral.hollow import HollowCluster, HollowConfig

    # Leases renewed every 2.5 s, grace 3 s: the failover gap alone makes a lease look
    # stale to a leader that judged by renewTime instead of by its own observation.
    with HollowCluster(HollowConfig(endpoints=cluster.endpoints, nodes=3, prefix="fl-",
                                    lease_interval=2.5),
                       client=Client(cluster.endpoints, retry_for=30.0)) as h:
        client.create(deployment("web", "default", 3))
        wait_until(lambda: deployment_done(client, "default", "web", 3), 20, "3 available")
        before = {p.metadata.uid for p in pods(client, "default")}
        cluster.leader().kill()
        cluster.leader(timeout=20)
        # Longer than grace + eviction: a leader judging from stale timers would evict now.
        time.sleep(FAST["node_monitor_grace_period"] + FAST["pod_eviction_timeout"] + 2)
        for n in h.nodes:
            assert ready_condition(client, n) == "True"
            assert not taint_keys(client, n)
        assert {p.metadata.uid for p in pods(client, "default")} == before


def test_leader_killed_mid_rollout_finishes_without_double_binding(make_cluster):
    cluster: Cluster = make_cluster(3, extra_config={"controllers": FAST})
    client = cluster.client(retry_for=30.0)
    from corral.hollow import HollowCluster, HollowConfig

    inf, binds, _ = _binds(client)
    inf.start()
    with HollowCluster(HollowConfig(endpoints=cluster.endpoints, nodes=4, prefix="lk-"),
                       client=Client(cluster.endpoints, retry_for=30.0)):
        d = deployment("web", "default", 10,
                       annotations={"corral.dev/hollow-ready-seconds": "0.7"},
                       strategy={"type": "RollingUpdate",
                                 "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 2}})
        client.create(d)
        wait_until(lambda: deployment_done(client, "default", "web", 10), 30, "first rollout")
        d = client.get("Deployment", "web", "default")
        d.spec.template.spec.containers[0].image = "localhost/busybox:2"
        client.update(d)

        def new_pods() -> int:
            return sum(1 for p in pods(client, "default")
                       if p.spec.containers[0].image.endswith(":2") and is_ready(p))

        wait_until(lambda: new_pods() >= 2, 30, "rollout under way")
        assert new_pods() < 10, "the rollout finished before the leader could be killed"
        old_leader = cluster.leader()
        old_leader.kill()
        new_leader = cluster.leader(timeout=20)
        assert new_leader is not old_leader
        wait_until(lambda: deployment_done(client, "default", "web", 10)
                   and new_pods() == 10 and len(pods(client, "default")) == 10, 60,
                   "the rollout finished under the new leader")
        d = client.get("Deployment", "web", "default")
        assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
        rss, _ = client.list("ReplicaSet", "default")
        assert sorted(rs.spec.replicas for rs in rss) == [0, 10]
    time.sleep(0.5)
    inf.stop()
    assert binds, "no bindings observed"
    twice = {uid: n for uid, n in binds.items() if n != 1}
    assert not twice, f"pods bound more than once: {twice}"
