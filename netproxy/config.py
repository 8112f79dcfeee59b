"""The netproxy's configuration: a YAML file plus flags for the main keys.

Pure: `parse(mapping)` validates a plain mapping (as `yaml.safe_load` gives it)
into an immutable `ProxyConfig`; every problem is a `ConfigError` whose message
names the key ("dns.port: must be between 1 and 65535, got 0"). No threads;
nothing here touches the host except `load` reading the file.

docs/netproxy.md is the reference for every key; keep the two in step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.configfile import (
    ConfigError,
    HostDaemonConfig,
    boolean,
    check_keys,
    check_networks,
    common,
    fail,
    integer,
    ipv4,
    load_mapping,
    mapping,
    seconds,
    string,
)

__all__ = ["ConfigError", "DnsConfig", "IptablesConfig", "ProxyConfig", "load", "parse"]


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
class ProxyConfig(HostDaemonConfig):
    state_dir: str = "/var/lib/corral-netproxy"
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
_POD_MODES = ("verified", "insecure", "disabled")


def _hostport(value: Any, key: str, *, default_port: int | None = None) -> str:
    """"IP:PORT" (or a bare IP when `default_port` is given)."""
    text = string(value, key, allow_empty=False).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise fail(key, f"must be HOST:PORT such as 127.0.0.1:10249, got {text!r}")
        host, port = text, str(default_port)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise fail(key, f"must name an IPv4 address, got {text!r}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise fail(key, f"port must be 0-65535, got {text!r}")
    return f"{host}:{int(port)}"


def parse(data: Mapping[str, Any]) -> ProxyConfig:
    """Validate a configuration mapping; raises ConfigError naming the first bad key."""
    data = mapping(data, "config")
    check_keys(data, _TOP_KEYS, "")

    kwargs = common(data, node_ip_means="the host's address (node ports answer on it and "
                                        "the DNS server listens on it by default)")
    if "min_sync_period" in data:
        value = data["min_sync_period"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise fail("min_sync_period", f"must be a number of seconds >= 0, got {value!r}")
        kwargs["min_sync_period"] = float(value)
    if "full_sync_period" in data:
        kwargs["full_sync_period"] = seconds(data["full_sync_period"], "full_sync_period")
    if "masquerade_bit" in data:
        kwargs["masquerade_bit"] = integer(data["masquerade_bit"], "masquerade_bit", 0, 31)
    if "metrics_address" in data:
        addr = string(data["metrics_address"], "metrics_address")
        kwargs["metrics_address"] = _hostport(addr, "metrics_address") if addr else ""
    if "bridge_nf_call_iptables" in data:
        kwargs["bridge_nf_call_iptables"] = boolean(data["bridge_nf_call_iptables"],
                                                  "bridge_nf_call_iptables")
    kwargs["iptables"] = _parse_iptables(mapping(data.get("iptables"), "iptables"))
    kwargs["dns"] = _parse_dns(mapping(data.get("dns"), "dns"))

    cfg = ProxyConfig(**kwargs)
    check_networks(cfg.cluster_cidr, cfg.service_cidr, cfg.node_ip)
    if ipaddress.IPv4Address(cfg.cluster_dns) not in ipaddress.IPv4Network(cfg.service_cidr):
        raise fail("cluster_dns", f"{cfg.cluster_dns} is outside service_cidr {cfg.service_cidr}")
    return cfg


def _parse_iptables(data: Mapping[str, Any]) -> IptablesConfig:
    check_keys(data, _IPTABLES_KEYS, "iptables")
    kwargs: dict[str, Any] = {}
    for key in ("restore", "save", "conntrack"):
        if key in data:
            kwargs[key] = string(data[key], f"iptables.{key}", allow_empty=False)
    if "timeout" in data:
        kwargs["timeout"] = seconds(data["timeout"], "iptables.timeout")
    return IptablesConfig(**kwargs)


def _parse_dns(data: Mapping[str, Any]) -> DnsConfig:
    check_keys(data, _DNS_KEYS, "dns")
    kwargs: dict[str, Any] = {}
    if "enabled" in data:
        kwargs["enabled"] = boolean(data["enabled"], "dns.enabled")
    if data.get("listen"):
        kwargs["listen"] = ipv4(data["listen"], "dns.listen")
    if "port" in data:
        kwargs["port"] = integer(data["port"], "dns.port", 1, 65535)
    upstream = data.get("upstream") or []
    if isinstance(upstream, str):
        upstream = [u for u in upstream.split(",") if u.strip()]
    if not isinstance(upstream, list):
        raise fail("dns.upstream", "must be a list of IP or IP:PORT")
    kwargs["upstream"] = tuple(_hostport(u, f"dns.upstream[{i}]", default_port=53)
                               for i, u in enumerate(upstream))
    if "resolv_conf" in data:
        kwargs["resolv_conf"] = string(data["resolv_conf"], "dns.resolv_conf", allow_empty=False)
    if "ttl" in data:
        kwargs["ttl"] = integer(data["ttl"], "dns.ttl", 0, 86400)
    if "pods" in data:
        mode = string(data["pods"], "dns.pods")
        if mode not in _POD_MODES:
            raise fail("dns.pods", f"must be one of {', '.join(_POD_MODES)}, got {mode!r}")
        kwargs["pods"] = mode
    if "forward_timeout" in data:
        kwargs["forward_timeout"] = seconds(data["forward_timeout"], "dns.forward_timeout")
    return DnsConfig(**kwargs)


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> ProxyConfig:
    """Read the YAML file (if any), apply flag overrides (top-level keys), validate."""
    return parse(load_mapping(path, overrides))
