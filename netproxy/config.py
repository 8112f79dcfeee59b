"""The netproxy's configuration: a YAML file plus flags for the main keys.

Pure: `parse(mapping)` validates a plain mapping (as `yaml.safe_load` gives it)
into an immutable `ProxyConfig`; every problem is a `ConfigError` whose message
names the key ("dns.port: must be between 1 and 65535, got 0"). No threads;
nothing here touches the host except `load` reading the file.

docs/netproxy.md is the reference for every key; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from corral import names


class ConfigError(Exception):
    """A bad configuration; the message names the key."""


@dataclass(frozen=True)
class IptablesConfig:
    restore: str = "iptables-restore"
    save: str = "iptables-save"
    conntrack: str = "conntrack"
    # Deadline of one iptables-restore / iptables-save call, seconds.
    timeout: float = 300.0


@dataclass(frozen=True)
class DnsConfig:
    enabled: bool = True
    # Where the DNS server listens; "" = node_ip. The cluster DNS VIP is DNATed here.
    listen: str = ""
    port: int = 53
    # Resolvers for names outside the cluster; empty = the nameservers of resolv_conf.
    upstream: tuple[str, ...] = ()
    resolv_conf: str = "/etc/resolv.conf"
    ttl: int = 5
    # verified (A-B-C-D.NS.pod answers only for a pod with that IP), insecure, disabled.
    pods: str = "verified"
    forward_timeout: float = 2.0


@dataclass(frozen=True)
class ProxyConfig:
    node_name: str
    node_ip: str
    servers: tuple[str, ...]
    state_dir: str = "/var/lib/corral-netproxy"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    log_level: str = "info"
    min_sync_period: float = 0.1
    full_sync_period: float = 60.0
    masquerade_bit: int = 14
    metrics_address: str = "127.0.0.1:10249"
    bridge_nf_call_iptables: bool = True
    iptables: IptablesConfig = field(default_factory=IptablesConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)

    @property
    def dns_listen(self) -> str:
        return self.dns.listen or self.node_ip


_TOP_KEYS = {
    "node_name", "node_ip", "servers", "state_dir", "cluster_cidr", "service_cidr",
    "cluster_dns", "cluster_domain", "log_level", "min_sync_period", "full_sync_period",
    "masquerade_bit", "metrics_address", "bridge_nf_call_iptables", "iptables", "dns",
}
_IPTABLES_KEYS = {"restore", "save", "conntrack", "timeout"}
_DNS_KEYS = {"enabled", "listen", "port", "upstream", "resolv_conf", "ttl", "pods",
             "forward_timeout"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_POD_MODES = ("verified", "insecure", "disabled")


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise _fail(path, f"unknown key (known: {', '.join(sorted(allowed))})")


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _str(value: Any, key: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, got {value!r}")
    if not allow_empty and not value.strip():
        raise _fail(key, "must not be empty")
    return value


def _seconds(value: Any, key: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"must be a number of seconds, got {value!r}")
    if value <= minimum:
        raise _fail(key, f"must be > {minimum:g}, got {value!r}")
    return float(value)


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(key, f"must be between {lo} and {hi}, got {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, got {value!r}")
    return value


def _ipv4(value: Any, key: str) -> str:
    text = _str(value, key, allow_empty=False)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise _fail(key, f"must be an IPv4 address, got {text!r}") from None


def _cidr(value: Any, key: str) -> str:
    text = _str(value, key, allow_empty=False)
    try:
        return str(ipaddress.IPv4Network(text, strict=True))
    except ValueError as err:
        raise _fail(key, f"must be an IPv4 CIDR such as 10.244.0.0/16, got {text!r} ({err})") \
            from None


def _hostport(value: Any, key: str, *, default_port: int | None = None) -> str:
    """"IP:PORT" (or a bare IP when `default_port` is given)."""
    text = _str(value, key, allow_empty=False).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise _fail(key, f"must be HOST:PORT such as 127.0.0.1:10249, got {text!r}")
        host, port = text, str(default_port)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise _fail(key, f"must name an IPv4 address, got {text!r}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail(key, f"port must be 0-65535, got {text!r}")
    return f"{host}:{int(port)}"


def default_node_name() -> str:
    return socket.gethostname().split(".", 1)[0].lower()


def parse(data: Mapping[str, Any]) -> ProxyConfig:
    """Validate a configuration mapping; raises ConfigError naming the first bad key."""
    data = _mapping(data, "config")
    _check_keys(data, _TOP_KEYS, "")

    node_name = _str(data.get("node_name") or default_node_name(), "node_name")
    problems = names.check_dns1123_subdomain(node_name)
    if problems:
        raise _fail("node_name", f"{node_name!r}: {'; '.join(problems)}")
    if "node_ip" not in data:
        raise _fail("node_ip", "required: the host's address (node ports answer on it and "
                               "the DNS server listens on it by default)")
    node_ip = _ipv4(data["node_ip"], "node_ip")
    servers_raw = data.get("servers")
    if isinstance(servers_raw, str):
        servers_raw = [s for s in servers_raw.split(",") if s.strip()]
    if not isinstance(servers_raw, list) or not servers_raw:
        raise _fail("servers", "required: a list of control plane endpoints "
                               "(HOST:PORT or unix:/path/to/socket)")
    servers = tuple(_str(s, f"servers[{i}]", allow_empty=False).strip()
                    for i, s in enumerate(servers_raw))
    kwargs: dict[str, Any] = {"node_name": node_name, "node_ip": node_ip, "servers": servers}

    if "state_dir" in data:
        state_dir = _str(data["state_dir"], "state_dir", allow_empty=False)
        if not Path(state_dir).is_absolute():
            raise _fail("state_dir", f"must be an absolute path, got {state_dir!r}")
        kwargs["state_dir"] = state_dir
    for key in ("cluster_cidr", "service_cidr"):
        if key in data:
            kwargs[key] = _cidr(data[key], key)
    if "cluster_dns" in data:
        kwargs["cluster_dns"] = _ipv4(data["cluster_dns"], "cluster_dns")
    if "cluster_domain" in data:
        domain = _str(data["cluster_domain"], "cluster_domain", allow_empty=False).strip(".")
        problems = names.check_dns1123_subdomain(domain)
        if problems:
            raise _fail("cluster_domain", f"{domain!r}: {'; '.join(problems)}")
        kwargs["cluster_domain"] = domain
    if "log_level" in data:
        level = _str(data["log_level"], "log_level").lower()
        if level not in _LOG_LEVELS:
            raise _fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
        kwargs["log_level"] = level
    if "min_sync_period" in data:
        value = data["min_sync_period"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise _fail("min_sync_period", f"must be a number of seconds >= 0, got {value!r}")
        kwargs["min_sync_period"] = float(value)
    if "full_sync_period" in data:
        kwargs["full_sync_period"] = _seconds(data["full_sync_period"], "full_sync_period")
    if "masquerade_bit" in data:
        kwargs["masquerade_bit"] = _int(data["masquerade_bit"], "masquerade_bit", 0, 31)
    if "metrics_address" in data:
        addr = _str(data["metrics_address"], "metrics_address")
        kwargs["metrics_address"] = _hostport(addr, "metrics_address") if addr else ""
    if "bridge_nf_call_iptables" in data:
        kwargs["bridge_nf_call_iptables"] = _bool(data["bridge_nf_call_iptables"],
                                                  "bridge_nf_call_iptables")
    kwargs["iptables"] = _parse_iptables(_mapping(data.get("iptables"), "iptables"))
    kwargs["dns"] = _parse_dns(_mapping(data.get("dns"), "dns"))

    cfg = ProxyConfig(**kwargs)
    cluster = ipaddress.IPv4Network(cfg.cluster_cidr)
    service = ipaddress.IPv4Network(cfg.service_cidr)
    if cluster.overlaps(service):
        raise _fail("service_cidr", f"{cfg.service_cidr} overlaps cluster_cidr {cfg.cluster_cidr}")
    if ipaddress.IPv4Address(cfg.cluster_dns) not in service:
        raise _fail("cluster_dns", f"{cfg.cluster_dns} is outside service_cidr {cfg.service_cidr}")
    if ipaddress.IPv4Address(cfg.node_ip) in cluster:
        raise _fail("node_ip", f"{cfg.node_ip} is inside cluster_cidr {cfg.cluster_cidr}")
    return cfg


def _parse_iptables(data: Mapping[str, Any]) -> IptablesConfig:
    _check_keys(data, _IPTABLES_KEYS, "iptables")
    kwargs: dict[str, Any] = {}
    for key in ("restore", "save", "conntrack"):
        if key in data:
            kwargs[key] = _str(data[key], f"iptables.{key}", allow_empty=False)
    if "timeout" in data:
        kwargs["timeout"] = _seconds(data["timeout"], "iptables.timeout")
    return IptablesConfig(**kwargs)


def _parse_dns(data: Mapping[str, Any]) -> DnsConfig:
    _check_keys(data, _DNS_KEYS, "dns")
    kwargs: dict[str, Any] = {}
    if "enabled" in data:
        kwargs["enabled"] = _bool(data["enabled"], "dns.enabled")
    if data.get("listen"):
        kwargs["listen"] = _ipv4(data["listen"], "dns.listen")
    if "port" in data:
        kwargs["port"] = _int(data["port"], "dns.port", 1, 65535)
    upstream = data.get("upstream") or []
    if isinstance(upstream, str):
        upstream = [u for u in upstream.split(",") if u.strip()]
    if not isinstance(upstream, list):
        raise _fail("dns.upstream", "must be a list of IP or IP:PORT")
    kwargs["upstream"] = tuple(_hostport(u, f"dns.upstream[{i}]", default_port=53)
                               for i, u in enumerate(upstream))
    if "resolv_conf" in data:
        kwargs["resolv_conf"] = _str(data["resolv_conf"], "dns.resolv_conf", allow_empty=False)
    if "ttl" in data:
        kwargs["ttl"] = _int(data["ttl"], "dns.ttl", 0, 86400)
    if "pods" in data:
        mode = _str(data["pods"], "dns.pods")
        if mode not in _POD_MODES:
            raise _fail("dns.pods", f"must be one of {', '.join(_POD_MODES)}, got {mode!r}")
        kwargs["pods"] = mode
    if "forward_timeout" in data:
        kwargs["forward_timeout"] = _seconds(data["forward_timeout"], "dns.forward_timeout")
    return DnsConfig(**kwargs)


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> ProxyConfig:
    """Read the YAML file (if any), apply flag overrides (top-level keys), validate."""
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: must be a mapping of keys, "
                              f"got {type(loaded).__name__}")
        data = dict(loaded or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return parse(data)
