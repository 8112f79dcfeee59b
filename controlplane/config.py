"""The corral-controlplane configuration: a YAML file and/or the same settings as flags.

Keys (flags in brackets; flags override the file):

    name                 [--name]                member name, a DNS-1123 label
    raft_address         [--raft-address]        HOST:PORT this replica's Raft binds to
    peers                [--peer NAME=HOST:PORT]  every member -> raft address (self added)
    listen               [--listen HOST:PORT]    gRPC API over TCP
    socket               [--socket PATH]         gRPC API on a unix socket
    data_dir             [--data-dir DIR]        journal, snapshots, metadata
    raft_password_file   [--raft-password-file]  shared secret of the Raft peers (required)
    cluster_cidr         [--cluster-cidr]        pod network (10.244.0.0/16)
    service_cidr         [--service-cidr]        ClusterIP range (10.96.0.0/12)
    node_port_range      [--node-port-range]     NodePort range (30000-32767)
    watch_history        [--watch-history]       events kept for watch resume (10000)
    log_level            [--log-level]           debug, info, warning, error (info)
    api_workers          [--api-workers]         gRPC worker threads = concurrent calls
                                                 and watch streams (1024)
    controllers          (mapping)               settings of the leader's controllers
    raft                 (mapping)               Raft timers and snapshot thresholds
                                                 (controlplane.store.raftconfig.RaftTuning)

A bad configuration raises `ConfigError` (corral.configfile, shared with the
other daemons) whose message is one line naming the key (`raft_address: must be
HOST:PORT, got 'x'`); main prints it and exits 2.

Pure apart from reading the two files named (config, password) and checking
the data folder; no threads.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.controllers.config import ControllersConfig
from controlplane.store.raftconfig import RaftTuning
from corral import configfile
from corral.configfile import LOG_LEVELS, ConfigError
from corral.names import check_dns1123_label

DEFAULT_API_WORKERS = 1024
_CLUSTER_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
_SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")


@dataclass(frozen=True)
class Config:
    name: str
    raft_address: str
    peers: dict[str, str]
    data_dir: Path
    raft_password: str = field(repr=False)
    raft_password_file: Path
    listen: str = ""
    socket: str = ""
    cluster_cidr: ipaddress.IPv4Network = _CLUSTER_CIDR
    service_cidr: ipaddress.IPv4Network = _SERVICE_CIDR
    node_port_range: tuple[int, int] = (30000, 32767)
    watch_history: int = 10000
    log_level: str = "info"
    api_workers: int = DEFAULT_API_WORKERS
    controllers: dict[str, Any] = field(default_factory=dict)
    raft: RaftTuning = field(default_factory=RaftTuning)

    @property
    def api_address(self) -> str:
        """Where other members and clients reach this replica's API over TCP: the
        listen address, with a wildcard host replaced by the Raft host."""
        if not self.listen:
            return ""
        host, port = split_host_port(self.listen, "listen", allow_zero=True)
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = split_host_port(self.raft_address, "raft_address")[0]
        return f"{host}:{port}"


KEYS = ("name", "raft_address", "peers", "listen", "socket", "data_dir", "raft_password_file",
        "cluster_cidr", "service_cidr", "node_port_range", "watch_history", "log_level",
        "api_workers", "controllers", "raft")


def split_host_port(value: str, key: str, *, allow_zero: bool = False) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(key, f"must be HOST:PORT, got {value!r}")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    low = 0 if allow_zero else 1
    if not port_text.isdigit() or not low <= int(port_text) < 65536:
        raise ConfigError(key, f"port must be a number between {low} and 65535, "
                               f"got {value!r}")
    if not host:
        raise ConfigError(key, f"must be HOST:PORT with a host, got {value!r}")
    if not _valid_host(host):
        raise ConfigError(key, f"host must be an IP address or a DNS name, got {host!r}")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(label and not check_dns1123_label(label.lower()) for label in labels)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral-controlplane",
        description="A Corral control plane replica: a Raft member with the gRPC API. "
                    "Settings come from --config FILE (YAML) and/or flags; flags win.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML file with the settings below")
    p.add_argument("--name", help="member name (DNS-1123 label)")
    p.add_argument("--raft-address", metavar="HOST:PORT", help="Raft bind address")
    p.add_argument("--peer", action="append", metavar="NAME=HOST:PORT", default=None,
                   help="a member and its Raft address (repeat; self is added)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC API TCP address")
    p.add_argument("--socket", metavar="PATH", help="gRPC API unix socket")
    p.add_argument("--data-dir", metavar="DIR", help="journal, snapshots, metadata")
    p.add_argument("--raft-password-file", metavar="FILE",
                   help="file holding the Raft peers' shared secret")
    p.add_argument("--cluster-cidr", metavar="CIDR")
    p.add_argument("--service-cidr", metavar="CIDR")
    p.add_argument("--node-port-range", metavar="LOW-HIGH")
    p.add_argument("--watch-history", type=int, metavar="N")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--api-workers", type=int, metavar="N")
    return p


def _read_file(path: str) -> dict[str, Any]:
    data = configfile.read_yaml(path)
    configfile.check_keys(data, set(KEYS), "")
    return data


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in KEYS:
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if args.peer is not None:
        peers: dict[str, str] = {}
        for item in args.peer:
            name, eq, addr = item.partition("=")
            if not eq or not name or not addr:
                raise ConfigError("peers", f"--peer must be NAME=HOST:PORT, got {item!r}")
            peers[name] = addr
        out["peers"] = peers
    return out


def _cidr(value: Any, key: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(configfile.cidr(value, key))


def _port_range(value: Any, key: str) -> tuple[int, int]:
    text = str(value)
    lo, dash, hi = text.partition("-")
    if not dash or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ConfigError(key, f"must be LOW-HIGH such as 30000-32767, got {value!r}")
    low, high = int(lo), int(hi)
    if not 1 <= low <= high <= 65535:
        raise ConfigError(key, f"must satisfy 1 <= LOW <= HIGH <= 65535, got {value!r}")
    return low, high


def _data_dir(value: Any) -> Path:
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError("data_dir", f"{path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("data_dir", f"cannot create {path}: {err.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError("data_dir", f"{path} is not readable and writable by this user")
    return path


def _password(value: Any) -> tuple[Path, str]:
    path = Path(str(value)).expanduser()
    try:
        secret = path.read_text().strip()
    except OSError as err:
        raise ConfigError("raft_password_file", f"cannot read {path}: {err.strerror}") from None
    if not secret:
        raise ConfigError("raft_password_file", f"{path} is empty")
    return path, secret


def build(settings: Mapping[str, Any]) -> Config:
    """Check every setting and build a Config (raises ConfigError)."""
    s = dict(settings)
    name = s.get("name")
    if not name:
        raise ConfigError("name", "required (this member's name)")
    name = str(name)
    problems = check_dns1123_label(name)
    if problems:
        raise ConfigError("name", f"invalid value {name!r}: {problems[0]}")
    if not s.get("raft_address"):
        raise ConfigError("raft_address", "required (HOST:PORT this replica's Raft binds to)")
    raft_address = str(s["raft_address"])
    split_host_port(raft_address, "raft_address")
    peers_in = s.get("peers") or {}
    if not isinstance(peers_in, dict):
        raise ConfigError("peers", "must be a mapping of member name to HOST:PORT")
    peers: dict[str, str] = {}
    for peer, addr in peers_in.items():
        peer = str(peer)
        if check_dns1123_label(peer):
            raise ConfigError("peers", f"invalid member name {peer!r}: "
                                       f"{check_dns1123_label(peer)[0]}")
        split_host_port(str(addr), f"peers.{peer}")
        peers[peer] = str(addr)
    if name in peers and peers[name] != raft_address:
        raise ConfigError("peers", f"lists {name} at {peers[name]} but raft_address is "
                                   f"{raft_address}")
    peers[name] = raft_address
    by_addr: dict[str, str] = {}
    for peer, addr in peers.items():
        if addr in by_addr:
            raise ConfigError("peers", f"{peer} and {by_addr[addr]} share the address {addr}")
        by_addr[addr] = peer
    listen = str(s.get("listen") or "")
    if listen:
        # Port 0 picks a free port (tests); the replica registers the real one.
        split_host_port(listen, "listen", allow_zero=True)
    sock = str(s.get("socket") or "")
    if sock and not Path(sock).parent.is_dir():
        raise ConfigError("socket", f"the folder of {sock} does not exist")
    if not listen and not sock:
        raise ConfigError("listen", "at least one of listen (HOST:PORT) and socket (PATH) "
                                    "is required")
    if not s.get("data_dir"):
        raise ConfigError("data_dir", "required (where the journal and snapshots live)")
    data_dir = _data_dir(s["data_dir"])
    if not s.get("raft_password_file"):
        raise ConfigError("raft_password_file", "required: Raft peers exchange pickled "
                                                "frames, so they must share a secret")
    pw_path, password = _password(s["raft_password_file"])
    cluster = _cidr(s.get("cluster_cidr", "10.244.0.0/16"), "cluster_cidr")
    if cluster.prefixlen > 24:
        raise ConfigError("cluster_cidr", f"must be /24 or larger (each node takes a /24), "
                                          f"got {cluster}")
    service = _cidr(s.get("service_cidr", "10.96.0.0/12"), "service_cidr")
    if service.num_addresses < 16:
        raise ConfigError("service_cidr", f"must hold at least 16 addresses, got {service}")
    if cluster.overlaps(service):
        raise ConfigError("service_cidr", f"{service} overlaps cluster_cidr {cluster}")
    port_range = _port_range(s.get("node_port_range", "30000-32767"), "node_port_range")
    history = configfile.integer(s.get("watch_history", 10000), "watch_history", 100)
    level = configfile.log_level(s.get("log_level", "info"))
    workers = configfile.integer(s.get("api_workers", DEFAULT_API_WORKERS), "api_workers", 8)
    controllers = dict(configfile.mapping(s.get("controllers"), "controllers"))
    # Checked now, not when this replica first leads: a typo stops the start.
    ControllersConfig.from_mapping(controllers)
    raft = RaftTuning.from_mapping(s.get("raft"))
    return Config(
        name=name, raft_address=raft_address, peers=peers, data_dir=data_dir,
        raft_password=password, raft_password_file=pw_path, listen=listen, socket=sock,
        cluster_cidr=cluster, service_cidr=service, node_port_range=port_range,
        watch_history=history, log_level=level, api_workers=workers,
        controllers=dict(controllers), raft=raft,
    )


def load(argv: Sequence[str] | None = None) -> Config:
    """Parse flags (and the --config file they name); raises ConfigError."""
    args = build_parser().parse_args(argv)
    settings: dict[str, Any] = {}
    if args.config:
        settings.update(_read_file(args.config))
    settings.update(_flags(args))
    return build(settings)
