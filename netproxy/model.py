"""What the proxy needs to know of a Service and its Endpoints, as immutable values.

Pure: `service_state(svc, endpoints)` turns the API's messages into a
`ServiceState` that rendering (rules.py) and the change tracker compare by
value; nothing here touches the host or the network, and no threads.

Only what decides rules is kept, so an update that changes nothing the proxy
cares about (a label, a status, a resourceVersion) compares equal and costs no
sync. Only ready addresses become endpoints (notReadyAddresses never receive
traffic); endpoints are matched to a Service port by port name and protocol, as
Kubernetes' Endpoints name their ports after the Service's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
EXTERNAL_NAME = "ExternalName"
# Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 h).
DEFAULT_AFFINITY_TIMEOUT = 10800

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service, with the ready endpoints behind it."""

    name: str  # "" for a Service's single unnamed port
    protocol: str  # "tcp" or "udp", as iptables spells it
    port: int
    node_port: int  # 0: none
    endpoints: tuple[Endpoint, ...]  # sorted, no duplicates


@dataclass(frozen=True)
class ServiceState:
    namespace: str
    name: str
    cluster_ip: str  # an IPv4 address; Services without one have no ServiceState
    ports: tuple[ServicePort, ...]
    affinity_timeout: int  # seconds of ClientIP affinity; 0: none

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)


def port_display_name(namespace: str, name: str, port_name: str) -> str:
    """kube-proxy's ServicePortName: "ns/name:port", or "ns/name" for an unnamed port."""
    return f"{namespace}/{name}:{port_name}" if port_name else f"{namespace}/{name}"


def has_virtual_ip(svc: Any) -> bool:
    """True when the Service gets NAT rules: not ExternalName, not headless, IP set."""
    spec = svc.spec
    if (spec.type or CLUSTER_IP) == EXTERNAL_NAME:
        return False
    try:
        ipaddress.IPv4Address(spec.cluster_ip)
    except ValueError:
        return False  # "None" (headless), "" (not allocated yet) or not IPv4
    return True


def _ready_endpoints(endpoints: Any | None) -> dict[tuple[str, str], set[Endpoint]]:
    """(port name, protocol) -> ready endpoints, across every subset."""
    out: dict[tuple[str, str], set[Endpoint]] = {}
    if endpoints is None:
        return out
    for subset in endpoints.subsets:
        ips = [a.ip for a in subset.addresses if a.ip]
        for p in subset.ports:
            if not 0 < p.port < 65536:
                continue
            key = (p.name, (p.protocol or "TCP").lower())
            found = out.setdefault(key, set())
            for ip in ips:
                found.add(Endpoint(ip, p.port))
    return out


def service_state(svc: Any, endpoints: Any | None) -> ServiceState | None:
    """The proxy's view of one Service, or None when it needs no rules."""
    if not has_virtual_ip(svc):
        return None
    spec = svc.spec
    with_node_ports = (spec.type or CLUSTER_IP) in (NODE_PORT, LOAD_BALANCER)
    ready = _ready_endpoints(endpoints)
    ports = []
    for p in spec.ports:
        protocol = (p.protocol or "TCP").lower()
        if protocol not in ("tcp", "udp") or not 0 < p.port < 65536:
            continue  # the API refuses these; a proxy never renders what it cannot
        eps = tuple(sorted(ready.get((p.name, protocol), ())))
        node_port = p.node_port if with_node_ports and 0 < p.node_port < 65536 else 0
        ports.append(ServicePort(p.name, protocol, p.port, node_port, eps))
    affinity = 0
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config.client_ip
        affinity = (cfg.timeout_seconds if cfg.HasField("timeout_seconds")
                    else DEFAULT_AFFINITY_TIMEOUT) or DEFAULT_AFFINITY_TIMEOUT
    return ServiceState(
        namespace=svc.metadata.namespace,
        name=svc.metadata.name,
        cluster_ip=spec.cluster_ip,
        ports=tuple(sorted(ports, key=lambda sp: (sp.name, sp.protocol, sp.port))),
        affinity_timeout=affinity,
    )
