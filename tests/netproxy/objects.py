"""Builders of the API messages the netproxy consumes, for tests.

    svc("web", "10.96.0.20", ports=[port("http", 80, target=8080)])
    endpoints("web", ready=["10.244.1.5"], ports=[("http", 8080)])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.v1 import core_pb2


def port(name: str, number: int, *, protocol: str = "TCP", target: int | str | None = None,
         node_port: int = 0) -> core_pb2.ServicePort:
    p = core_pb2.ServicePort(name=name, protocol=protocol, port=number, node_port=node_port)
    if isinstance(target, str):
        p.target_port.string_value = target
    elif target is not None:
        p.target_port.number_value = target
    return p


def svc(name: str, cluster_ip: str, *, namespace: str = "default",
        ports: Sequence[core_pb2.ServicePort] = (), type: str = "ClusterIP",
        affinity: int | None = None, external_name: str = "",
        selector: dict[str, str] | None = None) -> core_pb2.Service:
    """A Service; `selector={}` makes one without selector (hand-made Endpoints)."""
    s = core_pb2.Service(api_version="v1", kind="Service")
    s.metadata.namespace = namespace
    s.metadata.name = name
    s.spec.type = type
    s.spec.cluster_ip = cluster_ip
    s.spec.external_name = external_name
    s.spec.ports.extend(ports or [port("http", 80, target=8080)])
    s.spec.selector.update({"app": name} if selector is None else selector)
    if affinity is not None:
        s.spec.session_affinity = "ClientIP"
        if affinity:
            s.spec.session_affinity_config.client_ip.timeout_seconds = affinity
    return s


def endpoints(name: str, *, namespace: str = "default", ready: Sequence[str] = (),
              not_ready: Sequence[str] = (), ports: Sequence[tuple[str, int] | tuple[str, int, str]]
              = (("http", 8080),), hostnames: dict[str, str] | None = None,
              subsets: Sequence[Any] = ()) -> core_pb2.Endpoints:
    e = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    e.metadata.namespace = namespace
    e.metadata.name = name
    if subsets:
        e.subsets.extend(subsets)
        return e
    if ready or not_ready:
        sub = e.subsets.add()
        for ip in ready:
            sub.addresses.add(ip=ip, hostname=(hostnames or {}).get(ip, ""))
        for ip in not_ready:
            sub.not_ready_addresses.add(ip=ip)
        for p in ports:
            sub.ports.add(name=p[0], port=p[1], protocol=p[2] if len(p) > 2 else "TCP")
    return e


def pod(name: str, ip: str, *, namespace: str = "default", phase: str = "Running",
        hostname: str = "", subdomain: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.namespace = namespace
    p.metadata.name = name
    p.spec.hostname = hostname
    p.spec.subdomain = subdomain
    p.status.phase = phase
    p.status.pod_ip = ip
    return p
