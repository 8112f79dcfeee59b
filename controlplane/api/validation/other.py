"""Validation of the smaller kinds: Namespace, Node, ConfigMap, Secret, Event,
Lease and PersistentVolumeClaim."""

from __future__ import annotations

import ipaddress

from controlplane.api.settings import ApiSettings
from controlplane.api.validation.common import (
    at_least,
    check_config_key,
    check_quantity,
)
from controlplane.api.validation.errors import Errors
from controlplane.api.validation.pod import validate_taint
from corral.limits import MAX_OBJECT_BYTES
from corral.v1 import batch_pb2, core_pb2

ACCESS_MODES = ("ReadWriteOnce",)
EVENT_TYPES = ("Normal", "Warning")


def validate_namespace(ns: core_pb2.Namespace, errs: Errors) -> None:
    if ns.status.phase and ns.status.phase not in ("Active", "Terminating"):
        errs.unsupported("status.phase", ns.status.phase, ("Active", "Terminating"))


def validate_node(node: core_pb2.Node, errs: Errors, settings: ApiSettings) -> None:
    spec = node.spec
    if spec.pod_cidr:
        try:
            net = ipaddress.IPv4Network(spec.pod_cidr)
        except ValueError:
            errs.add("spec.podCIDR", f"must be a valid IPv4 CIDR, got {spec.pod_cidr!r}")
        else:
            if not net.subnet_of(settings.cluster_cidr):
                errs.add("spec.podCIDR", f"{spec.pod_cidr} is not inside the cluster CIDR "
                                         f"{settings.cluster_cidr}")
    if spec.pod_cidrs and list(spec.pod_cidrs) != [spec.pod_cidr]:
        errs.add("spec.podCIDRs", "must be empty or hold exactly `podCIDR` (IPv4 only)")
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(spec.taints):
        validate_taint(t, f"spec.taints[{i}]", errs)
        if (t.key, t.effect) in seen:
            errs.add(f"spec.taints[{i}]", f"duplicate taint {t.key}:{t.effect}")
        seen.add((t.key, t.effect))
    for group in ("capacity", "allocatable"):
        for name, value in sorted(getattr(node.status, group).items()):
            check_quantity(value, f"status.{group}[{name}]", errs)
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    if not 0 <= port <= 65535:
        errs.add("status.daemonEndpoints.kubeletEndpoint.Port",
                 f"must be between 0 and 65535, got {port}")


def _data_keys(keys: list[str], path: str, errs: Errors) -> None:
    for key in sorted(keys):
        for p in check_config_key(key):
            # Only the key is named: values may be secret.
            errs.add(f"{path}[{key}]", f"invalid key: {p}")


def validate_config_map(cm: core_pb2.ConfigMap, errs: Errors) -> None:
    _data_keys(list(cm.data), "data", errs)
    _data_keys(list(cm.binary_data), "binaryData", errs)
    for key in sorted(set(cm.data) & set(cm.binary_data)):
        errs.add(f"binaryData[{key}]", "duplicate of a key in data")


def validate_secret(secret: core_pb2.Secret, errs: Errors) -> None:
    _data_keys(list(secret.data), "data", errs)
    total = sum(len(v) for v in secret.data.values())
    if total > MAX_OBJECT_BYTES:
        errs.add("data", f"too long: must have at most {MAX_OBJECT_BYTES} bytes, got {total}")
    if secret.type == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in secret.data:
                errs.required(f"data[{key}]", "a kubernetes.io/tls Secret needs it")


def validate_event(ev: core_pb2.Event, errs: Errors) -> None:
    if ev.type and ev.type not in EVENT_TYPES:
        errs.unsupported("type", ev.type, EVENT_TYPES)
    if not ev.involved_object.kind:
        errs.required("involvedObject.kind")
    if not ev.involved_object.name:
        errs.required("involvedObject.name")
    if ev.involved_object.namespace and ev.involved_object.namespace != ev.metadata.namespace:
        errs.add("involvedObject.namespace", "does not match event.namespace")
    at_least(ev.count, 0, "count", errs)


def validate_lease(lease: batch_pb2.Lease, errs: Errors) -> None:
    spec = lease.spec
    if spec.HasField("lease_duration_seconds"):
        at_least(spec.lease_duration_seconds, 1, "spec.leaseDurationSeconds", errs)
    if spec.HasField("lease_transitions"):
        at_least(spec.lease_transitions, 0, "spec.leaseTransitions", errs)


def validate_pvc_spec(spec: core_pb2.PersistentVolumeClaimSpec, path: str, errs: Errors) -> None:
    if not spec.access_modes:
        errs.required(f"{path}.accessModes", "at least one access mode")
    for i, mode in enumerate(spec.access_modes):
        if mode not in ACCESS_MODES:
            errs.unsupported(f"{path}.accessModes[{i}]", mode, ACCESS_MODES)
    storage = spec.resources.requests.get("storage")
    if storage is None:
        errs.required(f"{path}.resources.requests[storage]")
    else:
        check_quantity(storage, f"{path}.resources.requests[storage]", errs)
    for name in sorted(set(spec.resources.requests) | set(spec.resources.limits)):
        if name != "storage":
            errs.unsupported(f"{path}.resources", name, ("storage",))
    if spec.volume_name and ":" not in spec.volume_name:
        errs.add(f"{path}.volumeName", f"must be NODE:/path, got {spec.volume_name!r}")


def validate_pvc(pvc: core_pb2.PersistentVolumeClaim, errs: Errors) -> None:
    validate_pvc_spec(pvc.spec, "spec", errs)
    if pvc.status.phase and pvc.status.phase not in ("Pending", "Bound", "Lost"):
        errs.unsupported("status.phase", pvc.status.phase, ("Pending", "Bound", "Lost"))
