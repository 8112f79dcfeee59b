"""Validation of Deployments, ReplicaSets, StatefulSets, DaemonSets and Jobs."""

from __future__ import annotations

from controlplane.api.validation.common import at_least, check_label_selector, int_or_string
from controlplane.api.validation.errors import Errors
from controlplane.api.validation.other import validate_pvc_spec
from controlplane.api.validation.pod import validate_template
from corral.names import check_dns1123_label
from corral.v1 import apps_pb2, batch_pb2

DEPLOYMENT_STRATEGIES = ("RollingUpdate", "Recreate")
STATEFULSET_STRATEGIES = ("RollingUpdate", "OnDelete")
POD_MANAGEMENT_POLICIES = ("OrderedReady", "Parallel")


def _workload(spec: object, path: str, errs: Errors,
              restart_policies: tuple[str, ...] = ("Always",),
              claim_volumes: tuple[str, ...] = ()) -> None:
    sel_ok = check_label_selector(spec.selector, f"{path}.selector", errs)  # type: ignore[attr-defined]
    validate_template(spec.template, f"{path}.template", errs,  # type: ignore[attr-defined]
                      spec.selector if sel_ok else None,  # type: ignore[attr-defined]
                      restart_policies=restart_policies, claim_volumes=claim_volumes)


def _replicas(spec: object, path: str, errs: Errors) -> None:
    if spec.HasField("replicas"):  # type: ignore[attr-defined]
        at_least(spec.replicas, 0, f"{path}.replicas", errs)  # type: ignore[attr-defined]
    at_least(spec.min_ready_seconds, 0, f"{path}.minReadySeconds", errs)  # type: ignore[attr-defined]
    if spec.HasField("revision_history_limit"):  # type: ignore[attr-defined]
        at_least(spec.revision_history_limit, 0,  # type: ignore[attr-defined]
                 f"{path}.revisionHistoryLimit", errs)


def _surge_or_unavailable(value: object, path: str, errs: Errors) -> int | str | None:
    v = int_or_string(value, path, errs, allow_percent=True)  # type: ignore[arg-type]
    if isinstance(v, int):
        at_least(v, 0, path, errs)
    elif isinstance(v, str) and int(v[:-1]) > 100:
        errs.add(path, f"must not be greater than 100%, got {v!r}")
    return v


def _is_zero(v: int | str | None) -> bool:
    return v in (0, "0%")


def validate_deployment(d: apps_pb2.Deployment, errs: Errors) -> None:
    spec, path = d.spec, "spec"
    _workload(spec, path, errs)
    _replicas(spec, path, errs)
    st = spec.strategy
    sp = f"{path}.strategy"
    if st.type and st.type not in DEPLOYMENT_STRATEGIES:
        errs.unsupported(f"{sp}.type", st.type, DEPLOYMENT_STRATEGIES)
    if st.type == "Recreate" and st.HasField("rolling_update"):
        errs.add(f"{sp}.rollingUpdate", "may not be specified when strategy `type` is "
                                         "'Recreate'")
    if st.HasField("rolling_update"):
        ru = st.rolling_update
        surge = _surge_or_unavailable(ru.max_surge, f"{sp}.rollingUpdate.maxSurge", errs)
        unavail = _surge_or_unavailable(ru.max_unavailable,
                                        f"{sp}.rollingUpdate.maxUnavailable", errs)
        if _is_zero(surge) and _is_zero(unavail):
            errs.add(f"{sp}.rollingUpdate.maxUnavailable",
                     "may not be 0 when `maxSurge` is 0")
    if spec.HasField("progress_deadline_seconds"):
        at_least(spec.progress_deadline_seconds, 1, f"{path}.progressDeadlineSeconds", errs)
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            errs.add(f"{path}.progressDeadlineSeconds",
                     "must be greater than minReadySeconds")


def validate_replica_set(rs: apps_pb2.ReplicaSet, errs: Errors) -> None:
    _workload(rs.spec, "spec", errs)
    if rs.spec.HasField("replicas"):
        at_least(rs.spec.replicas, 0, "spec.replicas", errs)
    at_least(rs.spec.min_ready_seconds, 0, "spec.minReadySeconds", errs)


def validate_stateful_set(s: apps_pb2.StatefulSet, errs: Errors) -> None:
    spec, path = s.spec, "spec"
    claims = tuple(c.metadata.name for c in spec.volume_claim_templates if c.metadata.name)
    _workload(spec, path, errs, claim_volumes=claims)
    _replicas(spec, path, errs)
    if spec.service_name:
        for p in check_dns1123_label(spec.service_name):
            errs.add(f"{path}.serviceName", f"invalid value {spec.service_name!r}: {p}")
    if spec.pod_management_policy and spec.pod_management_policy not in POD_MANAGEMENT_POLICIES:
        errs.unsupported(f"{path}.podManagementPolicy", spec.pod_management_policy,
                         POD_MANAGEMENT_POLICIES)
    us = spec.update_strategy
    if us.type and us.type not in STATEFULSET_STRATEGIES:
        errs.unsupported(f"{path}.updateStrategy.type", us.type, STATEFULSET_STRATEGIES)
    if us.type == "OnDelete" and us.HasField("rolling_update"):
        errs.add(f"{path}.updateStrategy.rollingUpdate",
                 "only allowed for updateStrategy 'RollingUpdate'")
    if us.rolling_update.HasField("partition"):
        at_least(us.rolling_update.partition, 0,
                 f"{path}.updateStrategy.rollingUpdate.partition", errs)
    names: set[str] = set()
    for i, claim in enumerate(spec.volume_claim_templates):
        cp = f"{path}.volumeClaimTemplates[{i}]"
        if not claim.metadata.name:
            errs.required(f"{cp}.metadata.name")
        else:
            for p in check_dns1123_label(claim.metadata.name):
                errs.add(f"{cp}.metadata.name", f"invalid value {claim.metadata.name!r}: {p}")
        if claim.metadata.name in names:
            errs.add(f"{cp}.metadata.name", f"duplicate value {claim.metadata.name!r}")
        names.add(claim.metadata.name)
        validate_pvc_spec(claim.spec, f"{cp}.spec", errs)
    # A template volume of the same name would shadow the claim's volume.
    for i, v in enumerate(spec.template.spec.volumes):
        if v.name in names:
            errs.add(f"{path}.template.spec.volumes[{i}].name",
                     f"duplicate value {v.name!r}: also the name of a volumeClaimTemplate")


def validate_daemon_set(ds: apps_pb2.DaemonSet, errs: Errors) -> None:
    spec, path = ds.spec, "spec"
    _workload(spec, path, errs)
    at_least(spec.min_ready_seconds, 0, f"{path}.minReadySeconds", errs)
    if spec.HasField("revision_history_limit"):
        at_least(spec.revision_history_limit, 0, f"{path}.revisionHistoryLimit", errs)
    us = spec.update_strategy
    up = f"{path}.updateStrategy"
    if us.type and us.type not in STATEFULSET_STRATEGIES:
        errs.unsupported(f"{up}.type", us.type, STATEFULSET_STRATEGIES)
    if us.type == "OnDelete" and us.HasField("rolling_update"):
        errs.add(f"{up}.rollingUpdate", "only allowed for updateStrategy 'RollingUpdate'")
    if us.HasField("rolling_update"):
        unavail = _surge_or_unavailable(us.rolling_update.max_unavailable,
                                        f"{up}.rollingUpdate.maxUnavailable", errs)
        surge = _surge_or_unavailable(us.rolling_update.max_surge,
                                      f"{up}.rollingUpdate.maxSurge", errs)
        if _is_zero(surge) and _is_zero(unavail):
            errs.add(f"{up}.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0")


def validate_job(job: batch_pb2.Job, errs: Errors) -> None:
    spec, path = job.spec, "spec"
    _workload(spec, path, errs, restart_policies=("OnFailure", "Never"))
    if not spec.template.spec.restart_policy:
        errs.required(f"{path}.template.spec.restartPolicy",
                      'a Job\'s pods need restartPolicy "OnFailure" or "Never"')
    for field, json, minimum in (("parallelism", "parallelism", 0),
                                 ("completions", "completions", 0),
                                 ("backoff_limit", "backoffLimit", 0),
                                 ("active_deadline_seconds", "activeDeadlineSeconds", 1),
                                 ("ttl_seconds_after_finished", "ttlSecondsAfterFinished", 0)):
        if spec.HasField(field):  # type: ignore[arg-type]
            at_least(getattr(spec, field), minimum, f"{path}.{json}", errs)
