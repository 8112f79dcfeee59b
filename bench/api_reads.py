"""What a linearizable read costs, beside a stale one, and beside etcd's.

Not a test. Starts three real corral-controlplane replicas (tests/cluster.py)
and a 3-member etcd 3.4 cluster on loopback, writes one small object, then
times sequential reads of it from one client:

- Corral: Get with the read barrier (default) and with `stale=true`, against
  the leader and against a follower, over gRPC with corral.client;
- etcd: Range, linearizable (default) and serializable, against the leader
  and a follower, over its HTTP/JSON gateway (/v3/kv/range) with a kept-alive
  connection.

Usage: PYTHONPATH=. .venv/bin/python bench/api_reads.py [--reads N]
Prints a Markdown table. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from corral.v1 import core_pb2
from tests.cluster import Cluster, free_port


def timed(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(20):  # warm up connections and caches
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


class Etcd:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.names = ["e0", "e1", "e2"]
        self.client = {n: free_port() for n in self.names}
        self.peer = {n: free_port() for n in self.names}
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        self.procs: list[subprocess.Popen[bytes]] = []
        for n in self.names:
            log = (root / f"{n}.log").open("wb")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", n, "--data-dir", str(root / n),
                 "--listen-client-urls", f"http://127.0.0.1:{self.client[n]}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.client[n]}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "bench"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self.conns = {n: http.client.HTTPConnection("127.0.0.1", self.client[n], timeout=10)
                      for n in self.names}
        deadline = time.monotonic() + 60
        while True:
            try:
                self.put("e0", "bench", "x" * 100)
                break
            except (OSError, http.client.HTTPException, KeyError):
                for c in self.conns.values():
                    c.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _post(self, member: str, path: str, body: dict[str, object]) -> dict[str, object]:
        conn = self.conns[member]
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            raise KeyError(data)
        return data  # type: ignore[no-any-return]

    def put(self, member: str, key: str, value: str) -> None:
        self._post(member, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                          "value": base64.b64encode(value.encode()).decode()})

    def get(self, member: str, serializable: bool) -> None:
        self._post(member, "/v3/kv/range", {"key": base64.b64encode(b"bench").decode(),
                                            "serializable": serializable})

    def leader(self) -> str:
        for n in self.names:
            st = self._post(n, "/v3/maintenance/status", {})
            if st["leader"] == st["header"]["member_id"]:  # type: ignore[index]
                return n
        raise RuntimeError("no etcd leader")

    def stop(self) -> None:
        for c in self.conns.values():
            c.close()
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=500)
    n = ap.parse_args().reads
    root = Path(tempfile.mkdtemp(prefix="corral-bench-reads-"))
    rows: list[tuple[str, list[float]]] = []
    with Cluster(root) as cluster:
        cm = core_pb2.ConfigMap()
        cm.metadata.name = "bench"
        cm.metadata.namespace = "default"
        cm.data["v"] = "x" * 100
        leader = cluster.leader()
        follower = cluster.followers()[0]
        with leader.client() as lc, follower.client() as fc:
            lc.create(cm)
            for where, c in (("leader", lc), ("follower", fc)):
                for stale in (False, True):
                    label = f"Corral Get, {'stale' if stale else 'linearizable'}, {where}"
                    rows.append((label, timed(
                        lambda c=c, stale=stale: c.get("cm", "bench", "default", stale=stale),
                        n)))
    etcd = Etcd(root / "etcd")
    try:
        lead = etcd.leader()
        foll = next(m for m in etcd.names if m != lead)
        for where, m in (("leader", lead), ("follower", foll)):
            for ser in (False, True):
                label = f"etcd Range, {'serializable' if ser else 'linearizable'}, {where}"
                rows.append((label, timed(lambda m=m, ser=ser: etcd.get(m, ser), n)))
    finally:
        etcd.stop()
    print(f"| read ({n} sequential, one client) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for label, xs in rows:
        print(f"| {label} | {p(xs, 0.5):.2f} | {p(xs, 0.99):.2f} | {statistics.mean(xs):.2f} |")


if __name__ == "__main__":
    main()
