"""Validation of PodSpec (Pods and every workload's pod template).

Kubernetes' rules, trimmed to the fields Corral's proto carries; values Corral
cannot honour (SCTP, HTTPS probes, dnsPolicy None, ...) are refused naming the
field rather than silently ignored.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Sequence

from controlplane.api.validation.common import (
    at_least,
    check_label_selector,
    check_labels,
    check_quantity,
    int_or_string,
    name_check,
    port_number,
)
from controlplane.api.validation.errors import Errors
from corral import quantity
from corral.errors import Invalid
from corral.names import (
    check_dns1123_label,
    check_dns1123_subdomain,
    check_env_var_name,
    check_port_name,
    check_qualified_name,
)
from corral.selectors import from_proto
from corral.v1 import core_pb2

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "Default")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("TCP", "UDP")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File")
FIELD_REF_PATHS = (
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.podIP", "status.hostIP", "status.podIPs",
)


def validate_pod_spec(spec: core_pb2.PodSpec, path: str, errs: Errors, *,
                      restart_policies: tuple[str, ...] = RESTART_POLICIES,
                      claim_volumes: tuple[str, ...] = ()) -> None:
    """`claim_volumes`: volume names a StatefulSet's volumeClaimTemplates add."""
    volumes = _volumes(spec.volumes, f"{path}.volumes", errs)
    for name in claim_volumes:
        volumes.setdefault(name, "persistent_volume_claim")
    if not spec.containers:
        errs.required(f"{path}.containers", "a pod needs at least one container")
    names: set[str] = set()
    for group, items in (("initContainers", spec.init_containers),
                         ("containers", spec.containers)):
        for i, c in enumerate(items):
            cp = f"{path}.{group}[{i}]"
            _container(c, cp, errs, volumes, init=group == "initContainers")
            if c.name in names:
                errs.add(f"{cp}.name", f"duplicate value {c.name!r}")
            names.add(c.name)
    _host_ports(spec, path, errs)
    if spec.restart_policy and spec.restart_policy not in restart_policies:
        errs.unsupported(f"{path}.restartPolicy", spec.restart_policy, restart_policies)
    if spec.dns_policy and spec.dns_policy not in DNS_POLICIES:
        errs.unsupported(f"{path}.dnsPolicy", spec.dns_policy, DNS_POLICIES)
    if spec.HasField("termination_grace_period_seconds"):
        at_least(spec.termination_grace_period_seconds, 0,
                 f"{path}.terminationGracePeriodSeconds", errs)
    if spec.HasField("active_deadline_seconds"):
        at_least(spec.active_deadline_seconds, 1, f"{path}.activeDeadlineSeconds", errs)
    if spec.node_name:
        name_check(spec.node_name, f"{path}.nodeName", errs, check_dns1123_subdomain)
    check_labels(spec.node_selector, f"{path}.nodeSelector", errs)
    if spec.hostname:
        name_check(spec.hostname, f"{path}.hostname", errs, check_dns1123_label)
    if spec.subdomain:
        name_check(spec.subdomain, f"{path}.subdomain", errs, check_dns1123_label)
    for i, t in enumerate(spec.tolerations):
        _toleration(t, f"{path}.tolerations[{i}]", errs)
    if spec.HasField("affinity"):
        _affinity(spec.affinity, f"{path}.affinity", errs)


def _volumes(volumes: Sequence[core_pb2.Volume], path: str,
             errs: Errors) -> dict[str, str]:
    """Checks volumes; returns name -> source kind."""
    out: dict[str, str] = {}
    for i, v in enumerate(volumes):
        vp = f"{path}[{i}]"
        name_check(v.name, f"{vp}.name", errs, check_dns1123_label)
        if v.name in out:
            errs.add(f"{vp}.name", f"duplicate value {v.name!r}")
        sources = [f.name for f, _ in v.ListFields() if f.name != "name"]
        if len(sources) != 1:
            errs.add(vp, "must specify exactly one volume source (emptyDir, hostPath, "
                         f"configMap, secret, persistentVolumeClaim), got {len(sources)}")
        source = sources[0] if sources else ""
        out[v.name] = source
        if source == "empty_dir":
            if v.empty_dir.medium not in ("", "Memory"):
                errs.unsupported(f"{vp}.emptyDir.medium", v.empty_dir.medium, ("", "Memory"))
            if v.empty_dir.size_limit:
                check_quantity(v.empty_dir.size_limit, f"{vp}.emptyDir.sizeLimit", errs)
        elif source == "host_path":
            if not v.host_path.path:
                errs.required(f"{vp}.hostPath.path")
            elif not posixpath.isabs(v.host_path.path):
                errs.add(f"{vp}.hostPath.path", "must be an absolute path")
            if v.host_path.type not in HOST_PATH_TYPES:
                errs.unsupported(f"{vp}.hostPath.type", v.host_path.type, HOST_PATH_TYPES)
        elif source == "config_map":
            name_check(v.config_map.name, f"{vp}.configMap.name", errs,
                       check_dns1123_subdomain)
            _items(v.config_map.items, f"{vp}.configMap.items", errs)
            _mode(v.config_map, "default_mode", f"{vp}.configMap.defaultMode", errs)
        elif source == "secret":
            name_check(v.secret.secret_name, f"{vp}.secret.secretName", errs,
                       check_dns1123_subdomain)
            _items(v.secret.items, f"{vp}.secret.items", errs)
            _mode(v.secret, "default_mode", f"{vp}.secret.defaultMode", errs)
        elif source == "persistent_volume_claim":
            name_check(v.persistent_volume_claim.claim_name,
                       f"{vp}.persistentVolumeClaim.claimName", errs, check_dns1123_subdomain)
    return out


def _items(items: Sequence[core_pb2.KeyToPath], path: str, errs: Errors) -> None:
    for i, item in enumerate(items):
        ip = f"{path}[{i}]"
        if not item.key:
            errs.required(f"{ip}.key")
        if not item.path:
            errs.required(f"{ip}.path")
        elif posixpath.isabs(item.path) or ".." in item.path.split("/"):
            errs.add(f"{ip}.path", "must be a relative path without '..'")
        _mode(item, "mode", f"{ip}.mode", errs)


def _mode(msg: object, field: str, path: str, errs: Errors) -> None:
    if msg.HasField(field):  # type: ignore[attr-defined]
        mode = getattr(msg, field)
        if not 0 <= mode <= 0o777:
            errs.add(path, f"must be a number between 0 and 0777 (octal), both inclusive, "
                           f"got {mode}")


def _container(c: core_pb2.Container, path: str, errs: Errors, volumes: dict[str, str],
               *, init: bool) -> None:
    name_check(c.name, f"{path}.name", errs, check_dns1123_label)
    if not c.image.strip():
        errs.required(f"{path}.image")
    elif c.image != c.image.strip():
        errs.add(f"{path}.image", "must not have leading or trailing whitespace")
    if c.image_pull_policy and c.image_pull_policy not in PULL_POLICIES:
        errs.unsupported(f"{path}.imagePullPolicy", c.image_pull_policy, PULL_POLICIES)
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = f"{path}.ports[{i}]"
        port_number(p.container_port, f"{pp}.containerPort", errs)
        port_number(p.host_port, f"{pp}.hostPort", errs, allow_zero=True)
        if p.protocol and p.protocol not in PROTOCOLS:
            errs.unsupported(f"{pp}.protocol", p.protocol, PROTOCOLS)
        if p.name:
            for problem in check_port_name(p.name):
                errs.add(f"{pp}.name", f"invalid value {p.name!r}: {problem}")
            if p.name in port_names:
                errs.add(f"{pp}.name", f"duplicate value {p.name!r}")
            port_names.add(p.name)
        if p.host_ip:
            _ip(p.host_ip, f"{pp}.hostIP", errs)
    for i, e in enumerate(c.env):
        ep = f"{path}.env[{i}]"
        if not e.name:
            errs.required(f"{ep}.name")
        else:
            for problem in check_env_var_name(e.name):
                errs.add(f"{ep}.name", f"invalid value {e.name!r}: {problem}")
        if e.HasField("value_from"):
            _env_source(e, ep, errs)
    for i, ef in enumerate(c.env_from):
        efp = f"{path}.envFrom[{i}]"
        refs = [r for r in ("config_map_ref", "secret_ref") if ef.HasField(r)]
        if len(refs) != 1:
            errs.add(efp, "must specify exactly one of configMapRef and secretRef")
        for r in refs:
            name_check(getattr(ef, r).name, f"{efp}.{_camel(r)}.name", errs,
                       check_dns1123_subdomain)
        if ef.prefix:
            for problem in check_env_var_name(ef.prefix):
                errs.add(f"{efp}.prefix", f"invalid value {ef.prefix!r}: {problem}")
    _resources(c.resources, f"{path}.resources", errs)
    mount_paths: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = f"{path}.volumeMounts[{i}]"
        if not m.name:
            errs.required(f"{mp}.name")
        elif m.name not in volumes:
            errs.add(f"{mp}.name", f"not found: no volume named {m.name!r} in the pod")
        if not m.mount_path:
            errs.required(f"{mp}.mountPath")
        elif not posixpath.isabs(m.mount_path):
            errs.add(f"{mp}.mountPath", "must be an absolute path")
        elif m.mount_path in mount_paths:
            errs.add(f"{mp}.mountPath", f"duplicate value {m.mount_path!r}: must be unique")
        mount_paths.add(m.mount_path)
        if m.sub_path and (posixpath.isabs(m.sub_path) or ".." in m.sub_path.split("/")):
            errs.add(f"{mp}.subPath", "must be a relative path without '..'")
    for field, probe_name in (("liveness_probe", "livenessProbe"),
                              ("readiness_probe", "readinessProbe"),
                              ("startup_probe", "startupProbe")):
        if c.HasField(field):  # type: ignore[arg-type]
            if init:
                errs.add(f"{path}.{probe_name}", "may not be set for init containers")
                continue
            _probe(getattr(c, field), f"{path}.{probe_name}", errs, port_names,
                   single_success=field != "readiness_probe")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _env_source(e: core_pb2.EnvVar, path: str, errs: Errors) -> None:
    vf = e.value_from
    if e.value:
        errs.add(f"{path}.valueFrom", "may not be specified when `value` is not empty")
    sources = [f.name for f, _ in vf.ListFields()]
    if len(sources) != 1:
        errs.add(f"{path}.valueFrom", "must specify exactly one of configMapKeyRef, "
                                      "secretKeyRef and fieldRef")
        return
    source = sources[0]
    if source in ("config_map_key_ref", "secret_key_ref"):
        ref = getattr(vf, source)
        sp = f"{path}.valueFrom.{_camel(source)}"
        name_check(ref.name, f"{sp}.name", errs, check_dns1123_subdomain)
        if not ref.key:
            errs.required(f"{sp}.key")
    else:
        fp = vf.field_ref.field_path
        sp = f"{path}.valueFrom.fieldRef.fieldPath"
        if not fp:
            errs.required(sp)
        elif fp not in FIELD_REF_PATHS and not (
            fp.startswith(("metadata.labels['", "metadata.annotations['")) and fp.endswith("']")
        ):
            errs.unsupported(sp, fp, (*FIELD_REF_PATHS, "metadata.labels['KEY']",
                                      "metadata.annotations['KEY']"))


def _resources(res: core_pb2.ResourceRequirements, path: str, errs: Errors) -> None:
    values: dict[str, dict[str, float]] = {"limits": {}, "requests": {}}
    for group in ("limits", "requests"):
        for name, value in sorted(getattr(res, group).items()):
            rp = f"{path}.{group}[{name}]"
            if name not in RESOURCE_NAMES:
                errs.unsupported(f"{path}.{group}", name, RESOURCE_NAMES)
                continue
            try:
                q = quantity.parse(value, rp)
            except Invalid as err:
                errs.add(rp, err.reason)
                continue
            if q < 0:
                errs.add(rp, f"must be greater than or equal to 0, got {value!r}")
            values[group][name] = float(q)
    for name, request in values["requests"].items():
        limit = values["limits"].get(name)
        if limit is not None and request > limit:
            errs.add(f"{path}.requests[{name}]",
                     f"must be less than or equal to {name} limit of "
                     f"{res.limits[name]}, got {res.requests[name]}")


def _probe(probe: core_pb2.Probe, path: str, errs: Errors, port_names: set[str], *,
           single_success: bool) -> None:
    handlers = [f for f in ("exec", "http_get", "tcp_socket") if probe.HasField(f)]
    if len(handlers) != 1:
        errs.add(path, "must specify exactly one handler (exec, httpGet or tcpSocket), "
                       f"got {len(handlers)}")
    if probe.HasField("exec") and not probe.exec.command:
        errs.required(f"{path}.exec.command")
    if probe.HasField("http_get"):
        hp = f"{path}.httpGet"
        _probe_port(probe.http_get.port, f"{hp}.port", errs, port_names)
        if probe.http_get.scheme not in ("", "HTTP"):
            errs.unsupported(f"{hp}.scheme", probe.http_get.scheme, ("HTTP",))
        if probe.http_get.path and not probe.http_get.path.startswith("/"):
            errs.add(f"{hp}.path", "must start with '/'")
        for i, h in enumerate(probe.http_get.http_headers):
            if not h.name:
                errs.required(f"{hp}.httpHeaders[{i}].name")
    if probe.HasField("tcp_socket"):
        _probe_port(probe.tcp_socket.port, f"{path}.tcpSocket.port", errs, port_names)
    at_least(probe.initial_delay_seconds, 0, f"{path}.initialDelaySeconds", errs)
    # Zero means "use the default" (proto3 cannot tell unset from 0); negatives are wrong.
    for field, json in (("timeout_seconds", "timeoutSeconds"),
                        ("period_seconds", "periodSeconds"),
                        ("success_threshold", "successThreshold"),
                        ("failure_threshold", "failureThreshold")):
        at_least(getattr(probe, field), 0, f"{path}.{json}", errs)
    if single_success and probe.success_threshold > 1:
        errs.add(f"{path}.successThreshold", f"must be 1, got {probe.success_threshold}")
    if probe.HasField("termination_grace_period_seconds"):
        at_least(probe.termination_grace_period_seconds, 1,
                 f"{path}.terminationGracePeriodSeconds", errs)


def _probe_port(value: object, path: str, errs: Errors, port_names: set[str]) -> None:
    port = int_or_string(value, path, errs, allow_name=True)  # type: ignore[arg-type]
    if port is None:
        if value.WhichOneof("kind") in (None, "null_value"):  # type: ignore[attr-defined]
            errs.required(path)
    elif isinstance(port, int):
        port_number(port, path, errs)
    elif port not in port_names:
        errs.add(path, f"no container port named {port!r}")


def _host_ports(spec: core_pb2.PodSpec, path: str, errs: Errors) -> None:
    seen: set[tuple[str, int]] = set()
    for i, c in enumerate(spec.containers):
        for j, p in enumerate(c.ports):
            if not p.host_port:
                continue
            key = (p.protocol or "TCP", p.host_port)
            if key in seen:
                errs.add(f"{path}.containers[{i}].ports[{j}].hostPort",
                         f"duplicate value {p.host_port}/{key[0]}")
            seen.add(key)


def _ip(value: str, path: str, errs: Errors) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        errs.add(path, f"must be a valid IPv4 address, got {value!r}")


def _toleration(t: core_pb2.Toleration, path: str, errs: Errors) -> None:
    if t.key:
        for p in check_qualified_name(t.key):
            errs.add(f"{path}.key", f"invalid value {t.key!r}: {p}")
    op = t.operator or "Equal"
    if op not in TOLERATION_OPERATORS:
        errs.unsupported(f"{path}.operator", t.operator, TOLERATION_OPERATORS)
    if not t.key and op != "Exists":
        errs.add(f"{path}.operator", "must be Exists when `key` is empty, which means match "
                                     "all values and all keys")
    if op == "Exists" and t.value:
        errs.add(f"{path}.operator", "value must be empty when `operator` is 'Exists'")
    if t.effect and t.effect not in TAINT_EFFECTS:
        errs.unsupported(f"{path}.effect", t.effect, TAINT_EFFECTS)
    if t.HasField("toleration_seconds") and t.effect != "NoExecute":
        errs.add(f"{path}.effect", "effect must be 'NoExecute' when `tolerationSeconds` is set")


def validate_taint(t: core_pb2.Taint, path: str, errs: Errors) -> None:
    if not t.key:
        errs.required(f"{path}.key")
    else:
        for p in check_qualified_name(t.key):
            errs.add(f"{path}.key", f"invalid value {t.key!r}: {p}")
    if not t.effect:
        errs.required(f"{path}.effect")
    elif t.effect not in TAINT_EFFECTS:
        errs.unsupported(f"{path}.effect", t.effect, TAINT_EFFECTS)


def _node_selector_term(term: core_pb2.NodeSelectorTerm, path: str, errs: Errors) -> None:
    for group, items in (("matchExpressions", term.match_expressions),
                         ("matchFields", term.match_fields)):
        for i, r in enumerate(items):
            rp = f"{path}.{group}[{i}]"
            if not r.key:
                errs.required(f"{rp}.key")
            if group == "matchFields" and r.key != "metadata.name":
                errs.unsupported(f"{rp}.key", r.key, ("metadata.name",))
            if r.operator not in NODE_SELECTOR_OPERATORS:
                errs.unsupported(f"{rp}.operator", r.operator, NODE_SELECTOR_OPERATORS)
            elif r.operator in ("In", "NotIn") and not r.values:
                errs.add(f"{rp}.values", f"must be specified when `operator` is '{r.operator}'")
            elif r.operator in ("Exists", "DoesNotExist") and r.values:
                errs.add(f"{rp}.values", f"may not be specified when `operator` is "
                                         f"'{r.operator}'")
            elif r.operator in ("Gt", "Lt") and (
                len(r.values) != 1 or not r.values[0].lstrip("-").isdigit()
            ):
                errs.add(f"{rp}.values", f"must be a single integer when `operator` is "
                                         f"'{r.operator}'")


def _affinity(aff: core_pb2.Affinity, path: str, errs: Errors) -> None:
    na = aff.node_affinity
    base = f"{path}.nodeAffinity"
    req = na.required_during_scheduling_ignored_during_execution
    rp = f"{base}.requiredDuringSchedulingIgnoredDuringExecution"
    if na.HasField("required_during_scheduling_ignored_during_execution"):
        if not req.node_selector_terms:
            errs.required(f"{rp}.nodeSelectorTerms", "at least one term")
        for i, term in enumerate(req.node_selector_terms):
            _node_selector_term(term, f"{rp}.nodeSelectorTerms[{i}]", errs)
    pp = f"{base}.preferredDuringSchedulingIgnoredDuringExecution"
    for i, pref in enumerate(na.preferred_during_scheduling_ignored_during_execution):
        if not 1 <= pref.weight <= 100:
            errs.add(f"{pp}[{i}].weight", f"must be in the range 1-100, got {pref.weight}")
        _node_selector_term(pref.preference, f"{pp}[{i}].preference", errs)


def validate_template(tpl: core_pb2.PodTemplateSpec, path: str, errs: Errors,
                      selector: object | None, *,
                      restart_policies: tuple[str, ...] = ("Always",),
                      claim_volumes: tuple[str, ...] = ()) -> None:
    """A workload's pod template; `selector` (a LabelSelector) must match its labels."""
    check_labels(tpl.metadata.labels, f"{path}.metadata.labels", errs)
    validate_pod_spec(tpl.spec, f"{path}.spec", errs, restart_policies=restart_policies,
                      claim_volumes=claim_volumes)
    if selector is None:
        return
    try:
        sel = from_proto(selector)  # type: ignore[arg-type]
    except Invalid:
        return  # reported by check_label_selector
    if not sel.empty and not sel.matches(tpl.metadata.labels):
        labels = ",".join(f"{k}={v}" for k, v in sorted(tpl.metadata.labels.items()))
        errs.add(f"{path}.metadata.labels",
                 f"invalid value {labels!r}: `selector` does not match template `labels`")


__all__ = ["check_label_selector", "validate_pod_spec", "validate_taint", "validate_template"]
