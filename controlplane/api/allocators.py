"""ClusterIPs, NodePorts and pod CIDRs: picked here, made unique by the store.

An allocation is a unique token on the object's record (see indexes.py). Every
replica may allocate at once without coordination: each picks a free value
from its local (stale) view, and the store's unique-token check, applied in
Raft order, lets exactly one object hold a token. The loser's write fails with
UniqueViolation and the handler picks again (`Allocation.picked` says which
tokens were ours to re-pick) or, for a value the user asked for, refuses it
naming the field.

Kept on update: an update that leaves clusterIP, a nodePort or podCIDR empty
keeps the stored value (Kubernetes' patchAllocatedValues), so re-applying a
manifest or restarting an agent never changes them.

Threading: stateless apart from a random generator; any thread.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from controlplane.api import indexes
from controlplane.api.settings import DNS_SERVICE, ApiSettings
from controlplane.store.base import Store
from corral.errors import FailedPrecondition, Invalid

# How many random picks before scanning the range in order.
_RANDOM_TRIES = 64


@dataclass
class Allocation:
    # Tokens chosen here (may be re-picked after a collision), with their field paths.
    picked: dict[str, str] = field(default_factory=dict)
    # Tokens the user asked for, with their field paths.
    requested: dict[str, str] = field(default_factory=dict)

    def path_of(self, token: str) -> str:
        return self.picked.get(token) or self.requested.get(token) or ""


class Allocator:
    def __init__(self, store: Store, settings: ApiSettings) -> None:
        self._store = store
        self._settings = settings
        self._rand = random.Random()

    def _taken(self, kind: str, exclude: tuple[str, str]) -> set[str]:
        """Tokens held by other objects of `kind`, from this replica's local view."""
        records, _ = self._store.list(kind, None, linearizable=False)
        taken: set[str] = set()
        for r in records:
            if (r.namespace, r.name) != exclude:
                taken.update(r.unique)
        return taken

    # ---- Services ------------------------------------------------------------------
    def service(self, svc: Any, old: Any | None, avoid: set[str] | None = None) -> Allocation:
        """Fill svc's clusterIP and nodePorts; `avoid` holds tokens that just collided."""
        alloc = Allocation()
        spec = svc.spec
        key = (svc.metadata.namespace, svc.metadata.name)
        taken = self._taken("Service", key) | (avoid or set())
        s = self._settings
        is_dns = key == DNS_SERVICE
        if spec.type == "ExternalName" or spec.cluster_ip == "None":
            pass
        elif spec.cluster_ip:
            token = indexes.cluster_ip_token(spec.cluster_ip)
            try:
                ip = ipaddress.IPv4Address(spec.cluster_ip)
            except ValueError:
                return alloc  # validation names the field
            if ip == s.dns_service_ip and not is_dns:
                raise Invalid(f"{ip} is reserved for the cluster DNS Service "
                              f"{DNS_SERVICE[0]}/{DNS_SERVICE[1]}", "spec.clusterIP")
            if old is None or old.spec.cluster_ip != spec.cluster_ip:
                if token in taken:
                    raise Invalid(f"failed to allocate IP {ip}: provided IP is already "
                                  f"allocated", "spec.clusterIP")
                alloc.requested[token] = "spec.clusterIP"
        elif old is not None and old.spec.cluster_ip and old.spec.cluster_ip != "None":
            spec.cluster_ip = old.spec.cluster_ip
        else:
            if is_dns and indexes.cluster_ip_token(str(s.dns_service_ip)) not in taken:
                ip_text = str(s.dns_service_ip)
            else:
                ip_text = self._pick_ip(taken)
            spec.cluster_ip = ip_text
            alloc.picked[indexes.cluster_ip_token(ip_text)] = "spec.clusterIP"
        if spec.cluster_ip and spec.cluster_ip != "None":
            del spec.cluster_ips[:]
            spec.cluster_ips.append(spec.cluster_ip)
        if spec.type in ("NodePort", "LoadBalancer"):
            self._node_ports(svc, old, taken, alloc)
        else:
            for p in spec.ports:
                p.node_port = 0
        return alloc

    def _pick_ip(self, taken: set[str]) -> str:
        net = self._settings.service_cidr
        reserved = {net.network_address, net.broadcast_address, self._settings.dns_service_ip}
        first, size = int(net.network_address), net.num_addresses

        def free(ip: ipaddress.IPv4Address) -> bool:
            return ip not in reserved and indexes.cluster_ip_token(str(ip)) not in taken

        for _ in range(_RANDOM_TRIES):
            ip = ipaddress.IPv4Address(first + self._rand.randrange(size))
            if free(ip):
                return str(ip)
        for offset in range(size):
            ip = ipaddress.IPv4Address(first + offset)
            if free(ip):
                return str(ip)
        raise FailedPrecondition(f"no free ClusterIP left in the service CIDR {net}")

    def _node_ports(self, svc: Any, old: Any | None, taken: set[str],
                    alloc: Allocation) -> None:
        lo, hi = self._settings.node_port_range
        old_ports: dict[tuple[str, str], int] = {}
        if old is not None:
            for p in old.spec.ports:
                if p.node_port:
                    old_ports[("name:" + p.name, p.protocol)] = p.node_port
                    old_ports.setdefault((f"port:{p.port}", p.protocol), p.node_port)
        mine: set[str] = set()
        for i, p in enumerate(svc.spec.ports):
            path = f"spec.ports[{i}].nodePort"
            proto = p.protocol or "TCP"
            if p.node_port:
                token = indexes.node_port_token(proto, p.node_port)
                was_ours = p.node_port in old_ports.values()
                if token in taken and not was_ours:
                    raise Invalid(f"provided port {p.node_port}/{proto} is already allocated",
                                  path)
                if not was_ours:
                    alloc.requested[token] = path
                mine.add(token)
                continue
            kept = old_ports.get(("name:" + p.name, proto)) if p.name else None
            kept = kept or old_ports.get((f"port:{p.port}", proto))
            if not kept and old is not None and len(old.spec.ports) == len(svc.spec.ports) == 1:
                # One port renumbered: it is still the same port, so keep its nodePort.
                kept = old_ports.get(("name:" + old.spec.ports[0].name, proto))
            if kept and indexes.node_port_token(proto, kept) not in mine:
                p.node_port = kept
                mine.add(indexes.node_port_token(proto, kept))
                continue
            port = self._pick_port(proto, taken | mine, lo, hi)
            p.node_port = port
            token = indexes.node_port_token(proto, port)
            alloc.picked[token] = path
            mine.add(token)

    def _pick_port(self, proto: str, taken: set[str], lo: int, hi: int) -> int:
        for _ in range(_RANDOM_TRIES):
            port = self._rand.randint(lo, hi)
            if indexes.node_port_token(proto, port) not in taken:
                return port
        for port in range(lo, hi + 1):
            if indexes.node_port_token(proto, port) not in taken:
                return port
        raise FailedPrecondition(f"no free {proto} node port left in {lo}-{hi}")

    # ---- Nodes -----------------------------------------------------------------------
    def node(self, node: Any, old: Any | None, avoid: set[str] | None = None) -> Allocation:
        alloc = Allocation()
        spec = node.spec
        if not spec.pod_cidr and old is not None and old.spec.pod_cidr:
            spec.pod_cidr = old.spec.pod_cidr
        elif spec.pod_cidr:
            if old is None or old.spec.pod_cidr != spec.pod_cidr:
                token = indexes.pod_cidr_token(spec.pod_cidr)
                if token in self._taken("Node", ("", node.metadata.name)):
                    raise Invalid(f"{spec.pod_cidr} is already allocated to another node",
                                  "spec.podCIDR")
                alloc.requested[token] = "spec.podCIDR"
        else:
            taken = self._taken("Node", ("", node.metadata.name)) | (avoid or set())
            # After a collision, concurrent registrations would all race for the
            # same next-lowest slice again: spread the retries instead.
            cidr = self._pick_cidr(taken, spread=bool(avoid))
            spec.pod_cidr = cidr
            alloc.picked[indexes.pod_cidr_token(cidr)] = "spec.podCIDR"
        del spec.pod_cidrs[:]
        spec.pod_cidrs.append(spec.pod_cidr)
        return alloc

    def _pick_cidr(self, taken: set[str], spread: bool = False) -> str:
        """The lowest free slice, so addresses read in registration order; with
        `spread`, a random one of the lowest free slices."""
        s = self._settings
        held = []
        for token in taken:
            if token.startswith("podCIDR/"):
                try:
                    held.append(ipaddress.IPv4Network(token.removeprefix("podCIDR/")))
                except ValueError:
                    continue
        free: list[str] = []
        for net in s.cluster_cidr.subnets(new_prefix=s.node_cidr_prefix):
            if not any(net.overlaps(h) for h in held):
                if not spread:
                    return str(net)
                free.append(str(net))
                if len(free) >= 64:
                    break
        if free:
            return self._rand.choice(free)
        raise FailedPrecondition(f"no free /{s.node_cidr_prefix} left in the cluster CIDR "
                                 f"{s.cluster_cidr} for a new node")

    def allocate(self, kind: str, obj: Any, old: Any | None,
                 avoid: set[str] | None = None) -> Allocation:
        if kind == "Service":
            return self.service(obj, old, avoid)
        if kind == "Node":
            return self.node(obj, old, avoid)
        return Allocation()
