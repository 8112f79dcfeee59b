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
from dataclasses import dataclass, field, fields
from typing import Any

from corral.errors import Invalid

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
        if data is None:
            return ControllersConfig()
        if not isinstance(data, Mapping):
            raise Invalid(f"must be a mapping, got {type(data).__name__}", where)
        known = {f.name: f for f in fields(ControllersConfig)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{where}.{key}"
            f = known.get(key)
            if f is None:
                raise Invalid(f"unknown key (known: {', '.join(sorted(known))})", path)
            default = getattr(ControllersConfig(), key)
            if key == "disabled":
                if not isinstance(value, list | tuple) or not all(
                        isinstance(v, str) for v in value):
                    raise Invalid("must be a list of controller names", path)
                bad = [v for v in value if v not in CONTROLLER_NAMES]
                if bad:
                    raise Invalid(f"unknown controller {bad[0]!r} (known: "
                                  f"{', '.join(CONTROLLER_NAMES)})", path)
                values[key] = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise Invalid(f"must be true or false, got {value!r}", path)
                values[key] = value
            elif isinstance(default, str):
                if not isinstance(value, str) or not value:
                    raise Invalid(f"must be a non-empty string, got {value!r}", path)
                values[key] = value
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise Invalid(f"must be a positive integer, got {value!r}", path)
                values[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise Invalid(f"must be a number of seconds >= 0, got {value!r}", path)
                values[key] = float(value)
        cfg = ControllersConfig(**values)
        if cfg.job_backoff_max < cfg.job_backoff_base:
            raise Invalid("must be >= job_backoff_base", f"{where}.job_backoff_max")
        return cfg

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    @property
    def node_failure_budget(self) -> float:
        """Seconds from a node's last lease renewal until its pods are evicted."""
        return self.node_monitor_grace_period + self.pod_eviction_timeout
