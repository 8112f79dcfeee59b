"""The node's side of the flat pod network, in the agent's network namespace.

- the bridge (corral0) holding .1 of the node's pod CIDR, up;
- IPv4 forwarding on;
- host-gw routes: every other node's pod CIDR via that node's InternalIP, kept
  in step with the Node list (`desired_routes` is the pure part; routes the
  agent owns carry their own routing protocol number, so stale ones are found
  and removed without touching anyone else's);
- one iptables rule of the agent's own, in its own chain: MASQUERADE for pod
  traffic leaving the cluster CIDR (pod to pod stays un-NATed).

Threads model: `setup` once at start; `sync_routes` from the Node informer's
thread. Netlink through pyroute2; iptables through its CLI (-w waits for the
xtables lock, so the netproxy of the same host can run at the same time).
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nodeagent.ipam import gateway

log = logging.getLogger(__name__)

# Routing protocol number marking the agent's routes (rtnetlink allows 0-255;
# values above RTPROT_STATIC=4 are free for daemons; 0x43 is not assigned).
RTPROT_CORRAL = 0x43
CHAIN = "CORRAL-AGENT-MASQ"


class HostNetworkError(Exception):
    pass


@dataclass(frozen=True)
class NodeRoute:
    node: str
    pod_cidr: str
    via: str


def desired_routes(self_name: str, nodes: Iterable[tuple[str, str, str]],
                   cluster_cidr: str) -> dict[str, NodeRoute]:
    """pod CIDR -> route, for every other node with a CIDR inside the cluster CIDR
    and an InternalIP. `nodes` holds (name, pod CIDR, InternalIP)."""
    cluster = ipaddress.IPv4Network(cluster_cidr)
    out: dict[str, NodeRoute] = {}
    for name, cidr, ip in sorted(nodes):
        if name == self_name or not cidr or not ip:
            continue
        try:
            net = ipaddress.IPv4Network(cidr)
            ipaddress.IPv4Address(ip)
        except ValueError:
            log.warning("node %s: bad podCIDR %r or address %r; no route", name, cidr, ip)
            continue
        if not net.subnet_of(cluster):
            continue
        out[str(net)] = NodeRoute(name, str(net), ip)
    return out


def masquerade_rules(cluster_cidr: str) -> list[list[str]]:
    """The rules of the agent's chain (iptables arguments after `-A CHAIN`)."""
    return [
        ["-s", cluster_cidr, "!", "-d", cluster_cidr, "-m", "comment", "--comment",
         "corral-agent: pods leaving the cluster network", "-j", "MASQUERADE"],
    ]


class HostNetwork:
    def __init__(self, *, bridge: str, cluster_cidr: str, masquerade: bool = True,
                 iptables: str = "iptables") -> None:
        self.bridge = bridge
        self.cluster_cidr = cluster_cidr
        self.masquerade = masquerade
        self.iptables = iptables

    # ---- bridge and forwarding ------------------------------------------------------
    def setup(self, pod_cidr: str) -> None:
        net = ipaddress.IPv4Network(pod_cidr)
        gw = str(gateway(net))
        try:
            with IPRoute() as ip:
                found = ip.link_lookup(ifname=self.bridge)
                if not found:
                    ip.link("add", ifname=self.bridge, kind="bridge")
                    found = ip.link_lookup(ifname=self.bridge)
                index = found[0]
                have = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                        for a in ip.get_addr(index=index, family=2)]
                for addr, plen in have:
                    if (addr, plen) != (gw, net.prefixlen):
                        ip.addr("del", index=index, address=addr, prefixlen=plen)
                if (gw, net.prefixlen) not in have:
                    ip.addr("add", index=index, address=gw, prefixlen=net.prefixlen)
                ip.link("set", index=index, state="up")
        except NetlinkError as err:
            raise HostNetworkError(f"bridge {self.bridge}: {err}") from None
        self._sysctl("net/ipv4/ip_forward", "1")
        if self.masquerade:
            self.ensure_masquerade()

    @staticmethod
    def _sysctl(path: str, value: str) -> None:
        try:
            with open(f"/proc/sys/{path}", "w") as f:
                f.write(value)
        except OSError as err:
            raise HostNetworkError(f"sysctl {path.replace('/', '.')}={value}: {err}") from None

    # ---- routes ------------------------------------------------------------------------
    def current_routes(self) -> dict[str, str]:
        """pod CIDR -> gateway of the routes this agent made."""
        out: dict[str, str] = {}
        with IPRoute() as ip:
            for r in ip.get_routes(family=2, proto=RTPROT_CORRAL):
                if r["proto"] != RTPROT_CORRAL:
                    continue
                dst = f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                out[dst] = r.get_attr("RTA_GATEWAY") or ""
        return out

    def sync_routes(self, desired: dict[str, NodeRoute]) -> tuple[int, int]:
        """Add/replace missing or changed routes, delete stale ones; (changed, deleted)."""
        current = self.current_routes()
        changed = deleted = 0
        with IPRoute() as ip:
            for cidr, route in desired.items():
                if current.get(cidr) == route.via:
                    continue
                try:
                    ip.route("replace", dst=cidr, gateway=route.via, proto=RTPROT_CORRAL)
                    changed += 1
                    log.info("route %s via %s (node %s)", cidr, route.via, route.node)
                except NetlinkError as err:
                    log.warning("route %s via %s (node %s): %s", cidr, route.via, route.node,
                                err)
            for cidr, via in current.items():
                if cidr in desired:
                    continue
                try:
                    ip.route("del", dst=cidr, gateway=via or None, proto=RTPROT_CORRAL)
                    deleted += 1
                    log.info("removed route %s via %s (node gone)", cidr, via)
                except NetlinkError as err:
                    log.warning("remove route %s: %s", cidr, err)
        return changed, deleted

    # ---- masquerade ----------------------------------------------------------------------
    def _ipt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.iptables, "-w", "5", "-t", "nat", *args],
                              capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise HostNetworkError(f"iptables -t nat {' '.join(args)}: "
                                   f"{proc.stderr.strip() or proc.returncode}")
        return proc

    def ensure_masquerade(self) -> None:
        """Own chain, jumped to from POSTROUTING; rewritten whole (it is small)."""
        if self._ipt("-n", "-L", CHAIN, check=False).returncode != 0:
            self._ipt("-N", CHAIN)
        self._ipt("-F", CHAIN)
        for rule in masquerade_rules(self.cluster_cidr):
            self._ipt("-A", CHAIN, *rule)
        jump = ["POSTROUTING", "-m", "comment", "--comment", "corral-agent", "-j", CHAIN]
        if self._ipt("-C", *jump, check=False).returncode != 0:
            self._ipt("-A", *jump)

    def remove_masquerade(self) -> None:
        jump = ["POSTROUTING", "-m", "comment", "--comment", "corral-agent", "-j", CHAIN]
        while self._ipt("-C", *jump, check=False).returncode == 0:
            self._ipt("-D", *jump)
        self._ipt("-F", CHAIN, check=False)
        self._ipt("-X", CHAIN, check=False)
