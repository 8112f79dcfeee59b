"""What every Corral daemon's configuration file has in common: reading the YAML,
flag overrides, the checks of single values and of a section that maps onto a
dataclass, each failing with a `ConfigError` whose message starts with the key
("podman.call_timeout: must be a number of seconds, got 'soon'"), so `main` can
print one line and exit 2.

Used by controlplane/config.py (with its `raft:` and `controllers:` sections),
nodeagent/config.py and netproxy/config.py, which own their keys, defaults and
cross-checks. Pure: no threads, nothing touches the host except `read_yaml`.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from corral import names

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad configuration; the message starts with the key (`key`, "" when the
    fault is the file as a whole)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class HostDaemonConfig:
    """The settings every per-host daemon has (`common()` checks them). A subclass
    adds its own keys (all with defaults) and may change the state_dir default."""

    node_name: str
    node_ip: str
    servers: tuple[str, ...]
    state_dir: str = ""
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    log_level: str = "info"


def fail(key: str, message: str) -> ConfigError:
    return ConfigError(key, message)


def check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Unknown keys are errors (a typo must not silently fall back to a default)."""
    for key in data:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise fail(path, f"unknown key (known: {', '.join(sorted(allowed))})")


def mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def string(value: Any, key: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise fail(key, f"must be a string, got {value!r}")
    if not allow_empty and not value.strip():
        raise fail(key, "must not be empty")
    return value


def seconds(value: Any, key: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    """A duration in seconds: > minimum (strict) or >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise fail(key, f"must be a number of seconds, got {value!r}")
    if (strict and value <= minimum) or (not strict and value < minimum):
        raise fail(key, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def integer(value: Any, key: str, lo: int, hi: int | None = None) -> int:
    """A whole number in [lo, hi] (no upper bound without hi); 3.0 counts as 3,
    since YAML writers sometimes emit one."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(key, f"must be an integer, got {value!r}")
    if hi is None and value < lo:
        raise fail(key, f"must be at least {lo}, got {value}")
    if hi is not None and not lo <= value <= hi:
        raise fail(key, f"must be between {lo} and {hi}, got {value}")
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise fail(key, f"must be true or false, got {value!r}")
    return value


def ipv4(value: Any, key: str) -> str:
    text = string(value, key, allow_empty=False)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise fail(key, f"must be an IPv4 address, got {text!r}") from None


def cidr(value: Any, key: str) -> str:
    text = string(value, key, allow_empty=False)
    try:
        return str(ipaddress.IPv4Network(text, strict=True))
    except ValueError as err:
        raise fail(key, f"must be an IPv4 CIDR such as 10.244.0.0/16, got {text!r} ({err})") \
            from None


def absolute_path(value: Any, key: str) -> str:
    path = string(value, key, allow_empty=False)
    if not Path(path).is_absolute():
        raise fail(key, f"must be an absolute path, got {path!r}")
    return path


def dns_subdomain(value: Any, key: str) -> str:
    text = string(value, key, allow_empty=False)
    problems = names.check_dns1123_subdomain(text)
    if problems:
        raise fail(key, f"{text!r}: {'; '.join(problems)}")
    return text


def log_level(value: Any, key: str = "log_level") -> str:
    level = string(value, key).lower()
    if level not in LOG_LEVELS:
        raise fail(key, f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def servers(value: Any, key: str = "servers") -> tuple[str, ...]:
    """Control plane endpoints: a list, or one comma-separated string (a flag)."""
    if isinstance(value, str):
        value = [s for s in value.split(",") if s.strip()]
    if not isinstance(value, list) or not value:
        raise fail(key, "required: a list of control plane endpoints "
                        "(HOST:PORT or unix:/path/to/socket)")
    return tuple(string(s, f"{key}[{i}]", allow_empty=False).strip()
                 for i, s in enumerate(value))


def default_node_name() -> str:
    return socket.gethostname().split(".", 1)[0].lower()


def node_name(data: Mapping[str, Any]) -> str:
    """`node_name`, default the host name; a DNS-1123 subdomain."""
    return dns_subdomain(data.get("node_name") or default_node_name(), "node_name")


def read_yaml(path: str) -> dict[str, Any]:
    """The mapping a YAML config file holds (empty for an empty file)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError("", f"config file {path}: cannot read: {err.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"config file {path}: not valid YAML{where}: "
                              f"{getattr(err, 'problem', None) or err}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("", f"config file {path}: must be a mapping of keys, "
                              f"got {type(loaded).__name__}")
    return dict(loaded or {})


def load_mapping(path: str | None, overrides: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The YAML file's mapping (empty without a file), with the flags that were given
    (not None) laid over its top-level keys. Validation is the caller's."""
    data = read_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return data


Convert = Callable[[Any, str], Any]


def dataclass_section(data: Any, cls: type, where: str,
                      special: Mapping[str, Convert] | None = None) -> dict[str, Any]:
    """A section (`raft:`, `controllers:`) whose keys are the fields of the
    dataclass `cls` (every field has a default): the keyword arguments the
    section gives, each checked by the type of the field's default (bool, str
    not empty, int >= 1, float seconds >= 0) or by its `special` converter.
    Cross-field rules stay with the caller."""
    section = mapping(data, where)
    defaults = cls()
    known = {f.name for f in fields(cls)}
    check_keys(section, known, where)
    out: dict[str, Any] = {}
    for key, value in section.items():
        path = f"{where}.{key}"
        convert = (special or {}).get(key) or _by_default(getattr(defaults, key))
        out[key] = convert(value, path)
    return out


def _by_default(default: Any) -> Convert:
    if isinstance(default, bool):
        return boolean
    if isinstance(default, str):
        return lambda value, key: string(value, key, allow_empty=False)
    if isinstance(default, int):
        return lambda value, key: integer(value, key, 1)
    if isinstance(default, float):
        return lambda value, key: seconds(value, key, strict=False)
    raise TypeError(f"no converter for a field like {default!r}: pass a special one")


def common(data: Mapping[str, Any], *, node_ip_means: str) -> dict[str, Any]:
    """The keys every per-host daemon shares, checked, as keyword arguments for its
    config class (only those given, apart from the required ones): node_name,
    node_ip (required; `node_ip_means` says what it is for), servers (required),
    state_dir, cluster_cidr, service_cidr, cluster_dns, cluster_domain, log_level."""
    if "node_ip" not in data:
        raise fail("node_ip", f"required: {node_ip_means}")
    out: dict[str, Any] = {"node_name": node_name(data),
                           "node_ip": ipv4(data["node_ip"], "node_ip"),
                           "servers": servers(data.get("servers"))}
    if "state_dir" in data:
        out["state_dir"] = absolute_path(data["state_dir"], "state_dir")
    for key in ("cluster_cidr", "service_cidr"):
        if key in data:
            out[key] = cidr(data[key], key)
    if "cluster_dns" in data:
        out["cluster_dns"] = ipv4(data["cluster_dns"], "cluster_dns")
    if "cluster_domain" in data:
        domain = string(data["cluster_domain"], "cluster_domain", allow_empty=False)
        out["cluster_domain"] = dns_subdomain(domain.strip("."), "cluster_domain")
    if "log_level" in data:
        out["log_level"] = log_level(data["log_level"])
    return out


def check_networks(cluster_cidr: str, service_cidr: str, node_ip: str) -> None:
    """The pod and service networks are apart, and the node is in neither's pod range."""
    cluster = ipaddress.IPv4Network(cluster_cidr)
    service = ipaddress.IPv4Network(service_cidr)
    if cluster.overlaps(service):
        raise fail("service_cidr", f"{service_cidr} overlaps cluster_cidr {cluster_cidr}")
    if ipaddress.IPv4Address(node_ip) in cluster:
        raise fail("node_ip", f"{node_ip} is inside cluster_cidr {cluster_cidr}")
