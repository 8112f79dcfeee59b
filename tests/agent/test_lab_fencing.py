"""Fencing in the lab: a host cut off from the control plane stops its StatefulSet pod
before the control plane can start that identity elsewhere; its other pods keep
running; after the heal the agent does what the store says.

Default timings everywhere: the agent renews its lease every 2 s and fences after
20 s without an acknowledged heartbeat; the control plane force-deletes a silent
node's pods 10 + 20 s after the last heartbeat it saw.

1. A short partition (healed as soon as the fence has acted, before any eviction):
   the StatefulSet pod's container is stopped, the Deployment's keeps running;
   after the heal the agent waits until the control plane has heard of it again,
   confirms the pod is still bound to it, and starts it again (same pod, one
   restart). Nothing was replaced.
2. A long partition: the control plane evicts both pods and replaces them on the
   other hosts. The old `db-0` stopped before its pod was deleted, so the new `db-0`
   started after the old one ended. After the heal the host removes both old pods'
   containers, the Deployment's only then.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from corral import kinds
from corral.client import Client
from corral.errors import CorralError, NotFound
from corral.lab import Lab
from corral.v1 import core_pb2
from tests.agent import podutil as pu
from tests.labfixture import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.integration, pytest.mark.slow]

NS = "fence"
# Ends at once on SIGTERM, so the fence's stop is quick and visible.
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
EVICTION = 30.0  # node_monitor_grace_period + pod_eviction_timeout (controller defaults)
LEASE_PERIOD = 2.0  # the agent's default


def obj(manifest: dict[str, Any]) -> Any:
    msg = kinds.by_kind(manifest["kind"]).message()
    json_format.ParseDict(manifest, msg)
    return msg


def workload(kind: str, name: str) -> Any:
    spec: dict[str, Any] = {
        "replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "main", "image": pu.IMAGE,
                            "imagePullPolicy": "Never", "command": SLEEP}]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return obj({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": name, "namespace": NS}, "spec": spec})


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(hosts=3, control_plane=3, components=("controlplane", "agent"),
                     timeout=120, show_logs=True) as made:
        yield made


class Host:
    """The victim host's containers, as its agent's Podman service lists them."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.name = name
        self.socket = lab.plan.host(name).data("agent") / "podman.sock"

    def containers(self) -> dict[str, dict[str, Any]]:
        """pod uid -> Podman's list entry of that pod's newest container."""
        out = subprocess.run(["podman", "--url", f"unix://{self.socket}", "ps", "-a",
                              "--format", "json"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        found: dict[str, dict[str, Any]] = {}
        for c in json.loads(out or "[]"):
            uid = (c.get("Labels") or {}).get("io.corral.pod.uid")
            if uid and (uid not in found or c.get("StartedAt", 0) > found[uid].get(
                    "StartedAt", 0)):
                found[uid] = c
        return found

    def running(self, uid: str) -> bool:
        c = self.containers().get(uid)
        return c is not None and c.get("State") == "running"

    def finished_at(self, uid: str) -> float:
        c = self.containers()[uid]
        return float(c.get("ExitedAt") or 0)


def set_unschedulable(c: Client, node: str, value: bool) -> None:
    for _ in range(20):
        n = c.get("Node", node)
        n.spec.unschedulable = value
        try:
            c.update(n)
            return
        except CorralError:
            time.sleep(0.2)
    raise AssertionError(f"could not (un)cordon {node}")


def the_pod(c: Client, app: str) -> core_pb2.Pod | None:
    pods = [p for p in c.list("Pod", NS, label_selector=f"app={app}")[0]
            if not p.metadata.HasField("deletion_timestamp")]
    assert len(pods) <= 1, [p.metadata.name for p in pods]
    return pods[0] if pods else None


def uid_of(c: Client, app: str) -> str:
    p = the_pod(c, app)
    return p.metadata.uid if p is not None else ""


def test_partitioned_host_fences_its_statefulset_pod(lab: Lab) -> None:
    leader = lab.leader()
    assert leader
    names = [h.name for h in lab.plan.hosts]
    victim = next(n for n in reversed(names) if n != leader)
    others = [n for n in names if n != victim]
    host = Host(lab, victim)
    with lab.client(hosts=others, retry_for=60.0, timeout=20.0) as c:
        ns = kinds.by_kind("Namespace").new()
        ns.metadata.name = NS
        c.create(ns)
        pu.wait_for("every node Ready and untainted", lambda: all(
            not n.spec.taints and pu.condition(n, "Ready") == "True"
            for n in c.list("Node")[0]), timeout=90)
        # Both pods on the victim: the other nodes are cordoned while they are placed.
        for n in others:
            set_unschedulable(c, n, True)
        c.create(workload("StatefulSet", "db"))
        c.create(workload("Deployment", "web"))
        for app in ("db", "web"):
            pu.wait_for(f"{app} Ready on {victim}", lambda app=app: (
                (p := the_pod(c, app)) is not None and pu.ready(p)
                and p.spec.node_name == victim), timeout=120)
        for n in others:
            set_unschedulable(c, n, False)
        db, web = uid_of(c, "db"), uid_of(c, "web")
        assert host.running(db) and host.running(web)
        web_container = host.containers()[web]["Id"]

        # ---- 1: a short partition, healed once the fence has acted ---------------------
        t0 = time.monotonic()
        lab.partition([victim])
        try:
            pu.wait_for("db-0 fenced", lambda: not host.running(db), timeout=EVICTION,
                        interval=0.25)
            fenced_after = time.monotonic() - t0
            assert host.running(web), "the Deployment's pod must keep running"
        finally:
            lab.heal()
        # 20 s after the last acknowledged renewal, which was at most a lease period
        # (and a renewal's duration) before the cut; well before the eviction.
        assert 20.0 - LEASE_PERIOD - 1.0 <= fenced_after <= EVICTION - LEASE_PERIOD, fenced_after
        # Back: the same pod starts again on the victim once the control plane heard of it.
        again = pu.wait_for("db-0 running again on the victim", lambda: (
            (p := the_pod(c, "db")) is not None and p.metadata.uid == db and pu.ready(p)
            and pu.cstatus(p, "main").restart_count == 1 and p), timeout=60)
        assert again.spec.node_name == victim
        assert host.running(db)
        w = the_pod(c, "web")
        assert w is not None and w.metadata.uid == web and host.containers()[web]["Id"] == \
            web_container, "the Deployment's pod was never touched"
        pu.wait_for("victim untainted", lambda: not c.get("Node", victim).spec.taints,
                    timeout=30)

        # ---- 2: a long partition: evicted and replaced elsewhere ---------------------------
        lab.partition([victim])
        try:
            pu.wait_for("db-0 fenced", lambda: not host.running(db), timeout=EVICTION,
                        interval=0.25)
            stopped = time.monotonic()
            assert host.running(web)

            def evicted() -> bool:
                try:
                    return c.get("Pod", "db-0", NS, stale=False).metadata.uid != db
                except NotFound:
                    return True
            pu.wait_for("db-0 force-deleted by the control plane", evicted, timeout=60,
                        interval=0.25)
            deleted = time.monotonic()
            assert stopped < deleted, "fenced only after the control plane gave up on it"
            print(f"fencing timeline: short partition fenced after {fenced_after:.1f}s; long "
                  f"partition: stopped {deleted - stopped:.1f}s before the eviction")
            assert host.running(web), "the Deployment's pod runs until the node is back"
            new_db = pu.wait_for("a new db-0 Ready elsewhere", lambda: (
                (p := the_pod(c, "db")) is not None and p.metadata.uid != db and pu.ready(p)
                and p.spec.node_name != victim and p), timeout=90)
            new_web = pu.wait_for("a new web pod Ready elsewhere", lambda: (
                (p := the_pod(c, "web")) is not None and p.metadata.uid != web and pu.ready(p)
                and p), timeout=90)
            assert new_web.spec.node_name != victim
            # Never two db-0 at once: the new one started after the old one ended.
            started = pu.cstatus(new_db, "main").state.running.started_at.seconds
            assert started >= int(host.finished_at(db)), (started, host.finished_at(db))
            assert host.running(web)
        finally:
            lab.heal()
        # Back: the agent removes what the store no longer binds to it.
        pu.wait_for("old pods' containers removed from the victim", lambda: not (
            {db, web} & set(host.containers())), timeout=60)
        assert the_pod(c, "db").metadata.uid == new_db.metadata.uid  # type: ignore[union-attr]
        pu.wait_for("victim Ready again", lambda: pu.condition(
            c.get("Node", victim), "Ready") == "True", timeout=60)
