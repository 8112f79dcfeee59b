"""The cluster DNS's view of Services, Endpoints and Pods: compact immutable records.

Threads model: informer threads call the `*_updated` / `*_deleted` methods;
DNS server threads call the lookups. One lock guards the dicts; lookups copy
out immutable records (tuples, frozen dataclasses), so answering a query never
holds the lock while building packets.

Pure otherwise: no sockets, no packets. dnsresolver.py turns these records
into DNS answers; tests fill an index by hand.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from netproxy.model import CLUSTER_IP, EXTERNAL_NAME

Key = tuple[str, str]

HEADLESS = "Headless"


@dataclass(frozen=True)
class PortRecord:
    name: str
    protocol: str  # "tcp" / "udp"
    port: int


@dataclass(frozen=True)
class ServiceRecord:
    namespace: str
    name: str
    kind: str  # "ClusterIP" (any type with a VIP), "Headless", "ExternalName"
    cluster_ip: str
    external_name: str
    ports: tuple[PortRecord, ...]


@dataclass(frozen=True)
class EndpointRecord:
    """One ready address of a Service, with the ports it serves."""

    ip: str
    hostname: str
    ports: tuple[PortRecord, ...]

    @property
    def dashed(self) -> str:
        return self.ip.replace(".", "-")


def _key(obj: Any) -> Key:
    return (obj.metadata.namespace, obj.metadata.name)


def service_record(svc: Any) -> ServiceRecord | None:
    spec = svc.spec
    kind = spec.type or CLUSTER_IP
    ports = tuple(PortRecord(p.name, (p.protocol or "TCP").lower(), p.port) for p in spec.ports)
    if kind == EXTERNAL_NAME:
        if not spec.external_name:
            return None
        return ServiceRecord(svc.metadata.namespace, svc.metadata.name, EXTERNAL_NAME, "",
                             spec.external_name.rstrip(".").lower(), ports)
    if spec.cluster_ip == "None":
        return ServiceRecord(svc.metadata.namespace, svc.metadata.name, HEADLESS, "", "", ports)
    try:
        ipaddress.IPv4Address(spec.cluster_ip)
    except ValueError:
        return None  # no address allocated yet: the name does not exist yet
    return ServiceRecord(svc.metadata.namespace, svc.metadata.name, CLUSTER_IP,
                         spec.cluster_ip, "", ports)


def endpoint_records(ep: Any) -> tuple[EndpointRecord, ...]:
    """Ready addresses only, one record per address (ports merged across subsets)."""
    by_ip: dict[str, tuple[str, set[PortRecord]]] = {}
    for subset in ep.subsets:
        ports = {PortRecord(p.name, (p.protocol or "TCP").lower(), p.port)
                 for p in subset.ports}
        for a in subset.addresses:
            if not a.ip:
                continue
            hostname, have = by_ip.get(a.ip, (a.hostname, set()))
            by_ip[a.ip] = (hostname or a.hostname, have | ports)
    return tuple(
        EndpointRecord(ip, hostname, tuple(sorted(ports, key=lambda p: (p.name, p.protocol))))
        for ip, (hostname, ports) in sorted(by_ip.items(), key=lambda kv: _ip_sort(kv[0]))
    )


def _ip_sort(ip: str) -> tuple[int, str]:
    try:
        return (int(ipaddress.IPv4Address(ip)), ip)
    except ValueError:
        return (1 << 33, ip)


def _decrement(counter: Counter[Any], key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class DnsIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[Key, ServiceRecord] = {}
        self._endpoints: dict[Key, tuple[EndpointRecord, ...]] = {}
        self._service_ns: Counter[str] = Counter()
        self._by_vip: dict[str, Key] = {}
        self._pod_ips: dict[Key, str] = {}  # pod key -> IP
        self._pods_at: Counter[tuple[str, str]] = Counter()  # (namespace, IP) -> pods
        self._pod_ns: Counter[str] = Counter()

    # ---- informer side ------------------------------------------------------------
    def service_updated(self, svc: Any) -> None:
        rec = service_record(svc)
        with self._lock:
            self._drop_service(_key(svc))
            if rec is not None:
                self._services[_key(svc)] = rec
                self._service_ns[rec.namespace] += 1
                if rec.cluster_ip:
                    self._by_vip[rec.cluster_ip] = _key(svc)

    def service_deleted(self, svc: Any) -> None:
        with self._lock:
            self._drop_service(_key(svc))

    def _drop_service(self, key: Key) -> None:
        old = self._services.pop(key, None)
        if old is None:
            return
        _decrement(self._service_ns, old.namespace)
        if old.cluster_ip and self._by_vip.get(old.cluster_ip) == key:
            del self._by_vip[old.cluster_ip]

    def endpoints_updated(self, ep: Any) -> None:
        recs = endpoint_records(ep)
        with self._lock:
            self._endpoints[_key(ep)] = recs

    def endpoints_deleted(self, ep: Any) -> None:
        with self._lock:
            self._endpoints.pop(_key(ep), None)

    def pod_updated(self, pod: Any) -> None:
        ip = pod.status.pod_ip
        if pod.status.phase in ("Succeeded", "Failed"):
            ip = ""  # its address may already belong to another pod
        with self._lock:
            self._drop_pod(_key(pod))
            if ip:
                self._pod_ips[_key(pod)] = ip
                self._pods_at[(pod.metadata.namespace, ip)] += 1
                self._pod_ns[pod.metadata.namespace] += 1

    def pod_deleted(self, pod: Any) -> None:
        with self._lock:
            self._drop_pod(_key(pod))

    def _drop_pod(self, key: Key) -> None:
        ip = self._pod_ips.pop(key, None)
        if ip is None:
            return
        _decrement(self._pods_at, (key[0], ip))
        _decrement(self._pod_ns, key[0])

    # ---- lookups --------------------------------------------------------------------
    def service(self, namespace: str, name: str) -> ServiceRecord | None:
        with self._lock:
            return self._services.get((namespace, name))

    def endpoints(self, namespace: str, name: str) -> tuple[EndpointRecord, ...]:
        with self._lock:
            return self._endpoints.get((namespace, name), ())

    def has_service_namespace(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._service_ns

    def has_pod_namespace(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._pod_ns

    def pod_exists(self, namespace: str, ip: str) -> bool:
        with self._lock:
            return (namespace, ip) in self._pods_at

    def service_at(self, ip: str) -> ServiceRecord | None:
        with self._lock:
            key = self._by_vip.get(ip)
            return None if key is None else self._services.get(key)

    def pod_namespaces_at(self, ip: str) -> list[str]:
        with self._lock:
            return sorted(ns for (ns, at) in self._pods_at if at == ip)

    def headless_names_at(self, ip: str) -> list[tuple[str, ServiceRecord]]:
        """(hostname, Service) for every headless endpoint with a hostname at `ip`."""
        with self._lock:
            out: list[tuple[str, ServiceRecord]] = []
            for key, eps in self._endpoints.items():
                svc = self._services.get(key)
                if svc is None or svc.kind != HEADLESS:
                    continue
                out.extend((e.hostname, svc) for e in eps if e.ip == ip and e.hostname)
            return out
