"""Pod IP allocation from the node's pod CIDR, persisted so a restart never
reuses a live address.

`next_free` is the pure decision (round-robin after the last address handed out,
as CNI's host-local plugin does, so a just-released address is not reused at
once). `Ipam` keeps the allocations in one JSON file in the state folder,
written to a temporary file, fsynced and renamed over the old one before the
address is handed out: a crash after `allocate` returned cannot forget it.
Thread-safe (one lock); allocate/release are called by pod workers.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class IpamError(Exception):
    pass


def usable(cidr: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Pod addresses of a node CIDR: not the network, not .1 (the bridge), not broadcast."""
    hosts = list(cidr.hosts())
    return hosts[1:]


def gateway(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return next(cidr.hosts())


def next_free(cidr: ipaddress.IPv4Network, used: Iterable[str], last: str = ""
              ) -> ipaddress.IPv4Address:
    pool = usable(cidr)
    if not pool:
        raise IpamError(f"pod CIDR {cidr} has no address for pods")
    taken = set(used)
    start = 0
    if last:
        try:
            last_ip = ipaddress.IPv4Address(last)
        except ValueError:
            last_ip = None
        if last_ip is not None and last_ip in cidr:
            start = next((i + 1 for i, ip in enumerate(pool) if ip == last_ip), 0)
    for step in range(len(pool)):
        candidate = pool[(start + step) % len(pool)]
        if str(candidate) not in taken:
            return candidate
    raise IpamError(f"pod CIDR {cidr} is full: all {len(pool)} addresses are in use")


class Ipam:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._cidr: ipaddress.IPv4Network | None = None
        self._last = ""
        # address -> owner (pod uid)
        self._allocations: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise IpamError(f"cannot read IP allocations {self._path}: {err}") from None
        cidr = data.get("cidr") or ""
        self._cidr = ipaddress.IPv4Network(cidr) if cidr else None
        self._last = data.get("last", "")
        self._allocations = dict(data.get("allocations") or {})

    def _save(self) -> None:
        data = {"cidr": str(self._cidr) if self._cidr else "", "last": self._last,
                "allocations": dict(sorted(self._allocations.items()))}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        dirfd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    @property
    def cidr(self) -> ipaddress.IPv4Network | None:
        return self._cidr

    def set_cidr(self, cidr: str) -> None:
        """The node's pod CIDR (from the Node object). Allocations outside a new CIDR
        are dropped with a warning: their pods must be recreated."""
        net = ipaddress.IPv4Network(cidr)
        with self._lock:
            if self._cidr == net:
                return
            dropped = {ip: o for ip, o in self._allocations.items()
                       if ipaddress.IPv4Address(ip) not in net}
            if self._cidr is not None and dropped:
                log.warning("pod CIDR changed from %s to %s: forgetting %d allocations",
                            self._cidr, net, len(dropped))
            for ip in dropped:
                del self._allocations[ip]
            self._cidr = net
            self._save()

    def allocate(self, owner: str) -> str:
        """The owner's address (the same one again if it has one)."""
        with self._lock:
            if self._cidr is None:
                raise IpamError("the node has no pod CIDR yet")
            for ip, who in self._allocations.items():
                if who == owner:
                    return ip
            ip = str(next_free(self._cidr, self._allocations, self._last))
            self._allocations[ip] = owner
            self._last = ip
            self._save()
            return ip

    def lookup(self, owner: str) -> str:
        with self._lock:
            return next((ip for ip, who in self._allocations.items() if who == owner), "")

    def release(self, owner: str) -> list[str]:
        with self._lock:
            ips = [ip for ip, who in self._allocations.items() if who == owner]
            for ip in ips:
                del self._allocations[ip]
            if ips:
                self._save()
            return ips

    def owners(self) -> set[str]:
        with self._lock:
            return set(self._allocations.values())

    def allocations(self) -> dict[str, str]:
        with self._lock:
            return dict(self._allocations)
