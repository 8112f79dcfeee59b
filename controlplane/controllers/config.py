"""The `controllers:` mapping of the control plane's config file.

Every key is optional; an unknown key or a bad value is an error that names it
(a typo must not silently fall back to a default).

    controllers:
      node_monitor_grace_period: 10     # s without a lease renewal -> Ready=Unknown
      pod_eviction_timeout: 20          # s more -> the node's pods are evicted
      node_lease_namespace: corral-system
      event_ttl: 3600                   # s an Event is kept
      volume_root: /var/lib/corral/volumes   # PVC folders: NODE:ROOT/NAMESPACE/CLAIM-UID
      job_backoff_base: 10              # s before re-creating a failed Job pod, doubling
      job_backoff_max: 360
      workers: 2                        # worker threads per controller
      resync_period: 30                 # s between full re-checks (safety net)
      scheduler_bind_workers: 16        # concurrent binding writes
      scheduler_batch_size: 1000        # pods scheduled against one snapshot
      unschedulable_retry: 30           # s before an unschedulable pod is tried again
                                        # without any cluster change
      in_process: true                  # call this replica's API handler directly
                                        # (false: gRPC on its own socket)
      disabled: []                      # controller names to leave off (tests)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral import configfile

CONTROLLER_NAMES = (
    "scheduler", "replicaset", "deployment", "statefulset", "daemonset", "job", "endpoints",
    "garbagecollector", "nodelifecycle", "pvcbinding", "eventttl",
)


@dataclass(frozen=True)
class ControllersConfig:
    node_monitor_grace_period: float = 10.0
    pod_eviction_timeout: float = 20.0
    node_lease_namespace: str = "corral-system"
    event_ttl: float = 3600.0
    volume_root: str = "/var/lib/corral/volumes"
    job_backoff_base: float = 10.0
    job_backoff_max: float = 360.0
    workers: int = 2
    resync_period: float = 30.0
    scheduler_bind_workers: int = 16
    scheduler_batch_size: int = 1000
    unschedulable_retry: float = 30.0
    in_process: bool = True
    disabled: tuple[str, ...] = field(default_factory=tuple)

    @staticmethod
    def from_mapping(data: Mapping[str, Any] | None,
                     where: str = "controllers") -> ControllersConfig:
        """The `controllers:` section: every key optional, named as the fields; an
        unknown key or a bad value raises ConfigError naming it."""
        cfg = ControllersConfig(**configfile.dataclass_section(
            data, ControllersConfig, where, {"disabled": _controller_names}))
        if cfg.job_backoff_max < cfg.job_backoff_base:
            raise configfile.fail(f"{where}.job_backoff_max", "must be >= job_backoff_base")
        return cfg

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    @property
    def node_failure_budget(self) -> float:
        """Seconds from a node's last lease renewal until its pods are evicted."""
        return self.node_monitor_grace_period + self.pod_eviction_timeout


def _controller_names(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise configfile.fail(key, "must be a list of controller names")
    bad = [v for v in value if v not in CONTROLLER_NAMES]
    if bad:
        raise configfile.fail(key, f"unknown controller {bad[0]!r} "
                                   f"(known: {', '.join(CONTROLLER_NAMES)})")
    return tuple(value)
