"""Leader failover after a host's power loss, Corral beside etcd, in the same lab.

For each system, a 3-host lab is made (`corral lab` plumbing: namespaces, switch,
per-host cgroups), and ROUNDS times: find the leader, write through the API, power
off the leader's host (`Lab.kill`: freeze, link cut, SIGKILL of everything), time
until both survivors name the same new leader, then power the host back on and
wait until it is a follower of that leader again. The baseline is etcd 3.4
(Debian's etcd-server, default heartbeat 100 ms / election 1000 ms) run in the
lab's hosts in place of corral-controlplane, killed by the same `Lab.kill`.

Also timed: `Lab.up` (until a leader all replicas agree on) and `down`.

    .venv/bin/python bench/lab_failover.py [--rounds 5]

Threads: main thread only (the lab's namespace helper threads aside).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from corral.lab import Lab, LabError, LabSpec, down, net
from corral.v1 import core_pb2, meta_pb2

HOSTS = ("h1", "h2", "h3")


def etcd_shim_main(config: str) -> None:
    """Run etcd with the settings of a corral-controlplane config (exec, same PID)."""
    cfg = yaml.safe_load(Path(config).read_text())
    ip = cfg["raft_address"].rsplit(":", 1)[0]
    cluster = ",".join(f"{n}=http://{a}" for n, a in sorted(cfg["peers"].items()))
    os.execvp("etcd", [
        "etcd", "--name", cfg["name"], "--data-dir", cfg["data_dir"],
        "--listen-peer-urls", f"http://{cfg['raft_address']}",
        "--initial-advertise-peer-urls", f"http://{cfg['raft_address']}",
        "--listen-client-urls", f"http://{ip}:6443",
        "--advertise-client-urls", f"http://{ip}:6443",
        "--initial-cluster", cluster, "--initial-cluster-state", "new",
        "--log-level", "warn",
    ])


class Corral:
    name = "corral"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def leader(self, hosts: tuple[str, ...] | list[str]) -> str:
        names = set()
        for h in hosts:
            v = self.lab.member_status(h, timeout=0.5)
            names.add(v.status.leader if v.status is not None else "")
        return names.pop() if len(names) == 1 else ""

    def write(self, hosts: list[str], n: int, tag: str) -> None:
        with self.lab.client(hosts) as c:
            for i in range(n):
                c.create(core_pb2.ConfigMap(
                    metadata=meta_pb2.ObjectMeta(name=f"{tag}-{i}", namespace="default")))

    def follower_of(self, host: str, leader: str) -> bool:
        v = self.lab.member_status(host, timeout=0.5)
        return v.status is not None and v.status.leader == leader


class Etcd:
    name = "etcd 3.4"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ids: dict[str, str] = {}

    def _status(self, host: str) -> dict[str, object] | None:
        ip = self.lab.plan.host(host).ip

        def ask() -> dict[str, object]:
            req = urllib.request.Request(f"http://{ip}:6443/v3/maintenance/status", data=b"{}",
                                         method="POST")
            with urllib.request.urlopen(req, timeout=0.5) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]

        try:
            return net.in_netns(self.lab.plan.host(host).netns, ask)
        except (OSError, ValueError, LabError):  # LabError: the host is powered off
            return None

    def _name_of(self, member_id: str) -> str:
        if member_id not in self.ids:
            for h in HOSTS:
                st = self._status(h)
                if st is not None:
                    self.ids[str(st["header"]["member_id"])] = h  # type: ignore[index]
        return self.ids.get(member_id, "")

    def leader(self, hosts: tuple[str, ...] | list[str]) -> str:
        names = set()
        for h in hosts:
            st = self._status(h)
            names.add(self._name_of(str(st.get("leader", ""))) if st else "")
        return names.pop() if len(names) == 1 else ""

    def write(self, hosts: list[str], n: int, tag: str) -> None:
        ip = self.lab.plan.host(hosts[0]).ip

        def put() -> None:
            for i in range(n):
                body = json.dumps({"key": _b64(f"{tag}-{i}"), "value": _b64("v")}).encode()
                req = urllib.request.Request(f"http://{ip}:6443/v3/kv/put", data=body,
                                             method="POST")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    resp.read()

        net.in_netns(self.lab.plan.host(hosts[0]).netns, put)

    def follower_of(self, host: str, leader: str) -> bool:
        st = self._status(host)
        return st is not None and self._name_of(str(st.get("leader", ""))) == leader


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def wait(cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("timed out")
        time.sleep(0.01)
    return time.monotonic() - t0


def run(system: str, rounds: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="clb-", dir="/tmp"))
    name = f"bench-{os.getpid() % 100000}"
    commands = None
    if system == "etcd":
        commands = {"controlplane": [sys.executable, __file__, "--etcd-shim"]}
    t0 = time.monotonic()
    try:
        lab = Lab.up(LabSpec(name=name, components=("controlplane",)), root, commands=commands,
                     wait=system == "corral")
        sut: Corral | Etcd = Corral(lab) if system == "corral" else Etcd(lab)
        wait(lambda: sut.leader(HOSTS) != "", 60)
        up = time.monotonic() - t0
        failovers, rejoins = [], []
        for r in range(rounds):
            old = sut.leader(HOSTS)
            survivors = [h for h in HOSTS if h != old]
            sut.write(list(HOSTS), 20, f"r{r}")
            loss = lab.kill(old)
            wait(lambda: sut.leader(survivors) not in ("", old), 30)  # noqa: B023
            failovers.append(time.monotonic() - loss.at)
            new = sut.leader(survivors)
            sut.write(survivors, 20, f"after{r}")
            t1 = time.monotonic()
            lab.start(old)
            wait(lambda: sut.follower_of(old, new), 60)  # noqa: B023
            rejoins.append(time.monotonic() - t1)
        t2 = time.monotonic()
        down(name, root)
        return {"system": sut.name, "up": up, "down": time.monotonic() - t2,
                "failover": failovers, "rejoin": rejoins}
    finally:
        try:
            down(name, root)
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--etcd-shim":  # the lab's `--config FILE`
        etcd_shim_main(sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results = [run("corral", args.rounds), run("etcd", args.rounds)]
    print(f"{'system':10} {'up s':>6} {'down s':>7} {'failover p50':>13} {'max':>6} "
          f"{'rejoin p50':>11} {'max':>6}")
    for res in results:
        f, j = res["failover"], res["rejoin"]
        assert isinstance(f, list) and isinstance(j, list)
        print(f"{res['system']:10} {res['up']:6.2f} {res['down']:7.2f} "
              f"{statistics.median(f):13.2f} {max(f):6.2f} "
              f"{statistics.median(j):11.2f} {max(j):6.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
