"""Control plane write benchmark: Corral beside etcd 3.4, in the same run.

Not a test. Starts three real `corral-controlplane` replicas (tests/cluster.py)
and a 3-member etcd cluster (bench/etcd3.py) on loopback, both fsyncing before
they acknowledge, and measures through each system's gRPC API:

Both run at the same time and take turns, batch by batch, so a machine
shared with other work loads both alike.

1. sequential write latency (one client, one write at a time): p50/p90/p99,
   to the leader and to a follower. Corral: `Client.create` of a small
   ConfigMap; etcd: `KV.Put` of a key with a value of the same size;
2. throughput with 16 concurrent clients (4 client processes x 4 threads,
   so the Python client is not the bottleneck; each process starts on a
   different member), each writing as fast as it is acknowledged, for
   `--seconds`;
3. failover: SIGKILL of the leader while 4 writers run against every
   endpoint; the time from the kill to the first acknowledged write issued
   after it. Repeated `--failovers` times (the killed member is restarted
   and caught up between rounds).

Usage (repository root):
    .venv/bin/python bench/controlplane_bench.py [--writes 1000] [--seconds 10]
        [--failovers 3] [--only corral|etcd] [--markdown FILE] [--baseline TREE]

Prints a Markdown table (and writes it to --markdown if given). Every process
it starts is stopped by PID, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.etcd3 import EtcdClient, EtcdCluster
from corral.client import Client
from corral.v1 import core_pb2
from tests.cluster import Cluster

VALUE = "v" * 100


def configmap(name: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = "default"
    cm.data["k"] = VALUE
    return cm


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


# ---- writers for each system ------------------------------------------------------------
def corral_writer(endpoints: list[str], timeout: float = 10.0) -> tuple[Callable[[str], None],
                                                                        Callable[[], None]]:
    client = Client(endpoints, timeout=timeout, retry_for=30.0)
    return (lambda name: client.create(configmap(name))), client.close


def etcd_writer(endpoints: list[str], timeout: float = 10.0) -> tuple[Callable[[str], None],
                                                                      Callable[[], None]]:
    client = EtcdClient(endpoints)
    value = VALUE.encode()

    def write(name: str) -> None:
        client.put_retrying(f"/bench/{name}".encode(), value, retry_for=30.0, timeout=timeout)

    return write, client.close


WRITERS = {"corral": corral_writer, "corral-base": corral_writer, "etcd": etcd_writer}


def sequential(system: str, endpoint: str, n: int, tag: str) -> list[float]:
    write, close = WRITERS[system]([endpoint])
    try:
        for i in range(30):
            write(f"warm-{tag}-{i}")
        out = []
        for i in range(n):
            t = time.perf_counter()
            write(f"seq-{tag}-{i}")
            out.append((time.perf_counter() - t) * 1000)
        return out
    finally:
        close()


# ---- throughput: client processes ---------------------------------------------------------
def worker_main(args: argparse.Namespace) -> int:
    """One client process: `threads` writers for `seconds`; prints JSON counts."""
    endpoints = args.endpoints.split(",")
    stop = threading.Event()
    counts = [0] * args.threads
    errors = [0] * args.threads
    lat: list[list[float]] = [[] for _ in range(args.threads)]

    def run(t: int) -> None:
        write, close = WRITERS[args.system](endpoints)
        i = 0
        try:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    write(f"tp-{args.prefix}-{t}-{i}")
                except Exception:
                    errors[t] += 1
                    continue
                finally:
                    i += 1
                lat[t].append((time.perf_counter() - start) * 1000)
                counts[t] += 1
        finally:
            close()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    time.sleep(args.warmup)
    base = sum(counts)
    window = [time.time()]
    time.sleep(args.seconds)
    done = sum(counts) - base
    window.append(time.time())
    stop.set()
    for th in threads:
        th.join(30)
    all_lat = [x for xs in lat for x in xs]
    print(json.dumps({"writes": done, "errors": sum(errors), "p50": pct(all_lat, 0.5),
                      "p99": pct(all_lat, 0.99), "window": window}))
    return 0


def throughput(system: str, endpoints: list[str], seconds: float, pids: list[int],
               procs: int = 4, threads: int = 4) -> dict[str, float]:
    """Writes/s of 16 clients, and the servers' CPU per write over the clients'
    measured window (`pids`: the server processes, sampled every 0.1 s)."""
    cmd = [sys.executable, __file__, "worker", "--system", system, "--endpoints",
           ",".join(endpoints), "--threads", str(threads), "--seconds", str(seconds),
           "--warmup", "2"]
    samples: list[tuple[float, float]] = []
    client_samples: list[tuple[float, float]] = []
    running: list[subprocess.Popen[str]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            now = time.time()
            samples.append((now, server_cpu(pids)))
            client_samples.append((now, server_cpu([p.pid for p in running])))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for p in range(procs):
        # Each client process starts on a different member, as real clients spread.
        mine = endpoints[p % len(endpoints):] + endpoints[:p % len(endpoints)]
        cmd[cmd.index("--endpoints") + 1] = ",".join(mine)
        running.append(subprocess.Popen([*cmd, "--prefix", f"{system}{p}-{time.time_ns()}"],
                                        stdout=subprocess.PIPE, text=True))
    results = []
    for p in running:
        out, _ = p.communicate(timeout=seconds + 120)
        results.append(json.loads(out.strip().splitlines()[-1]))
    sampling.set()
    sampler.join(5)
    writes = sum(r["writes"] for r in results)
    # The window every client was measuring in; CPU interpolated at its ends.
    start = max(r["window"][0] for r in results)
    end = min(r["window"][1] for r in results)
    cpu_ms = client_ms = float("nan")
    if end > start and writes:
        per_s = writes / seconds
        cpu_ms = (_at(samples, end) - _at(samples, start)) / (end - start) / per_s * 1000
        client_ms = ((_at(client_samples, end) - _at(client_samples, start))
                     / (end - start) / per_s * 1000)
    return {"per_s": writes / seconds, "errors": sum(r["errors"] for r in results),
            "p50": statistics.median(r["p50"] for r in results),
            "p99": max(r["p99"] for r in results), "cpu_ms": cpu_ms, "client_ms": client_ms}


def _at(samples: list[tuple[float, float]], t: float) -> float:
    """The sampled counter at time t, linearly interpolated."""
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v0
    return samples[-1][1] if samples and t > samples[-1][0] else samples[0][1]


def server_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the given processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


# ---- failover -------------------------------------------------------------------------
def failover_round(system: str, endpoints: list[str],
                   prepare: Callable[[], Callable[[], None]], writers: int = 4) -> float:
    """Seconds from SIGKILL of the leader to the first acknowledged write issued after it.
    `prepare()` finds the leader and returns the function that kills it."""
    stop = threading.Event()
    done: list[tuple[float, float]] = []  # (issued, acknowledged), monotonic
    lock = threading.Lock()

    def run(w: int) -> None:
        write, close = WRITERS[system](endpoints, timeout=2.0)
        i = 0
        try:
            while not stop.is_set():
                issued = time.monotonic()
                try:
                    write(f"fo-{w}-{time.time_ns()}-{i}")
                except Exception:
                    time.sleep(0.005)
                    continue
                finally:
                    i += 1
                with lock:
                    done.append((issued, time.monotonic()))
        finally:
            close()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(writers)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    kill = prepare()  # finding the leader takes time: not part of the failover
    killed_at = time.monotonic()
    kill()
    deadline = killed_at + 30
    first: float | None = None
    while time.monotonic() < deadline:
        with lock:
            after = [ack for issued, ack in done if issued >= killed_at]
        if after:
            first = min(after)
            break
        time.sleep(0.01)
    stop.set()
    for th in threads:
        th.join(30)
    if first is None:
        raise RuntimeError(f"{system}: no write acknowledged within 30 s of the leader kill")
    return first - killed_at


class Corral:
    """The Corral side: three replicas, leader/follower endpoints, kill and restart.
    With `tree`, the replicas run the code of that source tree (PYTHONPATH) instead
    of this checkout's: an earlier commit measured beside this one in the same run."""

    name = "corral"

    def __init__(self, root: Path, tree: str = "") -> None:
        self.tree = tree
        with self._code():
            self.cluster = Cluster(root / self.name, 3)

    @contextlib.contextmanager
    def _code(self) -> Iterator[None]:
        if not self.tree:
            yield
            return
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = self.tree  # replicas inherit the environment
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def pids(self) -> list[int]:
        return [r.pid for r in self.cluster.replicas if r.pid is not None and r.running]

    def leader_follower(self) -> tuple[str, str]:
        leader = self.cluster.leader()
        return leader.api_address, self.cluster.followers()[0].api_address

    def prepare_kill(self) -> Callable[[], None]:
        victim = self.cluster.leader()

        def restart() -> None:
            with self._code():
                victim.start()
            self.cluster.wait_ready()

        self.restart = restart
        return victim.kill

    def close(self) -> None:
        self.cluster.close()


class CorralBaseline(Corral):
    """Corral at an earlier commit (`--baseline TREE`), beside the current one."""

    name = "corral-base"


class Etcd:
    name = "etcd"

    def __init__(self, root: Path) -> None:
        self.etcd = EtcdCluster(root / "etcd")
        self.etcd.wait_ready()

    def endpoints(self) -> list[str]:
        return self.etcd.endpoints

    def pids(self) -> list[int]:
        return [p.pid for p in self.etcd.procs.values() if p.poll() is None]

    def leader_follower(self) -> tuple[str, str]:
        leader = self.etcd.leader()
        follower = next(n for n in self.etcd.names if n != leader)
        return self.etcd.endpoint(leader), self.etcd.endpoint(follower)

    def prepare_kill(self) -> Callable[[], None]:
        victim = self.etcd.leader()

        def restart() -> None:
            self.etcd.start(victim)
            self.etcd.wait_ready()
            time.sleep(2.0)  # let the restarted member catch up

        self.restart = restart
        return lambda: self.etcd.kill(victim)

    def close(self) -> None:
        self.etcd.close()


def run(systems: list[Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Both systems run at once and take turns, so both see the same machine load."""
    res: dict[str, dict[str, Any]] = {
        s.name: {"seq_leader": [], "seq_follower": [], "tp": [], "failover": []}
        for s in systems}
    batch = max(1, args.writes // 10)
    for where in ("leader", "follower"):
        for b in range(10):
            for sys_ in systems:
                endpoint = sys_.leader_follower()[0 if where == "leader" else 1]
                res[sys_.name][f"seq_{where}"] += sequential(sys_.name, endpoint, batch,
                                                             f"{where[0]}{b}")
    for _ in range(args.rounds):
        for sys_ in systems:
            res[sys_.name]["tp"].append(
                throughput(sys_.name, sys_.endpoints(), args.seconds, sys_.pids()))
    for _ in range(args.failovers):
        for sys_ in systems:
            res[sys_.name]["failover"].append(
                failover_round(sys_.name, sys_.endpoints(), sys_.prepare_kill))
            sys_.restart()
    for r in res.values():
        tps = r.pop("tp")
        r["throughput"] = {
            "per_s": statistics.mean(t["per_s"] for t in tps),
            "each": [t["per_s"] for t in tps],
            "errors": sum(t["errors"] for t in tps),
            "p50": statistics.median(t["p50"] for t in tps),
            "p99": max(t["p99"] for t in tps),
            "cpu_ms": statistics.mean(t["cpu_ms"] for t in tps),
            "client_ms": statistics.mean(t["client_ms"] for t in tps),
        }
    return res


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    systems = [s for s in ("corral", "corral-base", "etcd") if s in results]
    head = "| | " + " | ".join(systems) + " |\n|---|" + "---|" * len(systems) + "\n"
    rows = []

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        rows.append(f"| {label} | " + " | ".join(fn(results[s]) for s in systems) + " |")

    for where in ("leader", "follower"):
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            row(f"sequential write via {where}, {name} (ms)",
                lambda r, w=where, q=q: f"{pct(r[f'seq_{w}'], q):.2f}")
    row("16 clients: writes/s (mean of rounds)", lambda r: f"{r['throughput']['per_s']:.0f}")
    row("16 clients: writes/s, each round",
        lambda r: ", ".join(f"{x:.0f}" for x in r["throughput"]["each"]))
    row("16 clients: p50 / p99 latency (ms)",
        lambda r: f"{r['throughput']['p50']:.1f} / {r['throughput']['p99']:.1f}")
    row("16 clients: failed writes", lambda r: f"{r['throughput']['errors']}")
    row("16 clients: CPU per write, servers (3 members) / clients (ms)",
        lambda r: f"{r['throughput']['cpu_ms']:.2f} / {r['throughput']['client_ms']:.2f}")
    row("failover, leader SIGKILL to next ack (s), each round",
        lambda r: ", ".join(f"{x:.2f}" for x in r["failover"]))
    row("failover median (s)", lambda r: f"{statistics.median(r['failover']):.2f}")
    cmd = " ".join(["bench/controlplane_bench.py", *sys.argv[1:]])
    return (f"Command: `.venv/bin/python {cmd}`\n\n"
            f"Both systems run at once and take turns (batches of {max(1, args.writes // 10)} "
            f"writes), so both see the same machine load. {args.writes} sequential writes "
            f"per row, each batch after 30 warm-up writes; {args.rounds} throughput rounds of "
            f"{args.seconds:g} s after 2 s of warm-up; {args.failovers} failover rounds.\n\n"
            + head + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("worker", help="(internal) one throughput client process")
    w.add_argument("--system", choices=sorted(WRITERS), required=True)
    w.add_argument("--endpoints", required=True)
    w.add_argument("--threads", type=int, default=4)
    w.add_argument("--seconds", type=float, default=10)
    w.add_argument("--warmup", type=float, default=2)
    w.add_argument("--prefix", default="w")
    p.add_argument("--writes", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--failovers", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds per system")
    p.add_argument("--only", choices=sorted(WRITERS))
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--baseline", metavar="TREE", default="",
                   help="also run Corral from this source tree (e.g. `git archive COMMIT | "
                        "tar -x -C TREE`), as the column corral-base")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    if args.cmd == "worker":
        return worker_main(args)
    root = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    systems: list[Any] = []
    try:
        for cls in (Corral, CorralBaseline, Etcd):
            if args.only and args.only != cls.name:
                continue
            if cls is CorralBaseline and not args.baseline:
                continue
            print(f"starting {cls.name} ...", file=sys.stderr, flush=True)
            systems.append(cls(root, args.baseline) if cls is CorralBaseline else cls(root))
        print("measuring ...", file=sys.stderr, flush=True)
        results = run(systems, args)
    finally:
        for sys_ in systems:
            sys_.close()
    table = markdown(results, args)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
