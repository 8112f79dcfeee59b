"""Real `corral-controlplane` replicas on loopback, for integration tests.

    from tests.cluster import Cluster

    with Cluster(tmp_path, size=3) as cluster:     # starts, waits until SERVING
        client = cluster.client()                   # corral.client.Client, every replica
        leader = cluster.leader()                   # a ReplicaProcess
        leader.kill()                               # SIGKILL, by PID
        leader.start(); cluster.wait_ready()        # same ports and data dir
        cluster.replica("cp-1").client()            # one replica only

Each replica gets free loopback ports (Raft and API, fixed for its life, so a
restart comes back on the same addresses), a data folder and a unix socket
under the test's temporary folder, a shared Raft password file, a YAML config
written exactly as the lab and Ansible write it, and a log file
(`replica.log_text()` shows it; failures print every replica's tail).

Processes run in their own session and are stopped by PID only: `stop()`
(SIGTERM, then SIGKILL after a grace) or `kill()` (SIGKILL at once). Leaving
the `with` block (or `close()`) kills whatever is still running, also when the
test failed.

Threads: none of its own; call it from the test's thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.client import Client
from corral.v1 import api_pb2, api_pb2_grpc
from tests.ports import free_port

START_TIMEOUT = 60.0


def controlplane_command() -> list[str]:
    """The real console script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "corral-controlplane"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "controlplane.main"]


class ReplicaProcess:
    def __init__(self, name: str, root: Path, raft_port: int, api_port: int,
                 password_file: Path) -> None:
        self.name = name
        self.root = root
        self.raft_address = f"127.0.0.1:{raft_port}"
        self.api_address = f"127.0.0.1:{api_port}"
        self.data_dir = root / "data"
        self.socket = root / "api.sock"
        self.config_path = root / "config.yaml"
        self.log_path = root / "replica.log"
        self.password_file = password_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ---- config ----------------------------------------------------------------
    def write_config(self, peers: dict[str, str], extra: dict[str, Any] | None = None) -> None:
        cfg: dict[str, Any] = {
            "name": self.name,
            "raft_address": self.raft_address,
            "peers": peers,
            "listen": self.api_address,
            "socket": str(self.socket),
            "data_dir": str(self.data_dir),
            "raft_password_file": str(self.password_file),
            "log_level": "info",
        }
        cfg.update(extra or {})
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    # ---- process -----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, extra_args: Sequence[str] = ()) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                [*controlplane_command(), "--config", str(self.config_path), *extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL, as a power loss would (for this process)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL after `grace`. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    # ---- probes -------------------------------------------------------------------
    def health(self, timeout: float = 1.0) -> str:
        """SERVING, NOT_SERVING or DOWN (no answer)."""
        with grpc.insecure_channel(self.api_address) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                return "DOWN"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def local_status(self, timeout: float = 2.0) -> api_pb2.MemberStatus:
        with grpc.insecure_channel(self.api_address) as ch:
            resp: api_pb2.MemberStatus = api_pb2_grpc.ClusterStub(ch).LocalStatus(
                api_pb2.MemberStatusRequest(), timeout=timeout)
            return resp

    def client(self, **kwargs: Any) -> Client:
        return Client([self.api_address], **kwargs)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(self, root: Path, size: int = 3, *, prefix: str = "cp",
                 extra_config: dict[str, Any] | None = None, start: bool = True,
                 timeout: float = START_TIMEOUT) -> None:
        self.root = Path(root) / f"cluster-{secrets.token_hex(3)}"
        self.root.mkdir(parents=True)
        self.password_file = self.root / "raft-password"
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        self.extra_config = dict(extra_config or {})
        self.prefix = prefix
        self.size = size
        self.replicas: list[ReplicaProcess] = []
        self._place()
        self._clients: list[Client] = []
        if start:
            self._first_start(timeout)

    def _place(self) -> None:
        """Fresh free ports and configs for every replica."""
        self.replicas = []
        for i in range(self.size):
            name = f"{self.prefix}-{i}"
            self.replicas.append(ReplicaProcess(name, self.root / name, free_port(),
                                                free_port(), self.password_file))
        for r in self.replicas:
            r.write_config(self.peers, self.extra_config)

    def _first_start(self, timeout: float) -> None:
        # A port picked free can be taken by another process before the replica
        # binds it (other tests run beside this one): then start over on new ports.
        for attempt in range(3):
            try:
                self.start(timeout=timeout)
                return
            except BaseException as err:
                bind_failure = any(
                    not r.running and ("cannot listen" in r.log_text()
                                       or "cannot bind" in r.log_text())
                    for r in self.replicas)
                self.close()
                if not bind_failure or attempt == 2 or not isinstance(err, Exception):
                    raise
                for r in self.replicas:
                    shutil.rmtree(r.root, ignore_errors=True)
                self._place()

    @property
    def peers(self) -> dict[str, str]:
        return {r.name: r.raft_address for r in self.replicas}

    @property
    def endpoints(self) -> list[str]:
        return [r.api_address for r in self.replicas]

    def replica(self, name: str) -> ReplicaProcess:
        for r in self.replicas:
            if r.name == name:
                return r
        raise KeyError(name)

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> None:
        for r in self.replicas:
            if not r.running:
                r.start()
        self.wait_ready(timeout=timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT,
                   replicas: Sequence[ReplicaProcess] | None = None) -> None:
        """Until every running replica (or those given) reports SERVING."""
        targets = list(replicas) if replicas is not None else [
            r for r in self.replicas if r.running]
        deadline = time.monotonic() + timeout
        pending = list(targets)
        while pending:
            for r in list(pending):
                if not r.running:
                    code = r.proc.returncode if r.proc else "?"
                    raise RuntimeError(f"{r.name} exited with {code}:\n{self.tail(r)}")
                if r.health() == "SERVING":
                    pending.remove(r)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not SERVING after {timeout:.0f}s: "
                                   f"{', '.join(r.name for r in pending)}\n"
                                   + "\n".join(self.tail(r) for r in pending))
            time.sleep(0.2)

    def leader(self, timeout: float = 30.0) -> ReplicaProcess:
        """The replica that a running member reports as leader (waits for one)."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.replicas:
                if not r.running:
                    continue
                try:
                    st = r.local_status(timeout=1.0)
                except grpc.RpcError:
                    continue
                if st.state == "leader" and st.has_quorum:
                    return r
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader after {timeout:.0f}s")
            time.sleep(0.1)

    def followers(self) -> list[ReplicaProcess]:
        lead = self.leader()
        return [r for r in self.replicas if r is not lead and r.running]

    def client(self, *names: str, **kwargs: Any) -> Client:
        """A client of the named replicas (default: all), closed with the cluster."""
        targets = [self.replica(n) for n in names] if names else self.replicas
        c = Client([r.api_address for r in targets], **kwargs)
        self._clients.append(c)
        return c

    def tail(self, r: ReplicaProcess, lines: int = 40) -> str:
        text = r.log_text().splitlines()[-lines:]
        return f"--- {r.name} (pid {r.pid}) log tail ---\n" + "\n".join(text)

    def close(self) -> None:
        """Kill every replica still running (by PID) and close the clients."""
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()
        for r in self.replicas:
            with contextlib.suppress(Exception):
                r.kill()

    def remove_files(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3, **kwargs: Any) -> Iterator[Cluster]:
    """Cluster as a context manager that prints every log tail when the body fails."""
    cluster = Cluster(root, size, **kwargs)
    try:
        yield cluster
    except BaseException:
        for r in cluster.replicas:
            print(cluster.tail(r, 80), file=sys.stderr)
        raise
    finally:
        cluster.close()
