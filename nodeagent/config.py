"""The node agent's configuration: a YAML file plus flags for the main keys.

Pure: `parse(mapping)` validates a plain mapping (as `yaml.safe_load` gives it)
into an immutable `AgentConfig`, and every problem is a `ConfigError` whose
message names the key ("podman.call_timeout: must be a number > 0, got 'x'").
No threads; nothing here touches the host except `load` reading the file.

docs/agent.md is the reference for every key; keep the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corral import names, quantity
from corral.configfile import (
    ConfigError,
    HostDaemonConfig,
    boolean,
    check_keys,
    check_networks,
    common,
    fail,
    integer,
    load_mapping,
    mapping,
    seconds,
    string,
)
from corral.errors import Invalid

__all__ = ["AgentConfig", "BackoffConfig", "ConfigError", "FencingConfig", "PodmanConfig",
           "TaintConfig", "load", "parse", "with_overrides"]


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
class FencingConfig:
    # Stop the pods that carry an identity (StatefulSet pods) when no heartbeat was
    # acknowledged for `after` seconds; SIGKILL at most `grace` seconds after SIGTERM.
    # after + grace + ~1.5 s must stay below the control plane's
    # node_monitor_grace_period + pod_eviction_timeout (docs/agent.md, fence.py).
    enabled: bool = True
    after: float = 20.0
    grace: float = 5.0


@dataclass(frozen=True)
class AgentConfig(HostDaemonConfig):
    state_dir: str = "/var/lib/corral-agent"
    agent_port: int = 10250
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
    podman: PodmanConfig = field(default_factory=PodmanConfig)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    fencing: FencingConfig = field(default_factory=FencingConfig)

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
    "netns_prefix", "masquerade", "log_level", "podman", "backoff", "fencing",
}
_PODMAN_KEYS = {
    "binary", "containers_conf", "storage_driver", "storage_root", "run_root", "tmp_dir",
    "additional_image_stores", "cgroup_parent", "call_timeout", "pull_timeout",
    "restart_unhealthy_after", "parallel_starts",
}
_BACKOFF_KEYS = {"base", "max", "reset_after"}
_FENCING_KEYS = {"enabled", "after", "grace"}
# Fencing sooner than this many missed lease renewals would fence on one slow write.
FENCE_MIN_RENEWALS = 3
_RESERVED_KEYS = {"cpu", "memory"}
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _taint(value: Any, key: str) -> TaintConfig:
    """A taint as a mapping {key, value, effect} or as kubectl writes it: k=v:Effect."""
    if isinstance(value, str):
        body, sep, effect = value.rpartition(":")
        if not sep:
            raise fail(key, f"must be KEY[=VALUE]:EFFECT, got {value!r}")
        tkey, _, tvalue = body.partition("=")
    elif isinstance(value, Mapping):
        check_keys(value, {"key", "value", "effect"}, key)
        tkey = string(value.get("key", ""), f"{key}.key")
        tvalue = string(value.get("value", ""), f"{key}.value")
        effect = string(value.get("effect", ""), f"{key}.effect")
    else:
        raise fail(key, f"must be a mapping or KEY[=VALUE]:EFFECT, got {value!r}")
    problems = names.check_qualified_name(tkey)
    if problems:
        raise fail(key, f"key {tkey!r}: {'; '.join(problems)}")
    if effect not in _EFFECTS:
        raise fail(key, f"effect must be one of {', '.join(_EFFECTS)}, got {effect!r}")
    return TaintConfig(tkey, tvalue, effect)


def parse(data: Mapping[str, Any]) -> AgentConfig:
    """Validate a configuration mapping; raises ConfigError naming the first bad key."""
    data = mapping(data, "config")
    check_keys(data, _TOP_KEYS, "")

    kwargs = common(data, node_ip_means="the node's InternalIP (the agent serves on it "
                                        "and other nodes route this node's pod CIDR to it)")
    if "agent_port" in data:
        kwargs["agent_port"] = integer(data["agent_port"], "agent_port", 1, 65535)

    labels = mapping(data.get("labels"), "labels")
    checked: dict[str, str] = {}
    for lkey, lvalue in labels.items():
        where = f"labels.{lkey}"
        problems = names.check_qualified_name(string(lkey, where))
        if problems:
            raise fail(where, "; ".join(problems))
        value = "" if lvalue is None else str(lvalue)
        problems = names.check_label_value(value)
        if problems:
            raise fail(where, "; ".join(problems))
        checked[lkey] = value
    kwargs["labels"] = checked

    taints = data.get("taints") or []
    if not isinstance(taints, list):
        raise fail("taints", "must be a list")
    kwargs["taints"] = tuple(_taint(t, f"taints[{i}]") for i, t in enumerate(taints))

    reserved = mapping(data.get("reserved"), "reserved")
    check_keys(reserved, _RESERVED_KEYS, "reserved")
    try:
        if "cpu" in reserved:
            kwargs["reserved_cpu_millis"] = quantity.cpu_millis(str(reserved["cpu"]),
                                                                "reserved.cpu")
        if "memory" in reserved:
            kwargs["reserved_memory_bytes"] = quantity.bytes_of(str(reserved["memory"]),
                                                                "reserved.memory")
    except Invalid as err:
        raise fail(err.field, err.reason) from None

    for key in ("lease_period", "status_period", "relist_period"):
        if key in data:
            kwargs[key] = seconds(data[key], key)
    if "lease_duration" in data:
        kwargs["lease_duration"] = integer(data["lease_duration"], "lease_duration", 1, 3600)
    lease_period = kwargs.get("lease_period", AgentConfig.lease_period)
    lease_duration = kwargs.get("lease_duration", AgentConfig.lease_duration)
    if lease_duration <= lease_period:
        raise fail("lease_duration", f"must be longer than lease_period ({lease_period:g} s), "
                                      f"got {lease_duration}")
    if "bridge" in data:
        bridge = string(data["bridge"], "bridge")
        if not _IFNAME.match(bridge):
            raise fail("bridge", f"must be an interface name of 1-15 characters, got {bridge!r}")
        kwargs["bridge"] = bridge
    if "netns_prefix" in data:
        prefix = string(data["netns_prefix"], "netns_prefix")
        if not _NETNS_PREFIX.match(prefix):
            raise fail("netns_prefix", "must be 1-64 characters of letters, digits, '.', '_' "
                                        f"or '-', got {prefix!r}")
        kwargs["netns_prefix"] = prefix
    if "masquerade" in data:
        kwargs["masquerade"] = boolean(data["masquerade"], "masquerade")
    kwargs["podman"] = _parse_podman(mapping(data.get("podman"), "podman"))
    kwargs["backoff"] = _parse_backoff(mapping(data.get("backoff"), "backoff"))
    kwargs["fencing"] = _parse_fencing(mapping(data.get("fencing"), "fencing"),
                                       kwargs.get("lease_period", AgentConfig.lease_period))

    cfg = AgentConfig(**kwargs)
    check_networks(cfg.cluster_cidr, cfg.service_cidr, cfg.node_ip)
    return cfg


def _parse_podman(data: Mapping[str, Any]) -> PodmanConfig:
    check_keys(data, _PODMAN_KEYS, "podman")
    kwargs: dict[str, Any] = {}
    for key in ("binary", "containers_conf", "storage_driver", "storage_root", "run_root",
                "tmp_dir", "cgroup_parent"):
        if key in data:
            kwargs[key] = string(data[key], f"podman.{key}")
    for key in ("containers_conf", "storage_root", "run_root", "tmp_dir"):
        value = kwargs.get(key, "")
        if value and not Path(value).is_absolute():
            raise fail(f"podman.{key}", f"must be an absolute path, got {value!r}")
    conf = kwargs.get("containers_conf", "")
    if conf and not Path(conf).is_file():
        raise fail("podman.containers_conf", f"no such file: {conf}")
    parent = kwargs.get("cgroup_parent", "")
    if parent and (not parent.startswith("/") or ".." in parent.split("/")):
        raise fail("podman.cgroup_parent", f"must be an absolute cgroup path such as "
                                            f"/corral-node1, got {parent!r}")
    stores = data.get("additional_image_stores") or []
    if not isinstance(stores, list):
        raise fail("podman.additional_image_stores", "must be a list of folders")
    checked = []
    for i, store in enumerate(stores):
        key = f"podman.additional_image_stores[{i}]"
        path = string(store, key, allow_empty=False)
        if not Path(path).is_absolute():
            raise fail(key, f"must be an absolute path, got {path!r}")
        if not Path(path).is_dir():
            raise fail(key, f"no such folder: {path}")
        checked.append(path)
    kwargs["additional_image_stores"] = tuple(checked)
    for key in ("call_timeout", "pull_timeout", "restart_unhealthy_after"):
        if key in data:
            kwargs[key] = seconds(data[key], f"podman.{key}")
    if "parallel_starts" in data:
        kwargs["parallel_starts"] = integer(data["parallel_starts"], "podman.parallel_starts",
                                            1, 64)
    return PodmanConfig(**kwargs)


def _parse_backoff(data: Mapping[str, Any]) -> BackoffConfig:
    check_keys(data, _BACKOFF_KEYS, "backoff")
    kwargs = {key: seconds(data[key], f"backoff.{key}") for key in _BACKOFF_KEYS if key in data}
    cfg = BackoffConfig(**kwargs)
    if cfg.max < cfg.base:
        raise fail("backoff.max", f"must be >= backoff.base ({cfg.base:g}), got {cfg.max:g}")
    return cfg


def _parse_fencing(data: Mapping[str, Any], lease_period: float) -> FencingConfig:
    check_keys(data, _FENCING_KEYS, "fencing")
    kwargs: dict[str, Any] = {}
    if "enabled" in data:
        kwargs["enabled"] = boolean(data["enabled"], "fencing.enabled")
    if "after" in data:
        kwargs["after"] = seconds(data["after"], "fencing.after")
    if "grace" in data:
        kwargs["grace"] = seconds(data["grace"], "fencing.grace", strict=False)
    cfg = FencingConfig(**kwargs)
    if cfg.after < FENCE_MIN_RENEWALS * lease_period:
        raise fail("fencing.after", f"must be at least {FENCE_MIN_RENEWALS} lease periods "
                                    f"({FENCE_MIN_RENEWALS * lease_period:g}s), got {cfg.after:g}")
    return cfg


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Read the YAML file (if any), apply flag overrides (top-level keys), validate."""
    return parse(load_mapping(path, overrides))


def with_overrides(cfg: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy with some fields changed (tests)."""
    return replace(cfg, **changes)
