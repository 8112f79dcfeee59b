"""Kubernetes' defaulting, per kind: what an unset field means, written down.

`apply_defaults(kind, obj)` fills unset fields in place. It runs before
validation on every create, update and apply, and is idempotent (defaulting a
defaulted object changes nothing), so Apply can compare a defaulted manifest
with the stored object byte for byte. `create_defaults` adds what only a new
object gets (a Pending status, a Job's generated selector).

Pure functions; safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corral.v1 import core_pb2

DEFAULT_GRACE_SECONDS = 30
DEFAULT_AFFINITY_TIMEOUT = 10800
DEFAULT_VOLUME_MODE = 0o644
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Older label names Kubernetes still sets beside the batch.kubernetes.io ones.
LEGACY_JOB_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"


def image_pull_policy(image: str) -> str:
    """Always for ':latest' or an untagged image, else IfNotPresent (Kubernetes' rule)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(probe: core_pb2.Probe) -> None:
    if not probe.timeout_seconds:
        probe.timeout_seconds = 1
    if not probe.period_seconds:
        probe.period_seconds = 10
    if not probe.success_threshold:
        probe.success_threshold = 1
    if not probe.failure_threshold:
        probe.failure_threshold = 3
    if probe.HasField("http_get") and not probe.http_get.scheme:
        probe.http_get.scheme = "HTTP"
    if probe.HasField("http_get") and not probe.http_get.path:
        probe.http_get.path = "/"


def _container(c: core_pb2.Container) -> None:
    if not c.image_pull_policy and c.image:
        c.image_pull_policy = image_pull_policy(c.image)
    for p in c.ports:
        if not p.protocol:
            p.protocol = "TCP"
    for e in c.env:
        if e.value_from.HasField("field_ref") and not e.value_from.field_ref.api_version:
            e.value_from.field_ref.api_version = "v1"
    # A limit without a request requests the limit (Kubernetes' defaulting).
    for name, value in c.resources.limits.items():
        if name not in c.resources.requests:
            c.resources.requests[name] = value
    for field in ("liveness_probe", "readiness_probe", "startup_probe"):
        if c.HasField(field):
            _probe(getattr(c, field))


def pod_spec(spec: core_pb2.PodSpec, *, restart_policy: str = "Always") -> None:
    """`restart_policy=""` leaves it unset (Jobs must choose one themselves)."""
    if not spec.restart_policy and restart_policy:
        spec.restart_policy = restart_policy
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = DEFAULT_GRACE_SECONDS
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    for c in (*spec.init_containers, *spec.containers):
        _container(c)
    for v in spec.volumes:
        if v.HasField("config_map") and not v.config_map.HasField("default_mode"):
            v.config_map.default_mode = DEFAULT_VOLUME_MODE
        if v.HasField("secret") and not v.secret.HasField("default_mode"):
            v.secret.default_mode = DEFAULT_VOLUME_MODE


def _percent_default(value: Any, default: str) -> None:
    if value.WhichOneof("kind") in (None, "null_value"):
        value.string_value = default


def _int_default(value: Any, default: int) -> None:
    if value.WhichOneof("kind") in (None, "null_value"):
        value.number_value = default


def _pod(pod: Any) -> None:
    pod_spec(pod.spec)


def _service(svc: Any) -> None:
    spec = svc.spec
    if not spec.type:
        spec.type = "ClusterIP"
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config.client_ip
        if not cfg.HasField("timeout_seconds"):
            cfg.timeout_seconds = DEFAULT_AFFINITY_TIMEOUT
    for p in spec.ports:
        if not p.protocol:
            p.protocol = "TCP"
        if p.target_port.WhichOneof("kind") in (None, "null_value") or (
            p.target_port.WhichOneof("kind") == "number_value" and p.target_port.number_value == 0
        ):
            p.target_port.number_value = p.port
    if spec.type == "ExternalName":
        # An ExternalName Service has no VIP; a stale one (from a type change) goes.
        if spec.cluster_ip != "None":
            spec.cluster_ip = ""
        del spec.cluster_ips[:]
    if spec.cluster_ip and not spec.cluster_ips:
        spec.cluster_ips.append(spec.cluster_ip)


def _deployment(d: Any) -> None:
    spec = d.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.strategy.type:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        _percent_default(spec.strategy.rolling_update.max_unavailable, "25%")
        _percent_default(spec.strategy.rolling_update.max_surge, "25%")
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = 600
    pod_spec(spec.template.spec)


def _replica_set(rs: Any) -> None:
    if not rs.spec.HasField("replicas"):
        rs.spec.replicas = 1
    pod_spec(rs.spec.template.spec)


def _stateful_set(s: Any) -> None:
    spec = s.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.pod_management_policy:
        spec.pod_management_policy = "OrderedReady"
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if (spec.update_strategy.type == "RollingUpdate"
            and not spec.update_strategy.rolling_update.HasField("partition")):
        spec.update_strategy.rolling_update.partition = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    for claim in spec.volume_claim_templates:
        if not claim.spec.access_modes:
            claim.spec.access_modes.append("ReadWriteOnce")
    pod_spec(spec.template.spec)


def _daemon_set(ds: Any) -> None:
    spec = ds.spec
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if spec.update_strategy.type == "RollingUpdate":
        _int_default(spec.update_strategy.rolling_update.max_unavailable, 1)
        _int_default(spec.update_strategy.rolling_update.max_surge, 0)
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    pod_spec(spec.template.spec)


def _job(job: Any) -> None:
    spec = job.spec
    if not spec.HasField("parallelism"):
        spec.parallelism = 1
    if not spec.HasField("completions"):
        spec.completions = 1
    if not spec.HasField("backoff_limit"):
        spec.backoff_limit = 6
    if not spec.HasField("suspend"):
        spec.suspend = False
    pod_spec(spec.template.spec, restart_policy="")


def _secret(secret: Any) -> None:
    if not secret.type:
        secret.type = "Opaque"
    # stringData is write-only: merged into data (it wins, as in Kubernetes), never stored.
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")


def _pvc(pvc: Any) -> None:
    if not pvc.spec.access_modes:
        pvc.spec.access_modes.append("ReadWriteOnce")


def _node(node: Any) -> None:
    if node.spec.pod_cidr and not node.spec.pod_cidrs:
        node.spec.pod_cidrs.append(node.spec.pod_cidr)


def _event(ev: Any) -> None:
    if not ev.type:
        ev.type = "Normal"
    if (not ev.involved_object.namespace and ev.metadata.namespace
            and ev.involved_object.kind not in ("Node", "Namespace")):
        ev.involved_object.namespace = ev.metadata.namespace


_BY_KIND: dict[str, Callable[[Any], None]] = {
    "Pod": _pod,
    "Service": _service,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
    "StatefulSet": _stateful_set,
    "DaemonSet": _daemon_set,
    "Job": _job,
    "Secret": _secret,
    "PersistentVolumeClaim": _pvc,
    "Node": _node,
    "Event": _event,
}


def apply_defaults(kind: str, api_version: str, obj: Any) -> None:
    # A different value stays, for validation to refuse naming it.
    obj.api_version = obj.api_version or api_version
    obj.kind = obj.kind or kind
    fn = _BY_KIND.get(kind)
    if fn is not None:
        fn(obj)


def create_defaults(kind: str, obj: Any) -> None:
    """Defaults only a new object gets: initial status, a Job's own selector."""
    if kind == "Namespace" and not obj.status.phase:
        obj.status.phase = "Active"
    elif kind in ("Pod", "PersistentVolumeClaim") and not obj.status.phase:
        obj.status.phase = "Pending"
    elif kind == "Job":
        job_selector(obj)


def job_selector(job: Any) -> None:
    """Kubernetes generates a Job's selector from its uid unless manualSelector is set,
    and labels the pod template to match; the pods then carry job-name too."""
    spec = job.spec
    if spec.manual_selector or spec.selector.match_labels or spec.selector.match_expressions:
        return
    uid, name = job.metadata.uid, job.metadata.name
    spec.selector.match_labels[JOB_UID_LABEL] = uid
    labels = spec.template.metadata.labels
    for key, value in ((JOB_UID_LABEL, uid), (LEGACY_JOB_UID_LABEL, uid),
                       (JOB_NAME_LABEL, name), (LEGACY_JOB_NAME_LABEL, name)):
        labels.setdefault(key, value)
