"""Validation of every kind Corral serves, as Kubernetes validates them.

`validate(info, obj, settings)` checks a defaulted object before any write and
raises `corral.errors.Invalid` listing every problem with its field path
(`spec.template.spec.containers[0].ports[1].containerPort: must be between 1
and 65535, got 70000`). `check_update(kind, old, new)` adds the rules about
what an update may not change (FailedPrecondition).

Pure functions, no I/O: safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.api.settings import ApiSettings
from controlplane.api.validation.common import (
    NameCheck,
    check_dns1035_label,
    check_metadata,
    check_unknown_fields,
)
from controlplane.api.validation.errors import Errors
from controlplane.api.validation.immutable import check_update
from controlplane.api.validation.other import (
    validate_config_map,
    validate_event,
    validate_lease,
    validate_namespace,
    validate_node,
    validate_pvc,
    validate_secret,
)
from controlplane.api.validation.pod import validate_pod_spec
from controlplane.api.validation.service import validate_endpoints, validate_service
from controlplane.api.validation.workloads import (
    validate_daemon_set,
    validate_deployment,
    validate_job,
    validate_replica_set,
    validate_stateful_set,
)
from corral.kinds import KindInfo
from corral.names import check_dns1123_label, check_dns1123_subdomain

# Names that become DNS labels (or label values) must be labels.
NAME_RULES: dict[str, NameCheck] = {
    "Namespace": check_dns1123_label,
    "Service": check_dns1035_label,
    "Endpoints": check_dns1035_label,
    # A Job's name becomes the job-name label value of its pods (63 characters).
    "Job": check_dns1123_label,
}

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def _pod(obj: Any, errs: Errors, settings: ApiSettings) -> None:
    validate_pod_spec(obj.spec, "spec", errs)
    if obj.status.phase and obj.status.phase not in POD_PHASES:
        errs.unsupported("status.phase", obj.status.phase, POD_PHASES)


_BY_KIND: dict[str, Callable[[Any, Errors, ApiSettings], None]] = {
    "Namespace": lambda o, e, s: validate_namespace(o, e),
    "Node": validate_node,
    "Pod": _pod,
    "Service": validate_service,
    "Endpoints": lambda o, e, s: validate_endpoints(o, e),
    "ConfigMap": lambda o, e, s: validate_config_map(o, e),
    "Secret": lambda o, e, s: validate_secret(o, e),
    "Event": lambda o, e, s: validate_event(o, e),
    "PersistentVolumeClaim": lambda o, e, s: validate_pvc(o, e),
    "Lease": lambda o, e, s: validate_lease(o, e),
    "Deployment": lambda o, e, s: validate_deployment(o, e),
    "ReplicaSet": lambda o, e, s: validate_replica_set(o, e),
    "StatefulSet": lambda o, e, s: validate_stateful_set(o, e),
    "DaemonSet": lambda o, e, s: validate_daemon_set(o, e),
    "Job": lambda o, e, s: validate_job(o, e),
}


def describe(info: KindInfo, obj: Any) -> str:
    """'Pod "default/web"': how validation errors name an object."""
    m = obj.metadata
    name = m.name or f"{m.generate_name}*"
    return f'{info.kind} "{m.namespace}/{name}"' if m.namespace else f'{info.kind} "{name}"'


def validate(info: KindInfo, obj: Any, settings: ApiSettings) -> None:
    errs = Errors()
    check_unknown_fields(obj, "", errs)
    if obj.api_version and obj.api_version != info.api_version:
        errs.add("apiVersion", f"{info.kind} is served as {info.api_version!r}, "
                               f"got {obj.api_version!r}")
    if obj.kind and obj.kind != info.kind:
        errs.add("kind", f"does not match the object's type {info.kind!r}, got {obj.kind!r}")
    rule = NAME_RULES.get(info.kind, check_dns1123_subdomain)
    check_metadata(obj.metadata, info.namespaced, rule, errs)
    _BY_KIND[info.kind](obj, errs, settings)
    errs.raise_if_any(describe(info, obj))


__all__ = ["Errors", "check_update", "describe", "validate"]
