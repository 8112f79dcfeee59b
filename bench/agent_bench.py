"""Node agent benchmark: pod start latency, a burst of pods, and the idle cost.

    .venv/bin/python bench/agent_bench.py [--pods 30] [--burst 30] [--idle-pods 20]
                                          [--idle-seconds 60] [--only-idle] [--out FILE]

Everything runs for real on this machine: a 3-replica control plane
(tests/cluster.py), one corral-agent in a network namespace of its own with
production settings (tests/agent/agentfixture.py), Podman 4.3.

1. Raw baselines, measured in the same run on a storage of the benchmark's own:
   `podman run -d --network none` (sequential, and 30 with 4 in parallel) and
   podman-py create+start against a `podman system service` on that storage.
2. Corral: pods are created unbound (the scheduler is disabled for the run),
   then bound one at a time (an Update that sets spec.nodeName, as the
   scheduler does); latency is bind -> the watch
   shows phase Running (the agent saw the bind, made the netns, veth and IP,
   started the container and its status write committed).
3. A burst: `--burst` unbound pods bound at once; time until all are Running.
4. Idle: `--idle-pods` pods running, then the agent's CPU (user+system) over
   `--idle-seconds` and its memory (RSS, and PSS/USS: RSS counts the shared
   library pages every process maps).
`--only-idle` runs step 4 alone (for trying out memory changes).
Results print as Markdown (and go to --out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corral import kinds
from corral.client import Client
from tests.agent import podutil as pu
from tests.agent.agentfixture import CONTAINERS_CONF, AgentHost, build_image_store
from tests.cluster import Cluster

IMAGE = "localhost/busybox:latest"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(values: list[float]) -> str:
    return (f"p50 {pct(values, 50):.3f} s, p99 {pct(values, 99):.3f} s "
            f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")


class RawPodman:
    """Podman on a storage of the benchmark's own (never the agent's)."""

    def __init__(self, root: Path, image_store: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        (root / "storage.conf").write_text(
            "[storage]\ndriver = \"overlay\"\n"
            f"graphroot = \"{root / 'storage'}\"\nrunroot = \"{root / 'run'}\"\n"
            f"[storage.options]\nadditionalimagestores = [\"{image_store}\"]\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf")}
        self.base = ["podman", "--tmpdir", str(root / "tmp")]
        self.socket = root / "podman.sock"
        self.service: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=120)

    def run_d(self, name: str) -> float:
        t0 = time.perf_counter()
        self.run("run", "-d", "--name", name, "--network", "none",
                 "--cgroup-parent", "/corral-bench-raw", IMAGE, "sleep", "1000")
        return time.perf_counter() - t0

    def start_service(self) -> None:
        self.service = subprocess.Popen(
            [*self.base, "system", "service", "--time", "0", f"unix://{self.socket}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    def podman_py_times(self, n: int) -> list[float]:
        import podman
        client = podman.PodmanClient(base_url=f"unix://{self.socket}", timeout=60)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            ct = client.containers.create(IMAGE, ["sleep", "1000"], name=f"py-{i}",
                                          network_mode="none",
                                          cgroup_parent="/corral-bench-raw")
            ct.start()
            times.append(time.perf_counter() - t0)
        client.close()
        return times

    def clean(self) -> None:
        self.run("rm", "-a", "-f", "-t", "0", check=False)

    def close(self) -> None:
        try:
            self.clean()
        finally:
            if self.service is not None and self.service.poll() is None:
                self.service.terminate()
                self.service.wait(10)


class RunningWatch:
    """Records when each pod of a namespace is first seen Running."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stream = client.watch("Pod", namespace)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream:
                if ev.object is not None and ev.object.status.phase == "Running":
                    now = time.perf_counter()
                    with self._cond:
                        self.seen.setdefault(ev.object.metadata.name, now)
                        self._cond.notify_all()
        except Exception:
            pass

    def wait(self, names: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in self.seen]
                    raise TimeoutError(f"not Running after {timeout:.0f}s: {missing[:5]}")
                self._cond.wait(left)

    def close(self) -> None:
        self._stream.cancel()


def unbound(name: str, ns: str) -> Any:
    p = pu.pod(name, ns, "", pu.container("main", "sleep", "100000"), grace=0)
    p.spec.ClearField("node_name")
    return p


def bind(client: Client, ns: str, name: str, node: str) -> None:
    for _ in range(5):
        p = client.get("Pod", name, ns)
        p.spec.node_name = node
        try:
            client.update(p)
            return
        except Exception as err:  # a conflict with a concurrent write: read again
            last = err
    raise RuntimeError(f"cannot bind {ns}/{name}: {last}")


def make_ns(client: Client, name: str) -> None:
    obj = kinds.by_kind("Namespace").new()
    obj.metadata.name = name
    client.create(obj)


def delete_all(client: Client, ns: str, names: list[str]) -> None:
    for n in names:
        try:
            client.delete("Pod", n, ns, grace_period_seconds=0)
        except Exception:
            pass


def agent_process(host: AgentHost) -> psutil.Process:
    assert host.proc is not None
    # nsenter execs the agent: same PID.
    return psutil.Process(host.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--burst", type=int, default=30)
    ap.add_argument("--idle-pods", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--only-idle", action="store_true", help="only the idle measurement")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="e-bench-"))
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    cluster = host = raw = None
    try:
        store = build_image_store(root / "img")
        raw = RawPodman(root / "raw", store)
        # The scheduler would bind the unbound pods itself: leave binding to us.
        cluster = Cluster(root / "cp", 3,
                          extra_config={"controllers": {"disabled": ["scheduler"]}})
        servers = [f"unix:{r.socket}" for r in cluster.replicas]
        host = AgentHost(root / "ag", servers, store, extra={
            "log_level": "info", "lease_period": 2.0, "status_period": 10.0,
            "relist_period": 10.0, "backoff": {"base": 10.0, "max": 300.0,
                                               "reset_after": 600.0}})
        client = host.client
        say(f"# Agent benchmark ({time.strftime('%Y-%m-%d')})")
        say()
        version = subprocess.run(["podman", "--version"], capture_output=True,
                                 text=True).stdout.split()[-1]
        say(f"Machine: {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total // 2**30} GiB, shared with other work; "
            f"Podman {version}.")
        say("Command: `.venv/bin/python bench/agent_bench.py "
            f"--pods {args.pods} --burst {args.burst} --idle-pods {args.idle_pods} "
            f"--idle-seconds {args.idle_seconds:g}{' --only-idle' if args.only_idle else ''}`")
        say()

        raw_times: list[float] = []
        py_times: list[float] = []
        latencies: list[float] = []
        burst_lat: list[float] = []
        raw_burst = burst_total = 0.0
        if not args.only_idle:
            # ---- raw baselines -------------------------------------------------------------
            raw_times = [raw.run_d(f"raw-{i}") for i in range(args.pods)]
            raw.clean()
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: raw.run_d(f"par-{i}"), range(args.burst)))
            raw_burst = time.perf_counter() - t0
            raw.clean()
            raw.start_service()
            py_times = raw.podman_py_times(args.pods)
            raw.clean()

            # ---- Corral: one at a time -------------------------------------------------------
            ns = "bench-seq"
            make_ns(client, ns)
            names = [f"p{i:02d}" for i in range(args.pods)]
            for n in names:
                client.create(unbound(n, ns))
            watch = RunningWatch(client, ns)
            latencies = []
            for n in names:
                t0 = time.perf_counter()
                bind(client, ns, n, host.node_name)
                watch.wait([n])
                latencies.append(watch.seen[n] - t0)
            watch.close()
            delete_all(client, ns, names)
            # Let the agent finish tearing those down before the burst competes with it.
            pu.wait_for("sequential pods gone", lambda: not client.list("Pod", ns)[0], timeout=120)
            time.sleep(3)

            # ---- Corral: a burst ----------------------------------------------------------------
            ns2 = "bench-burst"
            make_ns(client, ns2)
            burst_names = [f"b{i:02d}" for i in range(args.burst)]
            for n in burst_names:
                client.create(unbound(n, ns2))
            watch = RunningWatch(client, ns2)
            t0 = time.perf_counter()
            bound_at: dict[str, float] = {}
            bind_took: list[float] = []

            def bind_one(n: str) -> None:
                bound_at[n] = time.perf_counter()
                bind(client, ns2, n, host.node_name)
                bind_took.append(time.perf_counter() - bound_at[n])
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(bind_one, burst_names))
            watch.wait(burst_names, timeout=300)
            burst_total = max(watch.seen.values()) - t0
            burst_lat = [watch.seen[n] - bound_at[n] for n in burst_names]
            watch.close()
            delete_all(client, ns2, burst_names)

            say("## Pod start latency, one pod at a time")
            say()
            say("| what | latency |")
            say("|---|---|")
            say(f"| raw `podman run -d --network none` | {summary(raw_times)} |")
            say(f"| raw podman-py create+start | {summary(py_times)} |")
            say(f"| Corral bind -> Running (netns, veth, IP, container, status) | "
                f"{summary(latencies)} |")
            say()
            margin = pct(latencies, 99) - pct(raw_times, 99)
            say(f"Corral p99 - raw p99 = {margin:+.3f} s (target: at most +0.5 s); "
                f"Kubernetes' SLO is 5 s.")
            say()
            say(f"## {args.burst} pods at once on one node")
            say()
            say("| what | total |")
            say("|---|---|")
            say(f"| raw `podman run -d`, 4 in parallel | {raw_burst:.2f} s |")
            say(f"| Corral: {args.burst} binds at once -> all Running | {burst_total:.2f} s "
                f"(per pod {summary(burst_lat)}) |")
            say()
            say(f"The binds themselves (get + update through the control plane, 8 at a time) "
                f"took {summary(bind_took)}.")
            say()

        # ---- idle cost with N pods ---------------------------------------------------------
        if not args.only_idle:
            pu.wait_for("burst pods gone", lambda: not client.list("Pod", ns2)[0],
                        timeout=120)
        ns3 = "bench-idle"
        make_ns(client, ns3)
        idle_names = [f"i{i:02d}" for i in range(args.idle_pods)]
        watch = RunningWatch(client, ns3)
        for n in idle_names:
            p = unbound(n, ns3)
            p.spec.node_name = host.node_name
            client.create(p)
        watch.wait(idle_names, timeout=300)
        watch.close()
        time.sleep(15)  # settle: first status writes, probes, samplers
        proc = agent_process(host)
        service_pid = int((host.state / "podman-service.pid").read_text().split()[0])
        service = psutil.Process(service_pid)
        c0, s0 = proc.cpu_times(), service.cpu_times()
        t0 = time.monotonic()
        time.sleep(args.idle_seconds)
        c1, s1 = proc.cpu_times(), service.cpu_times()
        span = time.monotonic() - t0
        agent_cpu = (c1.user + c1.system - c0.user - c0.system) / span * 100
        service_cpu = (s1.user + s1.system - s0.user - s0.system) / span * 100
        mem = proc.memory_full_info()
        smem = service.memory_full_info()
        say(f"## Idle with {args.idle_pods} pods ({args.idle_seconds:g} s)")
        say()
        say("| process | CPU (% of one core) | RSS | PSS | USS | threads |")
        say("|---|---|---|---|---|---|")
        say(f"| corral-agent | {agent_cpu:.2f} % | {mem.rss / 2**20:.1f} MiB | "
            f"{mem.pss / 2**20:.1f} MiB | {mem.uss / 2**20:.1f} MiB | {proc.num_threads()} |")
        say(f"| its podman system service | {service_cpu:.2f} % | "
            f"{smem.rss / 2**20:.1f} MiB | {smem.pss / 2**20:.1f} MiB | "
            f"{smem.uss / 2**20:.1f} MiB | {service.num_threads()} |")
        say()
        say("Targets: agent under 60 MB and under 2 % of a core when idle. RSS includes "
            "the pages of shared libraries (grpc's cygrpc, libpython, libcrypto) that "
            "every process mapping them counts; USS is what this agent alone costs.")
        delete_all(client, ns3, idle_names)
        pu.wait_for("idle pods gone", lambda: not client.list("Pod", ns3)[0], timeout=120)
        data = {"raw_run_d": raw_times, "podman_py": py_times, "corral": latencies,
                "raw_burst_total": raw_burst, "corral_burst_total": burst_total,
                "corral_burst": burst_lat, "agent_cpu_pct": agent_cpu,
                "agent_rss": mem.rss, "agent_uss": mem.uss, "agent_pss": mem.pss}
        (root / "results.json").write_text(json.dumps(data))
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
            say(f"(written to {args.out})")
        return 0
    finally:
        if host is not None:
            host.close()
        if raw is not None:
            raw.close()
        if cluster is not None:
            cluster.close()
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(str(root))]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / "corral-bench-raw"
            if top.is_dir():
                for d in sorted((Path(p) for p, _, _ in os.walk(top)),
                                key=lambda p: len(str(p)), reverse=True):
                    try:
                        d.rmdir()
                    except OSError:
                        pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
