"""A Service with one web pod per lab host, for lab tests and the propagation bench.

Each web pod is busybox httpd answering its own pod name, with a readiness probe
on /index.html every second, so removing that file inside the pod turns it
NotReady within about a second and writing it back turns it Ready again.
Helpers read a lab host's NAT rules and run commands in pods or hosts.

Threads: none; call from the test's thread.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from corral.client import Client
from corral.errors import NotFound
from corral.lab import Lab
from corral.v1 import core_pb2

IMAGE = "localhost/busybox:latest"
WEB = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def namespace(name: str) -> core_pb2.Namespace:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    return ns


def web_pod(name: str, ns: str, node: str, app: str = "web") -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = ns
    p.metadata.labels["app"] = app
    p.spec.node_name = node
    p.spec.termination_grace_period_seconds = 0
    c = p.spec.containers.add(name="httpd", image=IMAGE, image_pull_policy="Never",
                              command=["sh", "-c", WEB])
    c.ports.add(name="http", container_port=8080)
    c.readiness_probe.http_get.path = "/index.html"
    c.readiness_probe.http_get.port.string_value = "http"
    c.readiness_probe.period_seconds = 1
    c.readiness_probe.failure_threshold = 1
    return p


def client_pod(name: str, ns: str, node: str) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = ns
    p.spec.node_name = node
    p.spec.termination_grace_period_seconds = 0
    p.spec.containers.add(name="c", image=IMAGE, image_pull_policy="Never",
                          command=["sleep", "100000"])
    return p


def web_service(name: str, ns: str, *, type: str = "NodePort",
                app: str = "web") -> core_pb2.Service:
    s = core_pb2.Service(api_version="v1", kind="Service")
    s.metadata.name = name
    s.metadata.namespace = ns
    s.spec.type = type
    s.spec.selector["app"] = app
    p = s.spec.ports.add(name="http", port=80)
    p.target_port.string_value = "http"
    return s


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def ready_ips(client: Client, name: str, ns: str) -> tuple[set[str], set[str]]:
    """(ready, not ready) addresses of a Service's Endpoints."""
    try:
        ep = client.get("Endpoints", name, ns)
    except NotFound:
        return set(), set()
    ready = {a.ip for s in ep.subsets for a in s.addresses}
    not_ready = {a.ip for s in ep.subsets for a in s.not_ready_addresses}
    return ready, not_ready


def pod_ips(client: Client, ns: str, names: Sequence[str]) -> dict[str, str]:
    return {n: client.get("Pod", n, ns).status.pod_ip for n in names}


def host_run(lab: Lab, host: str, argv: Sequence[str], timeout: float = 30) -> str:
    cmd, env = lab.exec_argv(host, list(argv))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{host}: {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def nat_rules(lab: Lab, host: str) -> str:
    return host_run(lab, host, ["iptables-save", "-t", "nat"])


def saved_rules(lab: Lab, host: str) -> str:
    """The host's whole iptables-save, without timestamps and counters."""
    out = host_run(lab, host, ["iptables-save"])
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def dnat_targets(lab: Lab, host: str) -> set[str]:
    """Endpoint IPs the host's proxy currently DNATs to."""
    out = set()
    for line in nat_rules(lab, host).splitlines():
        if line.startswith("-A CORRAL-SEP-") and "--to-destination" in line:
            out.add(line.rsplit("--to-destination ", 1)[1].split(":")[0])
    return out


def pod_sh(client: Client, pod: str, ns: str, script: str, timeout: float = 60) -> str:
    out, err, code = client.exec(pod, ns, ["sh", "-c", script], timeout=timeout)
    if code != 0:
        raise AssertionError(f"{pod}: {script}: exit {code}: {err.decode().strip()}")
    return out.decode()


def answers(client: Client, pod: str, ns: str, url: str, n: int) -> list[str]:
    """What `n` GETs of `url` from `pod` answered (failed calls answer "")."""
    script = (f"for i in $(seq 1 {n}); do wget -q -O - {url} 2>/dev/null || echo; done")
    return [line.strip() for line in pod_sh(client, pod, ns, script).splitlines()]
