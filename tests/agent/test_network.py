"""The node's network side: routes follow the Node list, traffic leaving the cluster
network is masqueraded (and only that), the bridge and the pod's veth."""

from __future__ import annotations

import socket
import threading

import pytest
from pyroute2 import IPRoute

from corral import kinds
from corral.errors import NotFound
from nodeagent import netns
from nodeagent.hostnet import CHAIN, RTPROT_CORRAL
from nodeagent.podnet import host_veth_name
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def _routes(host: AgentHost) -> dict[str, str]:
    with IPRoute(use_socket=netns.socket_in(host.netns)) as ip:
        return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_GATEWAY")
                for r in ip.get_routes(family=2) if r["proto"] == RTPROT_CORRAL}


def test_routes_follow_the_node_list(host: AgentHost) -> None:
    c = host.client
    node = kinds.by_kind("Node").new()
    node.metadata.name = f"peer-{host.tag}"
    node.spec.pod_cidr = "10.244.200.0/24"
    # The peer's address must be on-link for a host-gw route: the far end of the veth.
    node.status.addresses.add(type="InternalIP", address=host.outer_ip)
    created = c.create(node)
    c.update_status(created)
    try:
        pu.wait_for("route to the peer's pod CIDR",
                    lambda: _routes(host).get("10.244.200.0/24") == host.outer_ip, timeout=20)
    finally:
        try:
            c.delete("Node", node.metadata.name)
        except NotFound:
            pass
    pu.wait_for("route removed with the node",
                lambda: "10.244.200.0/24" not in _routes(host), timeout=20)
    own = c.get("Node", host.node_name).spec.pod_cidr
    assert own not in _routes(host)  # never a route to ourselves


def test_traffic_leaving_the_cluster_is_masqueraded(host: AgentHost, ns: str) -> None:
    """A pod connects to a server outside the cluster network (the test, behind the
    veth): the server sees the node's address, not the pod's."""
    srv = socket.socket()
    srv.bind((host.outer_ip, 0))
    srv.listen(1)
    srv.settimeout(30)
    port = srv.getsockname()[1]
    peers: list[str] = []

    def accept() -> None:
        try:
            conn, addr = srv.accept()
            peers.append(addr[0])
            conn.sendall(b"hi\n")
            conn.close()
        except OSError:
            pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        c = host.client
        c.create(pu.pod("out", ns, host.node_name, pu.container("main", "sleep", "1000"),
                        grace=0))
        pu.wait_pod(c, ns, "out", pu.ready, "Ready")
        out, err, code = c.exec("out", ns, ["sh", "-c",
                                            f"echo | nc {host.outer_ip} {port}"], timeout=30)
        t.join(10)
        assert code == 0, err
        assert out == b"hi\n"
        assert peers == [host.node_ip]
    finally:
        srv.close()
    rules = host.exec_in_netns(["iptables", "-w", "-t", "nat", "-S", CHAIN]).stdout
    assert "-s 10.244.0.0/16 ! -d 10.244.0.0/16" in rules and "MASQUERADE" in rules


def test_bridge_veth_and_pod_routes(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("net", ns, host.node_name, pu.container("main", "sleep", "1000"), grace=0))
    p = pu.wait_pod(c, ns, "net", pu.ready, "Ready")
    cidr = c.get("Node", host.node_name).spec.pod_cidr
    gateway = cidr.rsplit(".", 1)[0] + ".1"
    veth = host_veth_name(p.metadata.uid)
    with IPRoute(use_socket=netns.socket_in(host.netns)) as ip:
        bridge = ip.link_lookup(ifname="corral0")[0]
        addrs = [a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=bridge, family=2)]
        assert addrs == [gateway]
        port = ip.link("get", index=ip.link_lookup(ifname=veth)[0])[0]
        assert port.get_attr("IFLA_MASTER") == bridge
        ports = {x.get_attr("IFLA_IFNAME"): x.get_attr("IFLA_PROTINFO")
                 for x in ip.brport("dump")}
        assert ports[veth].get_attr("IFLA_BRPORT_MODE") == 1  # hairpin
    out, _, _ = c.exec("net", ns, ["ip", "route"])
    text = out.decode()
    assert f"default via {gateway}" in text
    assert host.exec_in_netns(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
