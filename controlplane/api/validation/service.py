"""Validation of Services and Endpoints.

Address checks (in range, free, reserved) that need the store are the
allocator's job (controlplane.api.allocators); here only shape and range.
"""

from __future__ import annotations

import ipaddress

from controlplane.api.settings import ApiSettings
from controlplane.api.validation.common import (
    check_labels,
    int_or_string,
    name_check,
    port_number,
)
from controlplane.api.validation.errors import Errors
from corral.names import check_dns1123_label, check_dns1123_subdomain, check_port_name
from corral.v1 import core_pb2

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
AFFINITIES = ("None", "ClientIP")
PROTOCOLS = ("TCP", "UDP")
# Kubernetes' maximum for sessionAffinityConfig.clientIP.timeoutSeconds (one day).
MAX_AFFINITY_TIMEOUT = 86400


def validate_service(svc: core_pb2.Service, errs: Errors, settings: ApiSettings) -> None:
    spec, path = svc.spec, "spec"
    stype = spec.type or "ClusterIP"
    if stype not in SERVICE_TYPES:
        errs.unsupported(f"{path}.type", spec.type, SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    if stype == "ExternalName":
        if not spec.external_name:
            errs.required(f"{path}.externalName", "for a Service of type ExternalName")
        else:
            name_check(spec.external_name.rstrip("."), f"{path}.externalName", errs,
                       check_dns1123_subdomain)
        if spec.cluster_ip and not headless:
            errs.add(f"{path}.clusterIP", "must be empty for type ExternalName")
    elif spec.external_name:
        errs.add(f"{path}.externalName", "may only be set for type ExternalName")
    if spec.cluster_ip and not headless:
        try:
            ip = ipaddress.IPv4Address(spec.cluster_ip)
        except ValueError:
            errs.add(f"{path}.clusterIP", f"must be empty, 'None' or a valid IPv4 address, "
                                          f"got {spec.cluster_ip!r}")
        else:
            if ip not in settings.service_cidr or ip in (
                settings.service_cidr.network_address, settings.service_cidr.broadcast_address
            ):
                errs.add(f"{path}.clusterIP",
                         f"{spec.cluster_ip} is not in the service CIDR "
                         f"{settings.service_cidr} (or is its network or broadcast address)")
    if headless and stype in ("NodePort", "LoadBalancer"):
        errs.add(f"{path}.clusterIP", f"may not be 'None' for type {stype}")
    for i, listed in enumerate(spec.cluster_ips):
        if listed != spec.cluster_ip and i == 0:
            errs.add(f"{path}.clusterIPs[0]", "must match `clusterIP` when both are set")
    if len(spec.cluster_ips) > 1:
        errs.add(f"{path}.clusterIPs", "at most one address: Corral serves IPv4 only")
    if spec.session_affinity and spec.session_affinity not in AFFINITIES:
        errs.unsupported(f"{path}.sessionAffinity", spec.session_affinity, AFFINITIES)
    cfg = spec.session_affinity_config
    if spec.HasField("session_affinity_config"):
        if spec.session_affinity != "ClientIP":
            errs.add(f"{path}.sessionAffinityConfig",
                     "must not be set when sessionAffinity is None")
        elif cfg.client_ip.HasField("timeout_seconds") and not (
            0 < cfg.client_ip.timeout_seconds <= MAX_AFFINITY_TIMEOUT
        ):
            errs.add(f"{path}.sessionAffinityConfig.clientIP.timeoutSeconds",
                     f"must be greater than 0 and less than or equal to "
                     f"{MAX_AFFINITY_TIMEOUT}, got {cfg.client_ip.timeout_seconds}")
    check_labels(spec.selector, f"{path}.selector", errs)
    if not spec.ports and stype != "ExternalName" and not headless:
        errs.required(f"{path}.ports", "at least one port")
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    lo, hi = settings.node_port_range
    for i, p in enumerate(spec.ports):
        pp = f"{path}.ports[{i}]"
        if len(spec.ports) > 1 and not p.name:
            errs.required(f"{pp}.name", "every port needs a name when a Service has more "
                                        "than one")
        if p.name:
            for problem in check_dns1123_label(p.name):
                errs.add(f"{pp}.name", f"invalid value {p.name!r}: {problem}")
            if p.name in seen_names:
                errs.add(f"{pp}.name", f"duplicate value {p.name!r}")
            seen_names.add(p.name)
        port_number(p.port, f"{pp}.port", errs)
        proto = p.protocol or "TCP"
        if proto not in PROTOCOLS:
            errs.unsupported(f"{pp}.protocol", p.protocol, PROTOCOLS)
        if (p.port, proto) in seen_ports:
            errs.add(pp, f"duplicate value {p.port}/{proto}")
        seen_ports.add((p.port, proto))
        target = int_or_string(p.target_port, f"{pp}.targetPort", errs, allow_name=True)
        if isinstance(target, int):
            port_number(target, f"{pp}.targetPort", errs)
        elif isinstance(target, str):
            for problem in check_port_name(target):
                errs.add(f"{pp}.targetPort", f"invalid value {target!r}: {problem}")
        if p.node_port:
            if stype not in ("NodePort", "LoadBalancer"):
                errs.add(f"{pp}.nodePort", f"may not be used when `type` is '{stype}'")
            elif not lo <= p.node_port <= hi:
                errs.add(f"{pp}.nodePort", f"{p.node_port} is not in the node port range "
                                           f"{lo}-{hi}")


def validate_endpoints(ep: core_pb2.Endpoints, errs: Errors) -> None:
    for i, subset in enumerate(ep.subsets):
        sp = f"subsets[{i}]"
        for group, items in (("addresses", subset.addresses),
                             ("notReadyAddresses", subset.not_ready_addresses)):
            for j, a in enumerate(items):
                ap = f"{sp}.{group}[{j}]"
                try:
                    ipaddress.IPv4Address(a.ip)
                except ValueError:
                    errs.add(f"{ap}.ip", f"must be a valid IPv4 address, got {a.ip!r}")
                if a.hostname:
                    name_check(a.hostname, f"{ap}.hostname", errs, check_dns1123_label)
        names: set[str] = set()
        for j, port in enumerate(subset.ports):
            pp = f"{sp}.ports[{j}]"
            port_number(port.port, f"{pp}.port", errs)
            if port.protocol and port.protocol not in PROTOCOLS:
                errs.unsupported(f"{pp}.protocol", port.protocol, PROTOCOLS)
            if len(subset.ports) > 1 and not port.name:
                errs.required(f"{pp}.name")
            if port.name in names:
                errs.add(f"{pp}.name", f"duplicate value {port.name!r}")
            names.add(port.name)
