"""The node agent's configuration: a YAML file plus flags for the main keys.

Pure: `parse(mapping)` validates a plain mapping (as `yaml.safe_load` gives it)
into an immutable `AgentConfig`, and every problem is a `ConfigError` whose
message names the key ("podman.call_timeout: must be a number > 0, got 'x'").
No threads; nothing here touches the host except `load` reading the file.

docs/agent.md is the reference for every key; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from corral import names, quantity
from corral.errors import Invalid


class ConfigError(Exception):
    """A bad configuration; the message names the key."""


@dataclass(frozen=True)
class TaintConfig:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class PodmanConfig:
    binary: str = "podman"
    # Becomes CONTAINERS_CONF of the agent's podman service ("" keeps podman's default).
    containers_conf: str = ""
    storage_driver: str = "overlay"
    # Default: <state_dir>/storage, <state_dir>/run, and for tmp_dir the
    # containers_conf's engine.tmp_dir, else <run_root>/libpod.
    storage_root: str = ""
    run_root: str = ""
    tmp_dir: str = ""
    # Read-only image stores (the lab's shared store holding localhost/busybox).
    additional_image_stores: tuple[str, ...] = ()
    # Parent cgroup of every container (and conmon) of this agent. Default: /corral-<node>.
    cgroup_parent: str = ""
    # Deadline of one Podman API call (create, start, inspect, ...), seconds.
    call_timeout: float = 30.0
    # Deadline of one image pull, seconds.
    pull_timeout: float = 300.0
    # Consecutive seconds without an answer to _ping before the service is restarted.
    restart_unhealthy_after: float = 30.0
    # How many container creates/starts run at once (Podman serializes much of it).
    parallel_starts: int = 4


@dataclass(frozen=True)
class BackoffConfig:
    # Kubernetes: 10 s doubling to 5 min, reset after 10 min of running.
    base: float = 10.0
    max: float = 300.0
    reset_after: float = 600.0


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    node_ip: str
    servers: tuple[str, ...]
    state_dir: str = "/var/lib/corral-agent"
    agent_port: int = 10250
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[TaintConfig, ...] = ()
    reserved_cpu_millis: int = 0
    reserved_memory_bytes: int = 0
    lease_period: float = 2.0
    lease_duration: int = 10
    status_period: float = 10.0
    # Safety-net relist of Podman's containers; the event stream does the fast path.
    relist_period: float = 10.0
    bridge: str = "corral0"
    netns_prefix: str = "corral-"
    masquerade: bool = True
    log_level: str = "info"
    podman: PodmanConfig = field(default_factory=PodmanConfig)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)

    # ---- derived paths ----------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def podman_socket(self) -> Path:
        return self.state_path / "podman.sock"

    @property
    def storage_root(self) -> str:
        return self.podman.storage_root or str(self.state_path / "storage")

    @property
    def run_root(self) -> str:
        return self.podman.run_root or str(self.state_path / "run")

    @property
    def cgroup_parent(self) -> str:
        return self.podman.cgroup_parent or f"/corral-{self.node_name}"


_TOP_KEYS = {
    "node_name", "node_ip", "servers", "state_dir", "agent_port", "cluster_cidr",
    "service_cidr", "cluster_dns", "cluster_domain", "labels", "taints", "reserved",
    "lease_period", "lease_duration", "status_period", "relist_period", "bridge",
    "netns_prefix", "masquerade", "log_level", "podman", "backoff",
}
_PODMAN_KEYS = {
    "binary", "containers_conf", "storage_driver", "storage_root", "run_root", "tmp_dir",
    "additional_image_stores", "cgroup_parent", "call_timeout", "pull_timeout",
    "restart_unhealthy_after", "parallel_starts",
}
_BACKOFF_KEYS = {"base", "max", "reset_after"}
_RESERVED_KEYS = {"cpu", "memory"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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


def _number(value: Any, key: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"must be a number of seconds, got {value!r}")
    if (strict and value <= minimum) or (not strict and value < minimum):
        raise _fail(key, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
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


def _taint(value: Any, key: str) -> TaintConfig:
    """A taint as a mapping {key, value, effect} or as kubectl writes it: k=v:Effect."""
    if isinstance(value, str):
        body, sep, effect = value.rpartition(":")
        if not sep:
            raise _fail(key, f"must be KEY[=VALUE]:EFFECT, got {value!r}")
        tkey, _, tvalue = body.partition("=")
    elif isinstance(value, Mapping):
        _check_keys(value, {"key", "value", "effect"}, key)
        tkey = _str(value.get("key", ""), f"{key}.key")
        tvalue = _str(value.get("value", ""), f"{key}.value")
        effect = _str(value.get("effect", ""), f"{key}.effect")
    else:
        raise _fail(key, f"must be a mapping or KEY[=VALUE]:EFFECT, got {value!r}")
    problems = names.check_qualified_name(tkey)
    if problems:
        raise _fail(key, f"key {tkey!r}: {'; '.join(problems)}")
    if effect not in _EFFECTS:
        raise _fail(key, f"effect must be one of {', '.join(_EFFECTS)}, got {effect!r}")
    return TaintConfig(tkey, tvalue, effect)


def default_node_name() -> str:
    return socket.gethostname().split(".", 1)[0].lower()


def parse(data: Mapping[str, Any]) -> AgentConfig:
    """Validate a configuration mapping; raises ConfigError naming the first bad key."""
    data = _mapping(data, "config")
    _check_keys(data, _TOP_KEYS, "")

    node_name = _str(data.get("node_name") or default_node_name(), "node_name")
    problems = names.check_dns1123_subdomain(node_name)
    if problems:
        raise _fail("node_name", f"{node_name!r}: {'; '.join(problems)}")
    if "node_ip" not in data:
        raise _fail("node_ip", "required: the node's InternalIP (the agent serves on it and "
                               "other nodes route this node's pod CIDR to it)")
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
    if "agent_port" in data:
        kwargs["agent_port"] = _int(data["agent_port"], "agent_port", 1, 65535)
    for key in ("cluster_cidr", "service_cidr"):
        if key in data:
            kwargs[key] = _cidr(data[key], key)
    if "cluster_dns" in data:
        kwargs["cluster_dns"] = _ipv4(data["cluster_dns"], "cluster_dns")
    if "cluster_domain" in data:
        domain = _str(data["cluster_domain"], "cluster_domain", allow_empty=False)
        problems = names.check_dns1123_subdomain(domain)
        if problems:
            raise _fail("cluster_domain", f"{domain!r}: {'; '.join(problems)}")
        kwargs["cluster_domain"] = domain

    labels = _mapping(data.get("labels"), "labels")
    checked: dict[str, str] = {}
    for lkey, lvalue in labels.items():
        where = f"labels.{lkey}"
        problems = names.check_qualified_name(_str(lkey, where))
        if problems:
            raise _fail(where, "; ".join(problems))
        value = "" if lvalue is None else str(lvalue)
        problems = names.check_label_value(value)
        if problems:
            raise _fail(where, "; ".join(problems))
        checked[lkey] = value
    kwargs["labels"] = checked

    taints = data.get("taints") or []
    if not isinstance(taints, list):
        raise _fail("taints", "must be a list")
    kwargs["taints"] = tuple(_taint(t, f"taints[{i}]") for i, t in enumerate(taints))

    reserved = _mapping(data.get("reserved"), "reserved")
    _check_keys(reserved, _RESERVED_KEYS, "reserved")
    try:
        if "cpu" in reserved:
            kwargs["reserved_cpu_millis"] = quantity.cpu_millis(str(reserved["cpu"]),
                                                                "reserved.cpu")
        if "memory" in reserved:
            kwargs["reserved_memory_bytes"] = quantity.bytes_of(str(reserved["memory"]),
                                                                "reserved.memory")
    except Invalid as err:
        raise ConfigError(str(err)) from None

    for key in ("lease_period", "status_period", "relist_period"):
        if key in data:
            kwargs[key] = _number(data[key], key)
    if "lease_duration" in data:
        kwargs["lease_duration"] = _int(data["lease_duration"], "lease_duration", 1, 3600)
    lease_period = kwargs.get("lease_period", AgentConfig.lease_period)
    lease_duration = kwargs.get("lease_duration", AgentConfig.lease_duration)
    if lease_duration <= lease_period:
        raise _fail("lease_duration", f"must be longer than lease_period ({lease_period:g} s), "
                                      f"got {lease_duration}")
    if "bridge" in data:
        bridge = _str(data["bridge"], "bridge")
        if not _IFNAME.match(bridge):
            raise _fail("bridge", f"must be an interface name of 1-15 characters, got {bridge!r}")
        kwargs["bridge"] = bridge
    if "netns_prefix" in data:
        prefix = _str(data["netns_prefix"], "netns_prefix")
        if not _NETNS_PREFIX.match(prefix):
            raise _fail("netns_prefix", "must be 1-64 characters of letters, digits, '.', '_' "
                                        f"or '-', got {prefix!r}")
        kwargs["netns_prefix"] = prefix
    if "masquerade" in data:
        kwargs["masquerade"] = _bool(data["masquerade"], "masquerade")
    if "log_level" in data:
        level = _str(data["log_level"], "log_level").lower()
        if level not in _LOG_LEVELS:
            raise _fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
        kwargs["log_level"] = level
    kwargs["podman"] = _parse_podman(_mapping(data.get("podman"), "podman"))
    kwargs["backoff"] = _parse_backoff(_mapping(data.get("backoff"), "backoff"))

    cfg = AgentConfig(**kwargs)
    cluster = ipaddress.IPv4Network(cfg.cluster_cidr)
    service = ipaddress.IPv4Network(cfg.service_cidr)
    if cluster.overlaps(service):
        raise _fail("service_cidr", f"{cfg.service_cidr} overlaps cluster_cidr {cfg.cluster_cidr}")
    if ipaddress.IPv4Address(cfg.node_ip) in cluster:
        raise _fail("node_ip", f"{cfg.node_ip} is inside cluster_cidr {cfg.cluster_cidr}")
    return cfg


def _parse_podman(data: Mapping[str, Any]) -> PodmanConfig:
    _check_keys(data, _PODMAN_KEYS, "podman")
    kwargs: dict[str, Any] = {}
    for key in ("binary", "containers_conf", "storage_driver", "storage_root", "run_root",
                "tmp_dir", "cgroup_parent"):
        if key in data:
            kwargs[key] = _str(data[key], f"podman.{key}")
    for key in ("containers_conf", "storage_root", "run_root", "tmp_dir"):
        value = kwargs.get(key, "")
        if value and not Path(value).is_absolute():
            raise _fail(f"podman.{key}", f"must be an absolute path, got {value!r}")
    conf = kwargs.get("containers_conf", "")
    if conf and not Path(conf).is_file():
        raise _fail("podman.containers_conf", f"no such file: {conf}")
    parent = kwargs.get("cgroup_parent", "")
    if parent and (not parent.startswith("/") or ".." in parent.split("/")):
        raise _fail("podman.cgroup_parent", f"must be an absolute cgroup path such as "
                                            f"/corral-node1, got {parent!r}")
    stores = data.get("additional_image_stores") or []
    if not isinstance(stores, list):
        raise _fail("podman.additional_image_stores", "must be a list of folders")
    checked = []
    for i, store in enumerate(stores):
        key = f"podman.additional_image_stores[{i}]"
        path = _str(store, key, allow_empty=False)
        if not Path(path).is_absolute():
            raise _fail(key, f"must be an absolute path, got {path!r}")
        if not Path(path).is_dir():
            raise _fail(key, f"no such folder: {path}")
        checked.append(path)
    kwargs["additional_image_stores"] = tuple(checked)
    for key in ("call_timeout", "pull_timeout", "restart_unhealthy_after"):
        if key in data:
            kwargs[key] = _number(data[key], f"podman.{key}")
    if "parallel_starts" in data:
        kwargs["parallel_starts"] = _int(data["parallel_starts"], "podman.parallel_starts", 1, 64)
    return PodmanConfig(**kwargs)


def _parse_backoff(data: Mapping[str, Any]) -> BackoffConfig:
    _check_keys(data, _BACKOFF_KEYS, "backoff")
    kwargs = {key: _number(data[key], f"backoff.{key}") for key in _BACKOFF_KEYS if key in data}
    cfg = BackoffConfig(**kwargs)
    if cfg.max < cfg.base:
        raise _fail("backoff.max", f"must be >= backoff.base ({cfg.base:g}), got {cfg.max:g}")
    return cfg


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Read the YAML file (if any), apply flag overrides (top-level keys), validate."""
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"--config: cannot read {path}: {err.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: {path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} must hold a mapping of keys")
        data = dict(loaded or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return parse(data)


def with_overrides(cfg: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy with some fields changed (tests)."""
    return replace(cfg, **changes)
