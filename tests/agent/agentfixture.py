"""A real corral-agent in a network namespace of the test's own, for integration tests.

    with AgentHost(tmp, cluster, image_store) as host:   # starts, waits for Node Ready
        host.client                  # corral.client.Client to the control plane
        host.kill(); host.start()    # SIGKILL / start again, same state folder
        host.podman("ps", "-a")      # the agent's own Podman (remote, over its socket)

The host namespace (`e-<hex>`) gets loopback, a veth to the machine's namespace
with a /30 of 198.18.0.0/15 (RFC 2544 benchmarking space, never routed), so the
control plane (on loopback of the machine) can reach the agent's NodeAgent port
for logs/exec, and the test can too. The agent reaches the control plane over
the replicas' unix sockets. Nothing else is linked: the namespace has no default
route, so no packet of its pods leaves the machine.

Everything is removed on close, also after a failure: the agent (by PID), its
containers (through Podman, `rm -f -t 0`), pod namespaces with the host's
prefix, the veth, the namespace, tmpfs mounts under the state folder, the
cgroups under the host's cgroup parent.
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
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute, netns

from corral.client import Client
from corral.errors import CorralError

BUSYBOX_APPLETS = ("sh", "sleep", "httpd", "wget", "nc", "hostname", "cat", "ls", "echo",
                   "env", "ps", "kill", "true", "false", "test", "grep", "id", "mkdir", "touch",
                   "date", "uname", "ip", "ifconfig", "wc", "head", "tail", "printf", "seq",
                   "dd", "rm", "mv", "cp", "ln", "stat", "top", "yes")
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
CGROUP_ROOT = Path("/sys/fs/cgroup")


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "corral-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nodeagent.main"]


def build_image_store(root: Path) -> Path:
    """A Podman image store holding localhost/busybox:latest (built from the static
    busybox, as ENVIRONMENT.md says), usable read-only by every agent."""
    store = root / "images"
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    for d in ("tmp", "etc", "var/www", "proc", "sys", "dev", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    tar = root / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    env.pop("CONTAINERS_STORAGE_CONF", None)
    subprocess.run(["podman", "--root", str(store), "--runroot", str(root / "images-run"),
                    "--storage-driver", "overlay", "import", str(tar),
                    "localhost/busybox:latest"], check=True, env=env, capture_output=True)
    return store


class AgentHost:
    def __init__(self, root: Path, servers: list[str], image_store: Path, *,
                 extra: dict[str, Any] | None = None, start: bool = True,
                 node_name: str = "", link: bool = True) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.root = Path(root) / f"agent-{tag}"
        self.state = self.root / "state"
        self.root.mkdir(parents=True)
        self.netns = f"e-{tag}"
        self.node_name = node_name or f"node-{tag}"
        self.netns_prefix = f"e-{tag}-p-"
        self.cgroup_parent = f"/corral-e-{tag}"
        self.veth = f"e{tag}h"
        n = int(tag, 16) % 16000
        base = (198 << 24) | (18 << 16) | (n * 4)
        self.outer_ip = _ip(base + 1)
        self.node_ip = _ip(base + 2)
        self.image_store = image_store
        self.servers = servers
        self.log_path = self.root / "agent.log"
        self.config_path = self.root / "agent.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._client: Client | None = None
        conf = self.root / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.config: dict[str, Any] = {
            "node_name": self.node_name,
            "node_ip": self.node_ip,
            "servers": servers,
            "state_dir": str(self.state),
            "netns_prefix": self.netns_prefix,
            "lease_period": 1.0,
            "status_period": 5.0,
            "relist_period": 5.0,
            "log_level": "debug",
            "podman": {
                "containers_conf": str(conf),
                "additional_image_stores": [str(image_store)],
                "cgroup_parent": self.cgroup_parent,
                "call_timeout": 20,
            },
            "backoff": {"base": 1.0, "max": 8.0, "reset_after": 60.0},
        }
        _merge(self.config, extra or {})
        try:
            self._make_namespace(link)
            if start:
                self.start()
                self.wait_ready()
        except BaseException:
            self.close()
            raise

    # ---- namespace -----------------------------------------------------------------
    def _make_namespace(self, link: bool) -> None:
        netns.create(self.netns)
        with IPRoute(netns=self.netns) as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        if not link:
            return
        with IPRoute() as ip:
            ip.link("add", ifname=self.veth, kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": f"/run/netns/{self.netns}"})
            idx = ip.link_lookup(ifname=self.veth)[0]
            ip.addr("add", index=idx, address=self.outer_ip, prefixlen=30)
            ip.link("set", index=idx, state="up")
        with IPRoute(netns=self.netns) as ip:
            idx = ip.link_lookup(ifname="eth0")[0]
            ip.addr("add", index=idx, address=self.node_ip, prefixlen=30)
            ip.link("set", index=idx, state="up")

    # ---- process --------------------------------------------------------------------------
    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.write_config()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "--", *agent_command(),
                 "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self) -> None:
        """SIGKILL the agent only (its Podman service dies with it; containers stay)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._wait_service_gone()

    def stop(self, grace: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._wait_service_gone()
        return self.proc.returncode

    def _service_pid(self) -> int:
        try:
            return int((self.state / "podman-service.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def _wait_service_gone(self, timeout: float = 10.0) -> None:
        pid = self._service_pid()
        deadline = time.monotonic() + timeout
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.servers, timeout=10.0, retry_for=20.0)
        return self._client

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the Node reports Ready with a heartbeat from this start."""
        deadline = time.monotonic() + timeout
        started = time.time() - 1
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"agent exited with {self.proc.returncode if self.proc else '?'}"
                                   f":\n{self.log_tail()}")
            try:
                node = self.client.get("Node", self.node_name)
                ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
                if ready is not None and ready.status == "True" and \
                        ready.last_heartbeat_time.seconds >= int(started) and \
                        self.agent_listening():
                    return
            except CorralError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"node {self.node_name} not Ready after {timeout:.0f}s:\n"
                           f"{self.log_tail()}")

    def agent_listening(self) -> bool:
        import socket
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((self.node_ip, int(self.config.get("agent_port", 10250))))
                return True
            except OSError:
                return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"--- agent {self.node_name} log tail ---\n" + "\n".join(text)

    # ---- the agent's podman, from outside ------------------------------------------------
    def podman_env(self) -> dict[str, str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}
        env["CONTAINERS_STORAGE_CONF"] = str(self.state / "storage.conf")
        return env

    def podman(self, *args: str, check: bool = True, timeout: float = 60.0
               ) -> subprocess.CompletedProcess[str]:
        """`podman --url unix://<agent socket> ARGS` (the agent's service must run)."""
        return subprocess.run(["podman", "--url", f"unix://{self.state / 'podman.sock'}", *args],
                              capture_output=True, text=True, check=check, timeout=timeout,
                              env=self.podman_env())

    def podman_local(self, *args: str, check: bool = False, timeout: float = 120.0
                     ) -> subprocess.CompletedProcess[str]:
        """Podman on the agent's storage without its service (cleanup)."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", "--", "podman",
             "--tmpdir", str(self.state / "run" / "libpod"), *args],
            capture_output=True, text=True, check=check, timeout=timeout,
            env=self.podman_env())

    def http_get(self, url: str, timeout: float = 3.0) -> tuple[int, str]:
        """(status, body) of a GET from the host namespace; (0, error) when it failed.
        Python rather than busybox: the static busybox's `wget -T` crashes here."""
        code = ("import sys,urllib.request,urllib.error\n"
                "try:\n"
                f" r=urllib.request.urlopen({url!r},timeout={timeout})\n"
                " print(r.status); sys.stdout.write(r.read().decode(errors='replace'))\n"
                "except urllib.error.HTTPError as e:\n"
                " print(e.code)\n"
                "except Exception as e:\n"
                " print(0); print(e)\n")
        out = self.exec_in_netns([sys.executable, "-c", code], timeout=timeout + 10)
        first, _, rest = out.stdout.partition("\n")
        try:
            return int(first), rest
        except ValueError:
            return 0, out.stdout + out.stderr

    def exec_in_netns(self, argv: list[str], timeout: float = 30.0
                      ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv],
                              capture_output=True, text=True, timeout=timeout)

    # ---- cleanup -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        with contextlib.suppress(Exception):
            self.kill()
        # The agent's Podman service may still finish calls (a stop with a long grace):
        # it is ours (PID file), end it now so the cleanup below does not race it.
        pid = self._service_pid()
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_service_gone(5.0)
        if (self.state / "storage.conf").exists():
            with contextlib.suppress(Exception):
                self.podman_local("rm", "-a", "-f", "-t", "0")
        # Anything still running in this host's cgroup (conmon, container processes)
        # is ours: end it by PID.
        _kill_cgroup(self.cgroup_parent)
        for name in list(netns.listnetns()):
            if name.startswith(self.netns_prefix):
                with contextlib.suppress(Exception):
                    netns.remove(name)
        with contextlib.suppress(Exception), IPRoute() as ip:
            found = ip.link_lookup(ifname=self.veth)
            if found:
                ip.link("del", index=found[0])
        with contextlib.suppress(Exception):
            if self.netns in netns.listnetns():
                netns.remove(self.netns)
        _unmount_under(self.state)
        _remove_cgroups(self.cgroup_parent)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> AgentHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ip(value: int) -> str:
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _unmount_under(root: Path) -> None:
    prefix = str(root) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(prefix):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _cgroup_pids(parent: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in ("memory", "pids", "freezer"):
        top = CGROUP_ROOT / hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        for d, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError), open(Path(d) / "cgroup.procs") as f:
                    pids.update(int(x) for x in f.read().split())
    return pids


def _kill_cgroup(parent: str) -> None:
    for _ in range(5):
        pids = _cgroup_pids(parent)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)


def _remove_cgroups(parent: str) -> None:
    """Remove the host's cgroup folders (deepest first) in every v1 hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
