"""The replicated store alone: three RaftStore processes, writes from the leader.

Not a test. Separates the store's own cost from the API's (gRPC server,
handler, client), which bench/controlplane_bench.py measures together. Starts
three member processes on loopback (this file with `member`), each a
RaftStore with a journal in a temporary folder; the one elected leader runs
the measurement in-process and prints it:

- sequential put latency (p50/p90/p99) and, for the same writes, where the
  time goes on the leader: waking the Raft thread, appending, sending to the
  followers, the leader's fsync, waiting for the first follower's
  acknowledgement, commit and apply, and waking the caller;
- throughput with 16 threads putting at once.

Usage: .venv/bin/python bench/store_bench.py [--writes 1000] [--seconds 10]
Members are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncobj import SyncObj

from controlplane.store import raft, raftnode
from controlplane.store.base import Change
from tests.ports import free_port

PHASES: dict[str, list[float]] = collections.defaultdict(list)
_cur: dict[str, float] = {}


def _instrument() -> None:
    """Wrap three store methods to time the phases of one write on the leader."""
    node_cls = raftnode.RaftNode
    real_check = node_cls._checkCommandsToApply

    def check(self: raftnode.RaftNode) -> None:
        if self._SyncObj__raftState != 2:  # followers: unchanged
            real_check(self)
            return
        # The leader's part of RaftNode._checkCommandsToApply, with clocks (the
        # bench's writes are all submitted on the leader: no forwarded replies).
        before = self._journal.last_index
        t0 = time.perf_counter()
        SyncObj._checkCommandsToApply(self)
        t1 = time.perf_counter()
        if self._journal.last_index != before and self._SyncObj__raftState == 2:
            self._SyncObj__sendAppendEntries()
            t2 = time.perf_counter()
            self._journal.sync()
            t3 = time.perf_counter()
            if "put" in _cur and "synced" not in _cur:
                PHASES["1 wake the Raft thread"].append(t0 - _cur["put"])
                PHASES["2 append to the journal buffer"].append(t1 - t0)
                PHASES["3 send to 2 followers"].append(t2 - t1)
                PHASES["4 leader fsync"].append(t3 - t2)
                _cur["synced"] = t3
        else:
            self._journal.sync()

    node_cls._checkCommandsToApply = check  # type: ignore[method-assign]
    on_message = node_cls._SyncObj__onMessageReceived

    def message(self: raftnode.RaftNode, node: object, msg: object) -> None:
        if isinstance(msg, dict) and msg.get("type") == "next_node_idx" \
                and "synced" in _cur and "ack" not in _cur:
            _cur["ack"] = time.perf_counter()
        on_message(self, node, msg)

    node_cls._SyncObj__onMessageReceived = message  # type: ignore[attr-defined]
    apply = raft._Machine._apply

    def applied(self: raft._Machine, fn: object, *rest: object) -> object:
        if "ack" in _cur and "applied" not in _cur:
            _cur["applied"] = time.perf_counter()
        return apply(self, fn, *rest)  # type: ignore[arg-type]

    raft._Machine._apply = applied  # type: ignore[method-assign]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def member(args: argparse.Namespace) -> int:
    _instrument()
    store = raft.RaftStore(raft.RaftConfig(
        name=args.me, raft_address=args.me, peers=tuple(args.peers.split(",")),
        data_dir=args.data, password="bench-password"))
    signal.signal(signal.SIGTERM, lambda *_: (store.close(), os._exit(0)))
    time.sleep(3.0)
    if not store.is_leader():
        while True:
            time.sleep(1)
    store.put(Change("Namespace", "", "default"))
    for i in range(30):
        store.put(Change("ConfigMap", "default", f"warm{i}", data=b"v" * 300))
    lat = []
    for i in range(args.writes):
        _cur.clear()
        _cur["put"] = time.perf_counter()
        store.put(Change("ConfigMap", "default", f"s{i}", data=b"v" * 300))
        end = time.perf_counter()
        if "applied" in _cur:
            PHASES["5 wait for the first acknowledgement"].append(_cur["ack"] - _cur["synced"])
            PHASES["6 next tick: commit, apply"].append(_cur["applied"] - _cur["ack"])
            PHASES["7 wake the caller"].append(end - _cur["applied"])
        lat.append((end - _cur["put"]) * 1000)
    _cur.clear()
    out = [f"sequential put, {args.writes} writes: p50 {pct(lat, .5):.2f} ms, "
           f"p90 {pct(lat, .9):.2f} ms, p99 {pct(lat, .99):.2f} ms", "",
           "| phase of one put on the leader | p50 ms | mean ms |", "|---|---|---|"]
    for k in sorted(PHASES):
        v = PHASES[k]
        out.append(f"| {k[2:]} | {pct(v, .5) * 1000:.3f} | {sum(v) / len(v) * 1000:.3f} |")
    stop = threading.Event()
    counts = [0] * 16

    def writer(t: int) -> None:
        i = 0
        while not stop.is_set():
            store.put(Change("ConfigMap", "default", f"t{t}-{i}", data=b"v" * 300))
            counts[t] += 1
            i += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    time.sleep(2.0)
    base = sum(counts)
    time.sleep(args.seconds)
    done = sum(counts) - base
    stop.set()
    for th in threads:
        th.join()
    out += ["", f"16 threads putting at once: {done / args.seconds:.0f} writes/s"]
    print("\n".join(out), flush=True)
    store.close()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--me", help=argparse.SUPPRESS)
    p.add_argument("--peers", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.member:
        return member(args)
    root = Path(tempfile.mkdtemp(prefix="corral-store-bench-"))
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "--member", "--me", a,
                          "--peers", ",".join(x for x in addrs if x != a),
                          "--data", str(root / f"m{i}"), "--writes", str(args.writes),
                          "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
        for i, a in enumerate(addrs)
    ]
    try:
        deadline = time.monotonic() + args.seconds + args.writes * 0.1 + 60
        while time.monotonic() < deadline and all(pr.poll() is None for pr in procs):
            time.sleep(0.2)
        for pr in procs:
            if pr.poll() is not None:
                print(pr.communicate()[0])
                break
    finally:
        for pr in procs:
            if pr.poll() is None:
                os.kill(pr.pid, signal.SIGTERM)
                pr.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
