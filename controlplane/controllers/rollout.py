"""Deployment arithmetic shared by the controller and by `corral rollout`: pure helpers.

Kubernetes' deployment/util in Python: template hashes, revisions, the
maxSurge/maxUnavailable fenceposts, the replica-count annotations.

Threads model: pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from corral.v1 import apps_pb2, core_pb2

from .podutil import POD_TEMPLATE_HASH, copy

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Deployment annotations that are not copied to its ReplicaSets (Kubernetes' list).
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
    DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to",
}
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: core_pb2.PodTemplateSpec, collision_count: int | None = None) -> str:
    """Kubernetes' ComputeHash shape: FNV-32a of the template (and the collision
    count), its decimal digits mapped to the "safe" alphabet (no vowels)."""
    t = copy(template)
    t.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    data = t.SerializeToString(deterministic=True)
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(fnv32a(data)))


def templates_equal(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Equal ignoring the pod-template-hash label (EqualIgnoreHash)."""
    a2, b2 = copy(a), copy(b)
    a2.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    b2.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return bool(a2 == b2)


def revision(obj: Any) -> int:
    try:
        return int(obj.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def replicas(obj: Any) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def _int_or_percent(value: Any, total: int, round_up: bool, default: str) -> int:
    kind = value.WhichOneof("kind") if value is not None else None
    if kind == "number_value":
        return int(value.number_value)
    text = value.string_value if kind == "string_value" else default
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            pct = int(default[:-1]) if default.endswith("%") else 0
        scaled = pct * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    try:
        return int(text)
    except ValueError:
        return 0


def is_rolling(d: apps_pb2.Deployment) -> bool:
    return d.spec.strategy.type in ("", "RollingUpdate")


def fenceposts(d: apps_pb2.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas (ResolveFenceposts)."""
    ru = d.spec.strategy.rolling_update
    want = replicas(d)
    surge = _int_or_percent(ru.max_surge if ru.HasField("max_surge") else None, want, True, "25%")
    unavailable = _int_or_percent(ru.max_unavailable if ru.HasField("max_unavailable") else None,
                                  want, False, "25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: apps_pb2.Deployment) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: apps_pb2.Deployment) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


def daemonset_max_unavailable(value: Any, total: int) -> int:
    if value is None or value.WhichOneof("kind") is None:
        return 1
    return _int_or_percent(value, total, True, "1")


def annotations_for_rs(d: apps_pb2.Deployment) -> dict[str, str]:
    return {k: v for k, v in d.metadata.annotations.items() if k not in _NOT_COPIED}


def sum_spec(rss: Iterable[apps_pb2.ReplicaSet | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def sum_status(rss: Iterable[apps_pb2.ReplicaSet | None], field: str) -> int:
    return sum(getattr(rs.status, field) for rs in rss if rs is not None)
