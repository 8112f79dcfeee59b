"""A pod's network namespace: netns, veth into the bridge, address, default route.

All through pyroute2 (netlink), never `ip`. `setup` is idempotent: run again on
a half-made pod (agent crash mid-way) it finishes the job; `teardown` removes
what exists and ignores what does not. Names derive from the pod uid, so an
agent that restarts finds its pods' namespaces and links again:
netns `<netns_prefix><uid>`, host-side veth `vc<11 hex of sha1(uid)>` (15
characters is the kernel's limit), pod side `eth0`.

Threads model: called from pod workers (several at once). Each call opens its
own netlink sockets; the IPAM has its own lock.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nodeagent import netns
from nodeagent.ipam import Ipam, gateway

log = logging.getLogger(__name__)


class NetworkError(Exception):
    pass


@dataclass(frozen=True)
class PodNet:
    netns: str
    netns_path: str
    ip: str


def host_veth_name(uid: str) -> str:
    return "vc" + hashlib.sha1(uid.encode()).hexdigest()[:11]


class PodNetworks:
    def __init__(self, *, ipam: Ipam, bridge: str, netns_prefix: str) -> None:
        self.ipam = ipam
        self.bridge = bridge
        self.prefix = netns_prefix

    def netns_name(self, uid: str) -> str:
        return f"{self.prefix}{uid}"

    def netns_path(self, uid: str) -> str:
        return netns.path(self.netns_name(uid))

    def existing_uids(self) -> set[str]:
        """Pod uids that have a namespace of this agent (by prefix)."""
        return {n[len(self.prefix):] for n in netns.names() if n.startswith(self.prefix)}

    def lookup(self, uid: str) -> PodNet | None:
        ip = self.ipam.lookup(uid)
        if not ip or not os.path.exists(self.netns_path(uid)):
            return None
        return PodNet(self.netns_name(uid), self.netns_path(uid), ip)

    def setup(self, uid: str) -> PodNet:
        cidr = self.ipam.cidr
        if cidr is None:
            raise NetworkError("the node has no pod CIDR yet")
        ip = self.ipam.allocate(uid)
        name = self.netns_name(uid)
        try:
            if not netns.exists(name):
                netns.create(name)
            self._link(uid, name, ip, cidr)
        except (NetlinkError, OSError) as err:
            raise NetworkError(f"pod network {name}: {err}") from None
        return PodNet(name, self.netns_path(uid), ip)

    def _link(self, uid: str, name: str, ip: str, cidr: ipaddress.IPv4Network) -> None:
        veth = host_veth_name(uid)
        with IPRoute() as host:
            bridges = host.link_lookup(ifname=self.bridge)
            if not bridges:
                raise NetworkError(f"bridge {self.bridge} does not exist")
            existing = host.link_lookup(ifname=veth)
            if not existing:
                with IPRoute(use_socket=netns.socket_in(name)) as pod:
                    # A pod side left without its host side (crash mid-way) goes first.
                    stale = pod.link_lookup(ifname="eth0")
                    if stale:
                        pod.link("del", index=stale[0])
                host.link("add", ifname=veth, kind="veth",
                          peer={"ifname": "eth0", "net_ns_fd": self.netns_path(uid)})
                existing = host.link_lookup(ifname=veth)
            index = existing[0]
            host.link("set", index=index, master=bridges[0], state="up")
            try:
                # Hairpin lets a pod reach itself through a Service VIP.
                host.brport("set", index=index, mode=1)
            except NetlinkError as err:
                log.debug("hairpin on %s: %s", veth, err)
        with IPRoute(use_socket=netns.socket_in(name)) as pod:
            lo = pod.link_lookup(ifname="lo")
            if lo:
                pod.link("set", index=lo[0], state="up")
            eth = pod.link_lookup(ifname="eth0")
            if not eth:
                raise NetworkError(f"eth0 missing in {name}")
            have = {a.get_attr("IFA_ADDRESS") for a in pod.get_addr(index=eth[0], family=2)}
            if ip not in have:
                for old in have:
                    pod.addr("del", index=eth[0], address=old, prefixlen=cidr.prefixlen)
                pod.addr("add", index=eth[0], address=ip, prefixlen=cidr.prefixlen)
            pod.link("set", index=eth[0], state="up")
            pod.route("replace", dst="0.0.0.0/0", gateway=str(gateway(cidr)), oif=eth[0])

    def teardown(self, uid: str) -> None:
        """Remove the pod's link and namespace, then free its address."""
        veth = host_veth_name(uid)
        name = self.netns_name(uid)
        try:
            with IPRoute() as host:
                found = host.link_lookup(ifname=veth)
                if found:
                    host.link("del", index=found[0])
        except NetlinkError as err:
            if err.code != errno.ENODEV:
                raise NetworkError(f"remove {veth}: {err}") from None
        try:
            if netns.exists(name):
                netns.remove(name)
        except OSError as err:
            raise NetworkError(f"remove netns {name}: {err}") from None
        released = self.ipam.release(uid)
        if released:
            log.debug("released %s of pod %s", ", ".join(released), uid)
