"""What an update may not change, per kind (Kubernetes' ValidateXUpdate rules).

`check_update(kind, old, new)` compares the stored object with the object about
to be written (after the handler kept server-allocated fields) and raises
`FailedPrecondition` naming the field that changed.
"""

from __future__ import annotations

from typing import Any

from controlplane.api.validation.errors import Errors
from corral.errors import FailedPrecondition
from corral.v1 import core_pb2

_POD_MUTABLE = ("pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
                "`spec.tolerations` (only additions to existing tolerations) and "
                "`spec.nodeName` (only from empty)")
_STS_MUTABLE = ("updates to statefulset spec for fields other than 'replicas', 'template', "
                "'updateStrategy' and 'minReadySeconds' are forbidden")


def _immutable(errs: Errors, path: str, old: object, new: object) -> None:
    if old != new:
        errs.add(path, "field is immutable")


def _pod_spec(old: core_pb2.PodSpec, new: core_pb2.PodSpec, path: str, errs: Errors) -> None:
    if old.node_name and new.node_name != old.node_name:
        errs.add(f"{path}.nodeName", f"field is immutable once set (bound to {old.node_name!r})")
    if old.HasField("active_deadline_seconds"):
        if not new.HasField("active_deadline_seconds"):
            errs.add(f"{path}.activeDeadlineSeconds", "may not be unset once set")
        elif new.active_deadline_seconds > old.active_deadline_seconds:
            errs.add(f"{path}.activeDeadlineSeconds",
                     f"may not be increased (from {old.active_deadline_seconds} to "
                     f"{new.active_deadline_seconds})")
    old_tol = [t.SerializeToString(deterministic=True) for t in old.tolerations]
    new_tol = [t.SerializeToString(deterministic=True) for t in new.tolerations]
    if any(t not in new_tol for t in old_tol):
        errs.add(f"{path}.tolerations", "existing tolerations may not be removed or changed "
                                        "(only additions)")
    # Neutralise every field that may change, then any remaining difference is forbidden.
    a, b = core_pb2.PodSpec(), core_pb2.PodSpec()
    a.CopyFrom(old)
    b.CopyFrom(new)
    for spec in (a, b):
        spec.ClearField("active_deadline_seconds")
        spec.ClearField("tolerations")
        spec.ClearField("node_name")
    for group in ("containers", "init_containers"):
        ga, gb = getattr(a, group), getattr(b, group)
        if len(ga) == len(gb):
            for ca, cb in zip(ga, gb, strict=True):
                ca.image = cb.image = ""
    if a != b:
        errs.add(path, _POD_MUTABLE)


def _workload_selector(old: Any, new: Any, errs: Errors) -> None:
    _immutable(errs, "spec.selector", old.spec.selector, new.spec.selector)


def check_update(kind: str, old: Any, new: Any) -> None:
    errs = Errors()
    if new.metadata.uid and new.metadata.uid != old.metadata.uid:
        errs.add("metadata.uid", f"field is immutable (is {old.metadata.uid!r})")
    if kind == "Pod":
        _pod_spec(old.spec, new.spec, "spec", errs)
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        _workload_selector(old, new, errs)
    elif kind == "StatefulSet":
        _workload_selector(old, new, errs)
        a, b = type(old.spec)(), type(new.spec)()
        a.CopyFrom(old.spec)
        b.CopyFrom(new.spec)
        for spec in (a, b):
            for f in ("replicas", "template", "update_strategy", "min_ready_seconds",
                      "selector"):
                spec.ClearField(f)
        if a != b:
            errs.add("spec", _STS_MUTABLE)
    elif kind == "Job":
        _workload_selector(old, new, errs)
        _immutable(errs, "spec.template", old.spec.template, new.spec.template)
        _immutable(errs, "spec.completions", old.spec.completions, new.spec.completions)
    elif kind == "Service":
        if (old.spec.cluster_ip and new.spec.type != "ExternalName"
                and new.spec.cluster_ip != old.spec.cluster_ip):
            errs.add("spec.clusterIP", f"field is immutable (is {old.spec.cluster_ip!r}); "
                                       "delete and recreate the Service to change it")
    elif kind == "Node":
        if old.spec.pod_cidr and new.spec.pod_cidr != old.spec.pod_cidr:
            errs.add("spec.podCIDR", f"field is immutable once set (is {old.spec.pod_cidr!r})")
    elif kind == "PersistentVolumeClaim":
        a, b = type(old.spec)(), type(new.spec)()
        a.CopyFrom(old.spec)
        b.CopyFrom(new.spec)
        if not a.volume_name:
            b.volume_name = ""
        a.resources.requests.pop("storage", None)
        b.resources.requests.pop("storage", None)
        if a != b:
            errs.add("spec", "spec is immutable after creation except "
                             "resources.requests.storage and volumeName (from empty)")
    elif kind in ("ConfigMap", "Secret"):
        if old.immutable:
            if not new.immutable:
                errs.add("immutable", "field is immutable when `immutable` is set")
            _immutable(errs, "data", old.data, new.data)
            if kind == "ConfigMap":
                _immutable(errs, "binaryData", old.binary_data, new.binary_data)
        if kind == "Secret":
            _immutable(errs, "type", old.type, new.type)
    errs.raise_if_any(f"{kind} {_name(new)}", FailedPrecondition)


def _name(obj: Any) -> str:
    m = obj.metadata
    return f'"{m.namespace}/{m.name}"' if m.namespace else f'"{m.name}"'
