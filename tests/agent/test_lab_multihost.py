"""The flat pod network across hosts, in D's lab (hosts are network namespaces).

A pod on host 1 reaches a pod on host 3 by its pod IP through the host-gw routes
the agents keep in step with the Node list, and the server sees the client pod's
own address (no NAT between pods). Logs and exec go through the lab's control
plane to the agents over the lab network.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral import kinds
from corral.client import Client
from corral.lab import Lab
from tests.agent import podutil as pu
from tests.labfixture import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.integration]

ECHO_IP = ("mkdir -p /www/cgi-bin; "
           "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' "
           "> /www/cgi-bin/ip; chmod +x /www/cgi-bin/ip; exec httpd -f -p 8080 -h /www")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(hosts=3, control_plane=3, components=("controlplane", "agent"),
                     timeout=120, show_logs=True) as lab:
        yield lab


def _client(lab: Lab) -> Client:
    return lab.client()  # type: ignore[no-any-return]


def test_pod_to_pod_across_hosts_without_nat(lab: Lab) -> None:
    with _client(lab) as c:
        nodes, _ = c.list("Node")
        names = sorted(n.metadata.name for n in nodes)
        assert len(names) == 3
        ns = kinds.by_kind("Namespace").new()
        ns.metadata.name = "multi"
        c.create(ns)
        first, last = names[0], names[-1]
        c.create(pu.pod("server", "multi", last, pu.container("main", "sh", "-c", ECHO_IP),
                        grace=0))
        c.create(pu.pod("client", "multi", first, pu.container("main", "sleep", "1000"),
                        grace=0))
        server = pu.wait_pod(c, "multi", "server", pu.ready, "Ready", timeout=90)
        client = pu.wait_pod(c, "multi", "client", pu.ready, "Ready", timeout=90)
        assert server.status.host_ip != client.status.host_ip
        node_cidrs = {n.metadata.name: n.spec.pod_cidr for n in c.list("Node")[0]}
        assert node_cidrs[first] != node_cidrs[last]

        def fetch() -> bytes:
            out, _err, code = c.exec("client", "multi", [
                "wget", "-q", "-O", "-", f"http://{server.status.pod_ip}:8080/cgi-bin/ip"])
            return out if code == 0 else b""
        seen = pu.wait_for("server answered across hosts", fetch, timeout=30)
        # busybox httpd listens dual-stack: the peer is an IPv4-mapped IPv6 address.
        peer = seen.decode().strip().strip("[]").removeprefix("::ffff:")
        assert peer == client.status.pod_ip  # no NAT between pods
        logs = b"".join(c.logs("server", "multi"))
        assert isinstance(logs, bytes)


def test_power_loss_of_a_host_and_back(lab: Lab) -> None:
    """`corral lab kill` SIGKILLs every process of the host (agent, its Podman,
    conmon, the containers). Started again, the agent finds its Node, its pod CIDR
    and its pods' IPs, and brings the pod back (a restart, as after a reboot)."""
    with _client(lab) as c:
        nodes = sorted(n.metadata.name for n in c.list("Node")[0])
        victim = nodes[1]
        ns = kinds.by_kind("Namespace").new()
        ns.metadata.name = "power"
        c.create(ns)
        c.create(pu.pod("survivor", "power", victim, pu.container("main", "sleep", "100000"),
                        grace=0))
        before = pu.wait_pod(c, "power", "survivor", pu.ready, "Ready", timeout=90)
        cidr = c.get("Node", victim).spec.pod_cidr
        lab.kill(victim)
        lab.start(victim, wait=True)
        after = pu.wait_pod(c, "power", "survivor",
                            lambda p: pu.ready(p) and pu.cstatus(p, "main").container_id
                            != pu.cstatus(before, "main").container_id,
                            "running again after the power loss", timeout=120)
        assert c.get("Node", victim).spec.pod_cidr == cidr
        assert after.status.pod_ip == before.status.pod_ip
        assert pu.cstatus(after, "main").restart_count >= 1
