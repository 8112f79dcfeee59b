"""Scheduling throughput and Deployment start-up, with hollow nodes, beside raw writes.

Not a test. Starts three real corral-controlplane replicas (tests/cluster.py)
and one `python -m corral.hollow` process with 100 hollow nodes, then measures:

1. Scheduling throughput: 3,000 bare pods created by 16 client threads; pods
   bound per second over the window from the first binding to the last one
   (and end to end, from the first create), watched through a pod informer.
   Baseline in the same run: 3,000 Updates of existing objects by 16 threads
   (the store's raw rate for writes of the same kind as a binding, no decision).
2. Apply of a 30-replica Deployment until 30 pods are Ready (Deployment and
   ReplicaSet controllers, scheduler, hollow agent). Baseline in the same run:
   30 pods created with spec.nodeName already set (no controller, no scheduler)
   until all 30 are Ready.
Also the pure decision alone: `core.schedule` of 3,000 pods on 100 nodes.

Usage: PYTHONPATH=. .venv/bin/python bench/scheduler_bench.py [--pods 3000] [--nodes 100]
       [--grpc]   (controllers call their replica over gRPC instead of in-process)
Prints a Markdown table. Every process is stopped by PID at the end.

Threads: the main thread, 16 writer threads, the informer thread.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from controlplane.controllers.podutil import is_ready
from controlplane.scheduler.core import schedule
from controlplane.scheduler.snapshot import Snapshot
from corral.client import Client
from corral.informer import Informer
from corral.v1 import apps_pb2, core_pb2
from tests.cluster import Cluster

THREADS = 16


def namespace(client: Client, name: str) -> None:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    client.create(ns)


def bare_pod(name: str, ns: str, node: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = ns
    p.metadata.labels["bench"] = ns
    c = p.spec.containers.add(name="c", image="localhost/busybox:latest")
    c.resources.requests["cpu"] = "10m"
    c.resources.requests["memory"] = "16Mi"
    p.spec.node_name = node
    return p


class Watcher:
    """Times, per pod of one namespace, when it was first seen bound and Ready."""

    def __init__(self, client: Client, ns: str) -> None:
        self.bound: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._lock = threading.Lock()
        self.inf = Informer(client, "Pod", namespace=ns, on_add=self._see,
                            on_update=lambda old, new: self._see(new))

    def _see(self, p: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if p.spec.node_name:
                self.bound.setdefault(p.metadata.name, now)
            if is_ready(p):
                self.ready.setdefault(p.metadata.name, now)

    def start(self) -> Watcher:
        self.inf.start()
        self.inf.wait_synced(30)
        return self

    def wait(self, what: str, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(getattr(self, what)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(getattr(self, what))}/{n} {what} after {timeout}s")
            time.sleep(0.01)


def throughput(client: Client, pods: int) -> dict[str, float]:
    ns = "bench-sched"
    namespace(client, ns)
    w = Watcher(client, ns).start()
    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: client.create(bare_pod(f"p-{i:05d}", ns)), range(pods)))
    created = time.monotonic()
    w.wait("bound", pods, 600)
    w.inf.stop()
    first, last = min(w.bound.values()), max(w.bound.values())
    return {"create_rate": pods / (created - start),
            "bind_rate_window": pods / max(last - first, 1e-9),
            "bind_rate_end_to_end": pods / (last - start),
            "seconds_end_to_end": last - start}


def raw_updates(client: Client, n: int) -> float:
    ns = "bench-raw"
    namespace(client, ns)

    def make(i: int) -> Any:
        cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
        cm.metadata.name = f"cm-{i:05d}"
        cm.metadata.namespace = ns
        return client.create(cm)

    with ThreadPoolExecutor(THREADS) as pool:
        objs = list(pool.map(make, range(n)))

    def update(o: Any) -> None:
        o.data["k"] = "v"
        client.update(o)

    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(update, objs))
    return n / (time.monotonic() - start)


def deployment_start(client: Client, replicas: int) -> float:
    ns = "bench-deploy"
    namespace(client, ns)
    w = Watcher(client, ns).start()
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = "web"
    d.metadata.namespace = ns
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="c", image="localhost/busybox:latest")
    start = time.monotonic()
    client.apply(d)
    while client.get("Deployment", "web", ns).status.ready_replicas < replicas:
        if time.monotonic() - start > 120:
            raise TimeoutError("deployment not ready")
        time.sleep(0.01)
    took = time.monotonic() - start
    w.inf.stop()
    return took


def direct_pods(client: Client, replicas: int, nodes: list[str]) -> float:
    ns = "bench-direct"
    namespace(client, ns)
    w = Watcher(client, ns).start()
    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: client.create(bare_pod(f"d-{i}", ns, nodes[i % len(nodes)])),
                      range(replicas)))
    w.wait("ready", replicas, 120)
    took = max(w.ready.values()) - start
    w.inf.stop()
    return took


def pure_decision(pods: int, nodes: int) -> float:
    ns = [core_pb2.Node() for _ in range(nodes)]
    for i, n in enumerate(ns):
        n.metadata.name = f"n{i}"
        n.status.allocatable.update({"cpu": "32", "memory": "64Gi", "pods": "110"})
        n.status.conditions.add(type="Ready", status="True")
    ps = [bare_pod(f"p{i}", "x") for i in range(pods)]
    start = time.perf_counter()
    schedule(ps, Snapshot(ns, []), random.Random(1))
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=3000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=30)
    ap.add_argument("--grpc", action="store_true",
                    help="controllers call their replica over gRPC (in_process: false)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sched-bench-"))
    cluster = Cluster(root, 3, extra_config={"log_level": "warning",
                                             "controllers": {"in_process": not args.grpc}})
    hollow = None
    try:
        client = cluster.client(retry_for=60.0, timeout=60.0)
        log = (root / "hollow.log").open("wb")
        # Each hollow node holds at least pods/nodes pods (plus the Deployment's).
        per_node = max(110, args.pods // args.nodes + 20)
        hollow = subprocess.Popen(
            [sys.executable, "-m", "corral.hollow", "--server", ",".join(cluster.endpoints),
             "--nodes", str(args.nodes), "--prefix", "bench-", "--cpu", "64",
             "--memory", "256Gi", "--pods", str(per_node), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        deadline = time.monotonic() + 120
        while len(client.list("Node")[0]) < args.nodes:
            if time.monotonic() > deadline or hollow.poll() is not None:
                raise RuntimeError("hollow nodes did not register:\n"
                                   + (root / "hollow.log").read_text()[-3000:])
            time.sleep(0.5)
        nodes = [n.metadata.name for n in client.list("Node")[0]]
        time.sleep(2)
        results: dict[str, Any] = {}
        results["deploy"] = deployment_start(client, args.replicas)
        results["direct"] = direct_pods(client, args.replicas, nodes)
        results["pure"] = pure_decision(args.pods, args.nodes)
        results.update(throughput(client, args.pods))
        results["raw_update_rate"] = raw_updates(client, args.pods)
    finally:
        if hollow is not None and hollow.poll() is None:
            os.kill(hollow.pid, signal.SIGTERM)
            try:
                hollow.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(hollow.pid, signal.SIGKILL)
                hollow.wait()
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    r = results
    how = "gRPC to its own socket" if args.grpc else "in-process"
    print(f"| measure ({args.nodes} hollow nodes, 3 replicas, controllers {how}) | Corral "
          f"| baseline, same run |")
    print("|---|---|---|")
    print(f"| pods bound per second ({args.pods} pods, first to last binding) | "
          f"{r['bind_rate_window']:.0f}/s | raw Updates by {THREADS} threads: "
          f"{r['raw_update_rate']:.0f}/s |")
    print(f"| pods bound per second, end to end from the first create | "
          f"{r['bind_rate_end_to_end']:.0f}/s ({r['seconds_end_to_end']:.1f} s) | "
          f"pod creates by {THREADS} threads: {r['create_rate']:.0f}/s |")
    print(f"| apply of a {args.replicas}-replica Deployment to {args.replicas} Ready pods | "
          f"{r['deploy']:.2f} s | {args.replicas} pods created pre-bound, to Ready: "
          f"{r['direct']:.2f} s |")
    print(f"| the pure decision: {args.pods} pods on {args.nodes} nodes | {r['pure']:.2f} s | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
