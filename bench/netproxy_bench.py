"""Benchmark: netproxy syncs beside a bare iptables-restore of the same rules.

    sudo .venv/bin/python bench/netproxy_bench.py [--sizes 100,1000,5000] [--repeat 3]
                                                   [--changes 9]

Everything runs in network namespaces made for the run and removed after it.
For each size N (Services x 10 ready endpoints each):
- full sync, from nothing: the proxy's `sync(full=True)` (render every Service,
  read back with iptables-save, diff, restore) in one fresh namespace, beside a
  bare `iptables-restore --noflush` of the very payload the proxy wrote, in
  another fresh namespace; medians of --repeat runs (one run at 5,000);
- full sync with everything already in place (read back, compare, no restore);
- at the largest N: a one-Service change (one endpoint replaced) as a partial
  sync, beside the bare --noflush restore of the same partial payload into a
  namespace holding the same rules; and a new Service (a jump inserted into
  CORRAL-SERVICES at its sorted position), the same way.
With --lab-cycles K (K > 0), in a 3-host lab (real control plane, agents,
endpoints controller, a netproxy per host): K times, the one pod behind a
Service on h3 turns NotReady and then Ready again; the time from its Ready
condition reaching the API (a watch event) to the first answer through the VIP
from h1's host namespace (a prober calling every 10 ms) is one sample.
Prints a Markdown report (BENCHMARKS.md section 5 holds a run's output).

Threads: the proxy's sync is called directly, as its sync thread does; the lab
part watches the pod on a thread of its own and reads the prober's output.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corral.v1 import core_pb2
from netproxy.iptables import Iptables
from netproxy.proxier import Proxier, SyncResult
from netproxy.rules import NodeFacts
from netproxy.tracker import ChangeTracker

FACTS = NodeFacts(cluster_cidr="10.244.0.0/16", dns_ip="10.96.0.10",
                  dns_target="10.250.0.11:53")
ENDPOINTS = 10


def service(i: int) -> core_pb2.Service:
    s = core_pb2.Service()
    s.metadata.namespace = f"ns{i % 50}"
    s.metadata.name = f"svc{i}"
    s.spec.type = "ClusterIP"
    n = i + 256  # 10.96.1.0 onwards: clear of the DNS address 10.96.0.10
    s.spec.cluster_ip = f"10.{96 + n // 65536}.{(n // 256) % 256}.{n % 256}"
    s.spec.ports.add(name="http", port=80, protocol="TCP")
    return s


def endpoints(i: int, salt: int = 0) -> core_pb2.Endpoints:
    e = core_pb2.Endpoints()
    e.metadata.namespace = f"ns{i % 50}"
    e.metadata.name = f"svc{i}"
    sub = e.subsets.add()
    for k in range(ENDPOINTS):
        n = i * ENDPOINTS + k + salt
        sub.addresses.add(ip=f"10.{244 + n // 65536 // 256}.{(n // 256) % 256}.{n % 256}")
    sub.ports.add(name="http", port=8080, protocol="TCP")
    return e


class Netns:
    def __init__(self, tag: str) -> None:
        self.name = f"gbench-{secrets.token_hex(3)}-{tag}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.iptables = Iptables(prefix=["ip", "netns", "exec", self.name], timeout=1800)

    def restore(self, payload: str) -> float:
        start = time.perf_counter()
        self.iptables.restore(payload)
        return time.perf_counter() - start

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def proxy_in(ns: Netns, n: int) -> tuple[Proxier, ChangeTracker]:
    tracker = ChangeTracker()
    for i in range(n):
        tracker.service_updated(service(i))
        tracker.endpoints_updated(endpoints(i))
    return Proxier(tracker, ns.iptables, FACTS, min_sync_period=0), tracker


def timed_sync(proxier: Proxier, full: bool) -> tuple[float, SyncResult]:
    start = time.perf_counter()
    result = proxier.sync(full=full)
    return time.perf_counter() - start, result


def full_sync_runs(n: int, repeat: int) -> list[dict[str, float]]:
    """`repeat` runs, each in two fresh namespaces; every other run restores the bare
    payload first, so drifting machine load does not favour either side."""
    payload = ""
    runs = []
    for r in range(repeat):
        a, b = Netns("proxy"), Netns("bare")
        try:
            proxier, _ = proxy_in(a, n)
            bare_first = bool(payload) and r % 2 == 1
            bare = b.restore(payload) if bare_first else 0.0
            secs, res = timed_sync(proxier, True)
            assert res.result == "applied", res.error
            text = res.payload.text
            assert not payload or text == payload, "rendering is not deterministic"
            payload = text
            if not bare_first:
                bare = b.restore(payload)
            again, res2 = timed_sync(proxier, True)
            assert res2.result == "unchanged", res2
            runs.append({"proxy": secs, "bare": bare, "ratio": secs / bare, "inplace": again,
                         "rules": float(res.payload.rules),
                         "chains": float(res.payload.chains)})
        finally:
            a.close()
            b.close()
    return runs


def change_runs(n: int, changes: int) -> dict[str, list[float]]:
    a, b = Netns("proxy"), Netns("bare")
    out: dict[str, list[float]] = {"ep_proxy": [], "ep_bare": [], "new_proxy": [],
                                   "new_bare": []}
    try:
        proxier, tracker = proxy_in(a, n)
        full = proxier.sync(full=True)
        b.restore(full.payload.text)
        for k in range(changes):
            i = (k * 7919) % n
            tracker.endpoints_updated(endpoints(i, salt=n * ENDPOINTS + 17 * (k + 1)))
            secs, res = timed_sync(proxier, False)
            assert res.result == "applied", res
            out["ep_proxy"].append(secs)
            out["ep_bare"].append(b.restore(res.payload.text))
        for k in range(changes):
            i = n + k
            tracker.service_updated(service(i))
            tracker.endpoints_updated(endpoints(i))
            secs, res = timed_sync(proxier, False)
            assert res.result == "applied", res
            out["new_proxy"].append(secs)
            out["new_bare"].append(b.restore(res.payload.text))
        final = proxier.sync(full=True)
        assert final.result == "unchanged", final  # partial syncs left exactly the full render
        return out
    finally:
        a.close()
        b.close()


PROBER = """
import socket, sys, time
vip = sys.argv[1]
last = None
while True:
    ok = False
    try:
        with socket.create_connection((vip, 80), timeout=0.2) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            # Any HTTP answer: the pod answers 404 while its page (and so its
            # readiness) is gone, and only the rules decide whether it is reached.
            ok = s.recv(64).startswith(b"HTTP/")
    except OSError:
        pass
    if ok != last:
        print(f"{time.time():.6f} {'ok' if ok else 'fail'}", flush=True)
        last = ok
    time.sleep(0.01)
"""


class Transitions:
    """(time, state) changes reported by a thread, awaited by the bench's thread."""

    def __init__(self) -> None:
        import threading
        self.cond = threading.Condition()
        self.seen: list[tuple[float, str]] = []

    def add(self, t: float, state: str) -> None:
        with self.cond:
            self.seen.append((t, state))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.seen)

    def current(self) -> str:
        with self.cond:
            return self.seen[-1][1] if self.seen else ""

    def wait(self, state: str, since: int = 0, timeout: float = 60) -> float:
        """Time of the first change to `state` at or after position `since`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, st in self.seen[since:]:
                    if st == state:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no change to {state!r} within {timeout} s: "
                                       f"{self.seen[since:][-5:]}")
                self.cond.wait(left)


def lab_propagation(cycles: int) -> list[float]:
    import threading

    from tests.labfixture import running_lab
    from tests.netproxy.labapp import (
        namespace,
        pod_sh,
        ready_ips,
        wait_for,
        web_pod,
        web_service,
    )

    ns = f"bench-{secrets.token_hex(3)}"
    samples: list[float] = []
    with running_lab(components=("controlplane", "agent", "netproxy")) as lab, \
            lab.client() as c:
        c.create(namespace(ns))
        c.create(web_pod("target", ns, "h3", app="probe"))
        vip = c.create(web_service("probe", ns, type="ClusterIP", app="probe")).spec.cluster_ip
        wait_for(lambda: ready_ips(c, "probe", ns)[0], 90, "target ready")
        pod_ready, reached = Transitions(), Transitions()

        def watch() -> None:
            was = None
            try:
                for ev in c.watch("Pod", ns):
                    if ev.object is None or ev.object.metadata.name != "target":
                        continue
                    ready = any(cond.type == "Ready" and cond.status == "True"
                                for cond in ev.object.status.conditions)
                    if ready != was:
                        pod_ready.add(time.time(), "ready" if ready else "not ready")
                    was = ready
            except Exception as err:  # the bench reports it when a sample never comes
                print(f"pod watch ended: {err!r}", file=sys.stderr)

        threading.Thread(target=watch, daemon=True).start()
        argv, env = lab.exec_argv("h1", [sys.executable, "-c", PROBER, vip])
        prober = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)

        def read_prober() -> None:
            assert prober.stdout is not None
            for line in prober.stdout:
                t, state = line.split()
                reached.add(float(t), state)

        threading.Thread(target=read_prober, daemon=True).start()
        try:
            reached.wait("ok")
            for _ in range(cycles):
                # Not ready in the API, then (no endpoint, REJECT) unreachable from h1:
                # a passing hiccup of the prober before that is not taken for it.
                since = pod_ready.mark()
                pod_sh(c, "target", ns, "rm /www/index.html")
                pod_ready.wait("not ready", since)
                wait_for(lambda: reached.current() == "fail", 30, "VIP refused", every=0.01)
                since_ready, since_reached = pod_ready.mark(), reached.mark()
                pod_sh(c, "target", ns, "hostname > /www/index.html")
                # Without an endpoint nothing answers: the first "ok" is the new rules.
                t_ok = reached.wait("ok", since_reached)
                t_ready = pod_ready.wait("ready", since_ready)
                samples.append(t_ok - t_ready)
        finally:
            prober.kill()
            prober.wait(timeout=10)
    return samples


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--repeat-large", type=int, default=2,
                    help="runs at N >= 5,000 (each takes minutes)")
    ap.add_argument("--changes", type=int, default=9)
    ap.add_argument("--lab-cycles", type=int, default=0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, iptables)", file=sys.stderr)
        return 1
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ipt = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    print(f"# netproxy sync benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(f"`{' '.join(['python', *sys.argv])}` on {platform.node()}: {os.cpu_count()} cores, "
          f"Linux {platform.release()}, {ipt.strip()}; load average before: "
          f"{os.getloadavg()[0]:.2f}.\n")
    if args.lab_cycles:
        lat = lab_propagation(args.lab_cycles)
        print(f"## Pod Ready -> traffic through the VIP from another host (lab, {len(lat)} "
              "cycles)\n")
        print("| p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | min (ms) |")
        print("|---|---|---|---|---|")
        print(" | ".join(["", *(f"{percentile(lat, q) * 1000:.0f}" for q in (50, 90, 99)),
                          f"{max(lat) * 1000:.0f}", f"{min(lat) * 1000:.0f}", ""]).strip())
        print(flush=True)
    if not sizes:
        return 0
    print("## Full sync from nothing, N Services x 10 ready endpoints\n")
    print("| N | rules | chains | runs | proxy full sync (s) | bare iptables-restore --noflush "
          "of the same payload (s) | ratio (median of runs) | full sync with rules in place "
          "(s) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        runs = full_sync_runs(n, args.repeat_large if n >= 5000 else args.repeat)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {n:,} | {int(med['rules']):,} | {int(med['chains']):,} | {len(runs)} | "
              f"{med['proxy']:.3f} | {med['bare']:.3f} | {med['ratio']:.2f}x | "
              f"{med['inplace']:.3f} |", flush=True)
    n = max(sizes)
    ch = change_runs(n, args.changes)
    print(f"\n## Partial syncs at {n:,} Services (medians of {args.changes})\n")
    print("| change | proxy partial sync (s) | bare --noflush restore of the same payload (s) "
          "| ratio |")
    print("|---|---|---|---|")
    for label, key in (("one endpoint of one Service replaced", "ep"),
                       ("one new Service (jump inserted in CORRAL-SERVICES)", "new")):
        p, b = statistics.median(ch[f"{key}_proxy"]), statistics.median(ch[f"{key}_bare"])
        print(f"| {label} | {p:.3f} | {b:.3f} | {p / b:.2f}x |")
    print(f"\nLoad average after: {os.getloadavg()[0]:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
