"""Network namespaces of a test's own: a node with pods on a bridge, and a
machine outside the cluster network, for kernel and traffic tests.

    with Node() as node:               # "host" netns, bridge corral0 10.244.1.1/24
        p1 = node.add_pod("10.244.1.10")
        node.start_http(p1, "p1")      # busybox httpd answering "p1" on :8080
        node.run(node.host, "ip", "route")

Every namespace name carries a random per-test prefix; leaving the block kills
the processes started here (by PID) and deletes exactly those namespaces
(which removes their links), also when the test failed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0',int(sys.argv[1])))\n"
    "while True:\n"
    "    d,a=s.recvfrom(2048)\n"
    "    s.sendto(sys.argv[2].encode()+b' '+a[0].encode(),a)\n"
)
UDP_ASK = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "s.settimeout(2)\n"
    "s.sendto(b'hi',(sys.argv[1],int(sys.argv[2])))\n"
    "print(s.recvfrom(2048)[0].decode())\n"
)


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc


class Node:
    def __init__(self, host_ip: str = "10.250.0.11", outside_ip: str = "10.250.0.99",
                 bridge_cidr: str = "10.244.1.1/24") -> None:
        self.prefix = f"gnp{secrets.token_hex(3)}"
        self.host = f"{self.prefix}-host"
        self.outside = f"{self.prefix}-out"
        self.host_ip = host_ip
        self.outside_ip = outside_ip
        self.bridge_cidr = bridge_cidr
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.pods: dict[str, str] = {}  # ip -> netns
        self.tmp = Path(tempfile.mkdtemp(prefix="gnp-"))

    # ---- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> Node:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _build(self) -> None:
        self._netns(self.host)
        self._netns(self.outside)
        sh("ip", "netns", "exec", self.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", self.host, "link", "add", "corral0", "type", "bridge")
        sh("ip", "-n", self.host, "addr", "add", self.bridge_cidr, "dev", "corral0")
        sh("ip", "-n", self.host, "link", "set", "corral0", "up")
        sh("ip", "-n", self.host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", self.outside)
        sh("ip", "-n", self.host, "addr", "add", f"{self.host_ip}/24", "dev", "eth0")
        sh("ip", "-n", self.host, "link", "set", "eth0", "up")
        sh("ip", "-n", self.outside, "addr", "add", f"{self.outside_ip}/24", "dev", "eth0")
        sh("ip", "-n", self.outside, "link", "set", "eth0", "up")
        # Host-originated traffic to a VIP needs a route before OUTPUT's DNAT runs.
        sh("ip", "-n", self.host, "route", "add", "default", "via", self.outside_ip)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- pods -----------------------------------------------------------------------
    def add_pod(self, ip: str) -> str:
        n = len(self.pods) + 1
        ns = self._netns(f"{self.prefix}-p{n}")
        veth = f"vp{n}"
        sh("ip", "-n", self.host, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", self.host, "link", "set", veth, "master", "corral0")
        # As the agent does: a pod reaching itself through a VIP is bridged back
        # out of the port it came in on.
        sh("ip", "-n", self.host, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        sh("ip", "-n", self.host, "link", "set", veth, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        gw = self.bridge_cidr.split("/")[0]
        sh("ip", "-n", ns, "route", "add", "default", "via", gw)
        self.pods[ip] = ns
        return ns

    def start(self, ns: str, *cmd: str) -> subprocess.Popen[Any]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def start_http(self, ns: str, answer: str, port: int = 8080) -> None:
        root = self.tmp / f"www-{ns}-{port}"
        root.mkdir()
        (root / "index.html").write_text(answer + "\n")
        self.start(ns, BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root))
        self.wait_port(ns, port)

    def start_udp_echo(self, ns: str, answer: str, port: int = 5353) -> None:
        self.start(ns, sys.executable, "-c", UDP_ECHO, str(port), answer)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = sh("ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}",
                     check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"UDP echo on {ns}:{port} did not start")

    def wait_port(self, ns: str, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = sh("ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}",
                     check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {ns}:{port}")

    # ---- clients --------------------------------------------------------------------
    def get(self, ns: str, url: str, timeout: int = 2) -> tuple[bool, str]:
        """(ok, body or error) of one HTTP GET from `ns` with busybox wget.

        Debian's busybox-static 1.35 wget segfaults when given -T: the deadline is
        coreutils' timeout instead."""
        proc = sh("ip", "netns", "exec", ns, "timeout", str(timeout), BUSYBOX, "wget", "-q",
                  "-O", "-", url, check=False, timeout=timeout + 10)
        if proc.returncode == 0:
            return True, proc.stdout.strip()
        return False, proc.stderr.strip()

    def udp(self, ns: str, ip: str, port: int) -> str:
        proc = sh("ip", "netns", "exec", ns, sys.executable, "-c", UDP_ASK, ip, str(port),
                  check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def save(self) -> str:
        """iptables-save of the host without its timestamp comments."""
        out = sh("ip", "netns", "exec", self.host, "iptables-save").stdout
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))
