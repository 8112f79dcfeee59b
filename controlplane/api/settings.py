"""Cluster-wide settings the API layer needs (address ranges, watch tuning).

Pure data: built once by controlplane.main from the config file and handed to
the handler, the validators and the allocators. Immutable, so any thread may
read it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_CLUSTER_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
_SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")


@dataclass(frozen=True)
class ApiSettings:
    cluster_cidr: ipaddress.IPv4Network = _CLUSTER_CIDR
    service_cidr: ipaddress.IPv4Network = _SERVICE_CIDR
    node_port_range: tuple[int, int] = (30000, 32767)
    # Prefix length of each node's slice of the cluster CIDR.
    node_cidr_prefix: int = 24
    # Seconds between BOOKMARK events on a watch that asked for them.
    bookmark_interval: float = 5.0
    # How long a write may wait for its Raft commit before it answers
    # DEADLINE_EXCEEDED (outcome unknown).
    write_timeout: float = 10.0

    @property
    def dns_service_ip(self) -> ipaddress.IPv4Address:
        """The tenth address of the service CIDR (10.96.0.10 by default), as kube-dns."""
        return self.service_cidr.network_address + 10


# The Service that may hold the DNS address.
DNS_SERVICE = ("corral-system", "dns")
# Namespaces that exist from the start and cannot be deleted.
SYSTEM_NAMESPACES = ("default", "corral-system")
