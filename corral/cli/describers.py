"""Human summaries of objects for `corral describe`, in kubectl's layout.

`describe(info, obj, now, related)` is pure: the command fetches what a summary
needs from the server (the object's Events, a Deployment's ReplicaSets, the pods
on a Node) and passes it in `related`.

Threads model: none (pure functions).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral import kinds, printers, selectors
from corral.errors import CorralError

NONE = "<none>"


@dataclass
class Related:
    events: list[Any] = field(default_factory=list)
    replica_sets: list[Any] = field(default_factory=list)  # a Deployment's
    pods: list[Any] = field(default_factory=list)  # a Node's, or a workload's
    now: float = 0.0  # set by describe()


class _Writer:
    """Lines of (indent, key, value); values of one indent level line up."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, str | None]] = []

    def kv(self, indent: int, key: str, value: Any = None) -> None:
        self.lines.append((indent, key, None if value is None else str(value)))

    def text(self, indent: int, text: str) -> None:
        self.lines.append((indent, text, None))

    def raw(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self.lines.append((-1, line, None))

    def render(self) -> str:
        widths: dict[int, int] = {}
        for indent, key, value in self.lines:
            if value is not None and indent >= 0:
                widths[indent] = max(widths.get(indent, 0), len(key) + 1)
        out = []
        for indent, key, value in self.lines:
            if indent < 0:
                out.append(key)
            elif value is None:
                out.append("  " * indent + key)
            else:
                # An empty key continues the value list of the line above.
                label = (f"{key}:" if key else "").ljust(widths[indent] + 2)
                out.append(("  " * indent + label + value).rstrip())
        return "\n".join(out) + "\n"


def timestamp(ts: Timestamp) -> str:
    """RFC 1123 with zone, as kubectl: 'Mon, 02 Jan 2024 03:04:05 +0000'."""
    when = printers.seconds_of(ts)
    if when is None:
        return NONE
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))


def _multi(w: _Writer, indent: int, key: str, pairs: Iterable[str]) -> None:
    items = list(pairs)
    if not items:
        w.kv(indent, key, NONE)
        return
    w.kv(indent, key, items[0])
    for item in items[1:]:
        w.kv(indent, "", item)


def _labels(labels: Any) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def _header(w: _Writer, info: kinds.KindInfo, obj: Any) -> None:
    m = obj.metadata
    w.kv(0, "Name", m.name)
    if info.namespaced:
        w.kv(0, "Namespace", m.namespace)
    _multi(w, 0, "Labels", _labels(m.labels))
    _multi(w, 0, "Annotations", [f"{k}: {v}" for k, v in sorted(m.annotations.items())])
    w.kv(0, "CreationTimestamp", timestamp(m.creation_timestamp))
    if m.HasField("deletion_timestamp"):
        grace = m.deletion_grace_period_seconds if m.HasField(
            "deletion_grace_period_seconds") else 0
        w.kv(0, "Terminating", f"since {timestamp(m.deletion_timestamp)} (grace {grace}s)")
    if m.finalizers:
        w.kv(0, "Finalizers", "[" + " ".join(m.finalizers) + "]")
    owner = next((o for o in m.owner_references if o.controller), None)
    if owner is not None:
        w.kv(0, "Controlled By", f"{owner.kind}/{owner.name}")


def _selector(sel: Any) -> str:
    try:
        return str(selectors.from_proto(sel)) or NONE
    except CorralError:
        return NONE


def _int_or_string(value: Any) -> str:
    which = value.WhichOneof("kind")
    if which == "number_value":
        return str(int(value.number_value))
    if which == "string_value":
        return value.string_value
    return NONE


def _probe(p: Any) -> str:
    if p.HasField("http_get"):
        g = p.http_get
        what = f"http-get {g.scheme.lower() or 'http'}://{g.host}:{_int_or_string(g.port)}" \
               f"{g.path}"
    elif p.HasField("tcp_socket"):
        what = f"tcp-socket {p.tcp_socket.host}:{_int_or_string(p.tcp_socket.port)}"
    elif p.HasField("exec"):
        what = "exec [" + " ".join(p.exec.command) + "]"
    else:
        what = "unknown"
    return (f"{what} delay={p.initial_delay_seconds}s timeout={p.timeout_seconds or 1}s "
            f"period={p.period_seconds or 10}s #success={p.success_threshold or 1} "
            f"#failure={p.failure_threshold or 3}")


def _state(w: _Writer, indent: int, key: str, state: Any) -> None:
    if state.HasField("running"):
        w.kv(indent, key, "Running")
        w.kv(indent + 1, "Started", timestamp(state.running.started_at))
    elif state.HasField("terminated"):
        t = state.terminated
        w.kv(indent, key, "Terminated")
        w.kv(indent + 1, "Reason", t.reason or NONE)
        if t.message:
            w.kv(indent + 1, "Message", t.message)
        w.kv(indent + 1, "Exit Code", t.exit_code)
        if t.signal:
            w.kv(indent + 1, "Signal", t.signal)
        w.kv(indent + 1, "Started", timestamp(t.started_at))
        w.kv(indent + 1, "Finished", timestamp(t.finished_at))
    elif state.HasField("waiting"):
        w.kv(indent, key, "Waiting")
        w.kv(indent + 1, "Reason", state.waiting.reason or NONE)
        if state.waiting.message:
            w.kv(indent + 1, "Message", state.waiting.message)
    else:
        w.kv(indent, key, "Waiting" if key == "State" else NONE)


def _env_value(e: Any) -> str:
    if not e.HasField("value_from"):
        return e.value
    src = e.value_from
    if src.HasField("config_map_key_ref"):
        r = src.config_map_key_ref
        return f"<set to the key '{r.key}' of config map '{r.name}'>"
    if src.HasField("secret_key_ref"):
        r = src.secret_key_ref
        return f"<set to the key '{r.key}' in secret '{r.name}'>"
    if src.HasField("field_ref"):
        return f"({src.field_ref.api_version or 'v1'}:{src.field_ref.field_path})"
    return NONE


def _containers(w: _Writer, indent: int, title: str, containers: Sequence[Any],
                statuses: Sequence[Any] = ()) -> None:
    if not containers:
        return
    w.text(indent, f"{title}:")
    by_name = {s.name: s for s in statuses}
    for c in containers:
        w.text(indent + 1, f"{c.name}:")
        i = indent + 2
        status = by_name.get(c.name)
        if status is not None and status.container_id:
            w.kv(i, "Container ID", status.container_id)
        w.kv(i, "Image", c.image)
        if status is not None and status.image_id:
            w.kv(i, "Image ID", status.image_id)
        ports = [f"{p.container_port}/{p.protocol or 'TCP'}" + (f" ({p.name})" if p.name else "")
                 for p in c.ports]
        w.kv(i, "Port" + ("s" if len(ports) > 1 else ""), ", ".join(ports) or NONE)
        if c.command:
            w.text(i, "Command:")
            for part in c.command:
                w.text(i + 1, part)
        if c.args:
            w.text(i, "Args:")
            for part in c.args:
                w.text(i + 1, part)
        if status is not None:
            _state(w, i, "State", status.state)
            if status.last_state.ListFields():
                _state(w, i, "Last State", status.last_state)
            w.kv(i, "Ready", "True" if status.ready else "False")
            w.kv(i, "Restart Count", status.restart_count)
        for key, values in (("Limits", c.resources.limits), ("Requests", c.resources.requests)):
            if values:
                w.text(i, f"{key}:")
                for k in sorted(values):
                    w.kv(i + 1, k, values[k])
        for key, probe in (("Liveness", "liveness_probe"), ("Readiness", "readiness_probe"),
                           ("Startup", "startup_probe")):
            if c.HasField(probe):
                w.kv(i, key, _probe(getattr(c, probe)))
        if c.env or c.env_from:
            w.text(i, "Environment:")
            for e in c.env:
                w.kv(i + 1, e.name, _env_value(e))
            for ef in c.env_from:
                src = (f"{ef.config_map_ref.name} ConfigMap" if ef.HasField("config_map_ref")
                       else f"{ef.secret_ref.name} Secret")
                w.kv(i + 1, "From", f"{src} (prefix {ef.prefix!r})" if ef.prefix else src)
        else:
            w.kv(i, "Environment", NONE)
        if c.volume_mounts:
            w.text(i, "Mounts:")
            for m in c.volume_mounts:
                w.text(i + 1, f"{m.mount_path} from {m.name} ({'ro' if m.read_only else 'rw'})")
        else:
            w.kv(i, "Mounts", NONE)


def _volumes(w: _Writer, indent: int, volumes: Sequence[Any]) -> None:
    if not volumes:
        w.kv(indent, "Volumes", NONE)
        return
    w.text(indent, "Volumes:")
    for v in volumes:
        w.text(indent + 1, f"{v.name}:")
        i = indent + 2
        if v.HasField("empty_dir"):
            w.kv(i, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
            w.kv(i, "Medium", v.empty_dir.medium)
        elif v.HasField("host_path"):
            w.kv(i, "Type", "HostPath (bare host directory volume)")
            w.kv(i, "Path", v.host_path.path)
        elif v.HasField("config_map"):
            w.kv(i, "Type", "ConfigMap (a volume populated by a ConfigMap)")
            w.kv(i, "Name", v.config_map.name)
        elif v.HasField("secret"):
            w.kv(i, "Type", "Secret (a volume populated by a Secret)")
            w.kv(i, "SecretName", v.secret.secret_name)
        elif v.HasField("persistent_volume_claim"):
            w.kv(i, "Type", "PersistentVolumeClaim (a reference to a PersistentVolumeClaim)")
            w.kv(i, "ClaimName", v.persistent_volume_claim.claim_name)
            w.kv(i, "ReadOnly", str(v.persistent_volume_claim.read_only).lower())


def _tolerations(spec: Any) -> list[str]:
    out = []
    for t in spec.tolerations:
        text = t.key or ""
        if t.operator == "Exists":
            text += ":" if not t.key else ""
        elif t.value:
            text += f"={t.value}"
        if t.effect:
            text += f":{t.effect}"
        if t.operator == "Exists" and t.key:
            text += " op=Exists"
        if t.HasField("toleration_seconds"):
            text += f" for {t.toleration_seconds}s"
        out.append(text or "op=Exists")
    return out


def _pod_template(w: _Writer, indent: int, template: Any) -> None:
    w.text(indent, "Pod Template:")
    i = indent + 1
    _multi(w, i, "Labels", _labels(template.metadata.labels))
    if template.metadata.annotations:
        _multi(w, i, "Annotations",
               [f"{k}: {v}" for k, v in sorted(template.metadata.annotations.items())])
    _containers(w, i, "Init Containers", template.spec.init_containers)
    _containers(w, i, "Containers", template.spec.containers)
    _volumes(w, i, template.spec.volumes)
    _multi(w, i, "Node-Selectors", _labels(template.spec.node_selector))
    _multi(w, i, "Tolerations", _tolerations(template.spec))


def _conditions(w: _Writer, conditions: Sequence[Any], with_reason: bool = True) -> None:
    if not conditions:
        return
    w.text(0, "Conditions:")
    headers = ["Type", "Status", "Reason"] if with_reason else ["Type", "Status"]
    rows = [[c.type, c.status, c.reason or NONE][: len(headers)] for c in conditions]
    rows.insert(0, ["-" * len(h) for h in headers])
    table = printers.format_table(headers, rows)
    w.raw("".join("  " + line + "\n" for line in table.splitlines()))


def events_section(events: Sequence[Any], now: float) -> str:
    """kubectl's Events block: Type, Reason, Age ('5s (x3 over 2m)'), From, Message."""
    if not events:
        return "Events:  <none>\n"
    rows = []
    for ev in sorted(events, key=lambda e: printers.event_last_seen(e) or 0.0):
        last = printers.event_last_seen(ev)
        age = "<unknown>" if last is None else printers.human_duration(now - last)
        first = printers.seconds_of(ev.first_timestamp)
        if ev.count > 1 and first is not None:
            age = f"{age} (x{ev.count} over {printers.human_duration(now - first)})"
        source = ev.source.component or ev.reporting_component or NONE
        if ev.source.host:
            source += f", {ev.source.host}"
        rows.append([ev.type or "Normal", ev.reason, age, source, ev.message])
    headers = ["Type", "Reason", "Age", "From", "Message"]
    rows.insert(0, ["-" * len(h) for h in headers])
    table = printers.format_table(headers, rows)
    return "Events:\n" + "".join("  " + line + "\n" for line in table.splitlines())


# ------------------------------------------------------------------- kinds


def _pod(w: _Writer, pod: Any, related: Related) -> None:
    spec, status = pod.spec, pod.status
    node = spec.node_name or NONE
    if spec.node_name and status.host_ip:
        node += f"/{status.host_ip}"
    w.kv(0, "Node", node)
    w.kv(0, "Start Time", timestamp(status.start_time))
    w.kv(0, "Status", printers.pod_status(pod) if pod.metadata.HasField("deletion_timestamp")
         else status.phase or "Pending")
    if status.reason:
        w.kv(0, "Reason", status.reason)
    if status.message:
        w.kv(0, "Message", status.message)
    w.kv(0, "IP", status.pod_ip or NONE)
    _containers(w, 0, "Init Containers", spec.init_containers, status.init_container_statuses)
    _containers(w, 0, "Containers", spec.containers, status.container_statuses)
    _conditions(w, status.conditions, with_reason=False)
    _volumes(w, 0, spec.volumes)
    _multi(w, 0, "Node-Selectors", _labels(spec.node_selector))
    _multi(w, 0, "Tolerations", _tolerations(spec))


def _replicas(spec: Any) -> int:
    return spec.replicas if spec.HasField("replicas") else 1


def _revision(rs: Any) -> int:
    try:
        return int(rs.metadata.annotations.get("deployment.kubernetes.io/revision", "0"))
    except ValueError:
        return 0


def _deployment(w: _Writer, d: Any, related: Related) -> None:
    spec, st = d.spec, d.status
    w.kv(0, "Selector", _selector(spec.selector))
    w.kv(0, "Replicas", f"{_replicas(spec)} desired | {st.updated_replicas} updated | "
                        f"{st.replicas} total | {st.available_replicas} available | "
                        f"{st.unavailable_replicas} unavailable")
    strategy = spec.strategy.type or "RollingUpdate"
    w.kv(0, "StrategyType", strategy)
    w.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if strategy == "RollingUpdate":
        ru = spec.strategy.rolling_update
        unavailable = _int_or_string(ru.max_unavailable) if ru.HasField(
            "max_unavailable") else "25%"
        surge = _int_or_string(ru.max_surge) if ru.HasField("max_surge") else "25%"
        w.kv(0, "RollingUpdateStrategy", f"{unavailable} max unavailable, {surge} max surge")
    if spec.paused:
        w.kv(0, "Paused", "true")
    _pod_template(w, 0, spec.template)
    _conditions(w, st.conditions)
    owned = [rs for rs in related.replica_sets
             if any(o.uid == d.metadata.uid for o in rs.metadata.owner_references)]
    owned.sort(key=_revision)
    new = owned[-1] if owned and _revision(owned[-1]) else None
    old = [rs for rs in owned if rs is not new and (_replicas(rs.spec) or rs.status.replicas)]
    _multi(w, 0, "OldReplicaSets",
           [f"{rs.metadata.name} ({rs.status.replicas}/{_replicas(rs.spec)} replicas created)"
            for rs in old])
    w.kv(0, "NewReplicaSet", NONE if new is None else
         f"{new.metadata.name} ({new.status.replicas}/{_replicas(new.spec)} replicas created)")


def _pods_status(pods: Sequence[Any]) -> str:
    phases = {p: 0 for p in ("Running", "Pending", "Succeeded", "Failed")}
    for pod in pods:
        phase = pod.status.phase or "Pending"
        phases[phase] = phases.get(phase, 0) + 1
    return (f"{phases['Running']} Running / {phases['Pending']} Waiting / "
            f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed")


def _replica_set(w: _Writer, rs: Any, related: Related) -> None:
    w.kv(0, "Selector", _selector(rs.spec.selector))
    w.kv(0, "Replicas", f"{rs.status.replicas} current / {_replicas(rs.spec)} desired")
    w.kv(0, "Pods Status", _pods_status(related.pods))
    _pod_template(w, 0, rs.spec.template)
    _conditions(w, rs.status.conditions)


def _stateful_set(w: _Writer, ss: Any, related: Related) -> None:
    spec = ss.spec
    w.kv(0, "Selector", _selector(spec.selector))
    w.kv(0, "Replicas", f"{_replicas(spec)} desired | {ss.status.replicas} total")
    w.kv(0, "Update Strategy", spec.update_strategy.type or "RollingUpdate")
    w.kv(0, "Pod Management Policy", spec.pod_management_policy or "OrderedReady")
    w.kv(0, "Service Name", spec.service_name or NONE)
    w.kv(0, "Pods Status", _pods_status(related.pods))
    _pod_template(w, 0, spec.template)
    if spec.volume_claim_templates:
        w.text(0, "Volume Claims:")
        for t in spec.volume_claim_templates:
            w.kv(1, "Name", t.metadata.name)
            w.kv(1, "StorageClass", t.spec.storage_class_name or NONE)
            w.kv(1, "Capacity", t.spec.resources.requests.get("storage", NONE))
            w.kv(1, "Access Modes", ",".join(t.spec.access_modes) or NONE)
    else:
        w.kv(0, "Volume Claims", NONE)


def _daemon_set(w: _Writer, ds: Any, related: Related) -> None:
    st = ds.status
    w.kv(0, "Selector", _selector(ds.spec.selector))
    w.kv(0, "Node-Selector", ",".join(_labels(ds.spec.template.spec.node_selector)) or NONE)
    w.kv(0, "Desired Number of Nodes Scheduled", st.desired_number_scheduled)
    w.kv(0, "Current Number of Nodes Scheduled", st.current_number_scheduled)
    w.kv(0, "Number of Nodes Scheduled with Up-to-date Pods", st.updated_number_scheduled)
    w.kv(0, "Number of Nodes Scheduled with Available Pods", st.number_available)
    w.kv(0, "Number of Nodes Misscheduled", st.number_misscheduled)
    w.kv(0, "Pods Status", _pods_status(related.pods))
    _pod_template(w, 0, ds.spec.template)


def _job(w: _Writer, job: Any, related: Related) -> None:
    spec, st = job.spec, job.status
    w.kv(0, "Selector", _selector(spec.selector))
    w.kv(0, "Parallelism", spec.parallelism if spec.HasField("parallelism") else 1)
    w.kv(0, "Completions", spec.completions if spec.HasField("completions") else 1)
    w.kv(0, "Backoff Limit", spec.backoff_limit if spec.HasField("backoff_limit") else 6)
    if spec.HasField("active_deadline_seconds"):
        w.kv(0, "Active Deadline Seconds", f"{spec.active_deadline_seconds}s")
    w.kv(0, "Start Time", timestamp(st.start_time))
    if st.HasField("completion_time"):
        w.kv(0, "Completed At", timestamp(st.completion_time))
    w.kv(0, "Pods Statuses", f"{st.active} Active / {st.succeeded} Succeeded / "
                             f"{st.failed} Failed")
    _pod_template(w, 0, spec.template)
    _conditions(w, st.conditions)


def _service(w: _Writer, svc: Any, related: Related) -> None:
    spec = svc.spec
    _multi(w, 0, "Selector", [",".join(_labels(spec.selector))] if spec.selector else [])
    w.kv(0, "Type", spec.type or "ClusterIP")
    w.kv(0, "IP", spec.cluster_ip or NONE)
    if spec.external_name:
        w.kv(0, "External Name", spec.external_name)
    for p in spec.ports:
        name = p.name or "<unset>"
        w.kv(0, "Port", f"{name}  {p.port}/{p.protocol or 'TCP'}")
        target = _int_or_string(p.target_port) if p.HasField("target_port") else str(p.port)
        w.kv(0, "TargetPort", f"{target}/{p.protocol or 'TCP'}")
        if p.node_port:
            w.kv(0, "NodePort", f"{name}  {p.node_port}/{p.protocol or 'TCP'}")
    w.kv(0, "Session Affinity", spec.session_affinity or "None")


def _node(w: _Writer, node: Any, related: Related) -> None:
    spec, st = node.spec, node.status
    w.kv(0, "Roles", printers.node_roles(node))
    _multi(w, 0, "Taints", [f"{t.key}={t.value}:{t.effect}" if t.value else
                            f"{t.key}:{t.effect}" for t in spec.taints])
    w.kv(0, "Unschedulable", str(spec.unschedulable).lower())
    if st.conditions:
        w.text(0, "Conditions:")
        headers = ["Type", "Status", "LastHeartbeatTime", "Reason", "Message"]
        rows = [["-" * len(h) for h in headers]]
        rows += [[c.type, c.status, timestamp(c.last_heartbeat_time), c.reason or NONE,
                  c.message or NONE] for c in st.conditions]
        table = printers.format_table(headers, rows)
        w.raw("".join("  " + line + "\n" for line in table.splitlines()))
    w.text(0, "Addresses:")
    for a in st.addresses:
        w.kv(1, a.type, a.address)
    for key, values in (("Capacity", st.capacity), ("Allocatable", st.allocatable)):
        w.text(0, f"{key}:")
        for k in sorted(values):
            w.kv(1, k, values[k])
    info = st.node_info
    w.text(0, "System Info:")
    for key, value in (("Machine ID", info.machine_id), ("Boot ID", info.boot_id),
                       ("Kernel Version", info.kernel_version), ("OS Image", info.os_image),
                       ("Operating System", info.operating_system),
                       ("Architecture", info.architecture),
                       ("Container Runtime Version", info.container_runtime_version),
                       ("Kubelet Version", info.kubelet_version)):
        w.kv(1, key, value)
    w.kv(0, "PodCIDR", spec.pod_cidr or NONE)
    if st.usage.HasField("timestamp"):
        u = st.usage
        w.kv(0, "Usage", f"cpu {u.cpu_percent:.1f}%, memory "
                         f"{u.memory_used_bytes // 2**20}Mi used / "
                         f"{u.memory_available_bytes // 2**20}Mi available")
    pods = [p for p in related.pods if not p.metadata.HasField("deletion_timestamp")]
    w.text(0, f"Non-terminated Pods:          ({len(pods)} in total)")
    if pods:
        headers = ["Namespace", "Name", "CPU Requests", "Memory Requests", "Age"]
        rows = [["-" * len(h) for h in headers]]
        for p in sorted(pods, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            cpu = ",".join(c.resources.requests.get("cpu", "") for c in p.spec.containers
                           if c.resources.requests.get("cpu")) or "0"
            mem = ",".join(c.resources.requests.get("memory", "") for c in p.spec.containers
                           if c.resources.requests.get("memory")) or "0"
            rows.append([p.metadata.namespace, p.metadata.name, cpu, mem,
                         printers.age(p.metadata.creation_timestamp, related.now)])
        table = printers.format_table(headers, rows)
        w.raw("".join("  " + line + "\n" for line in table.splitlines()))


def _namespace(w: _Writer, ns: Any, related: Related) -> None:
    w.kv(0, "Status", ns.status.phase or "Active")


def _config_map(w: _Writer, cm: Any, related: Related) -> None:
    w.raw("\nData\n====")
    for key in sorted(cm.data):
        w.raw(f"{key}:\n----\n{cm.data[key]}\n")
    if cm.binary_data:
        w.raw("\nBinaryData\n====")
        for key in sorted(cm.binary_data):
            w.raw(f"{key}: {len(cm.binary_data[key])} bytes")


def _secret(w: _Writer, s: Any, related: Related) -> None:
    # Sizes only: describe never prints a secret's values.
    w.raw(f"\nType:  {s.type or 'Opaque'}\n\nData\n====")
    for key in sorted(s.data):
        w.raw(f"{key}:  {len(s.data[key])} bytes")


def _endpoints(w: _Writer, ep: Any, related: Related) -> None:
    w.text(0, "Subsets:")
    for subset in ep.subsets:
        w.kv(1, "Addresses", ",".join(a.ip for a in subset.addresses) or NONE)
        w.kv(1, "NotReadyAddresses", ",".join(a.ip for a in subset.not_ready_addresses) or NONE)
        w.text(1, "Ports:")
        for p in subset.ports:
            w.text(2, f"{p.name or '<unset>'}  {p.port}  {p.protocol or 'TCP'}")


def _pvc(w: _Writer, pvc: Any, related: Related) -> None:
    w.kv(0, "StorageClass", pvc.spec.storage_class_name or NONE)
    w.kv(0, "Status", pvc.status.phase or "Pending")
    w.kv(0, "Volume", pvc.spec.volume_name or NONE)
    w.kv(0, "Capacity", pvc.status.capacity.get("storage", NONE))
    w.kv(0, "Access Modes", ",".join(pvc.spec.access_modes) or NONE)
    w.kv(0, "Used By", ",".join(p.metadata.name for p in related.pods) or NONE)


def _lease(w: _Writer, lease: Any, related: Related) -> None:
    spec = lease.spec
    w.kv(0, "Holder Identity", spec.holder_identity or NONE)
    if spec.HasField("lease_duration_seconds"):
        w.kv(0, "Lease Duration Seconds", spec.lease_duration_seconds)
    w.kv(0, "Acquire Time", timestamp(spec.acquire_time))
    w.kv(0, "Renew Time", timestamp(spec.renew_time))


def _event(w: _Writer, ev: Any, related: Related) -> None:
    w.kv(0, "Involved Object", f"{ev.involved_object.kind}/{ev.involved_object.name}")
    w.kv(0, "Type", ev.type or "Normal")
    w.kv(0, "Reason", ev.reason)
    w.kv(0, "Message", ev.message)
    w.kv(0, "Count", ev.count)
    w.kv(0, "First Timestamp", timestamp(ev.first_timestamp))
    w.kv(0, "Last Timestamp", timestamp(ev.last_timestamp))
    w.kv(0, "Source", ev.source.component or ev.reporting_component or NONE)


_BODIES = {
    "Pod": _pod, "Deployment": _deployment, "ReplicaSet": _replica_set,
    "StatefulSet": _stateful_set, "DaemonSet": _daemon_set, "Job": _job,
    "Service": _service, "Node": _node, "Namespace": _namespace, "ConfigMap": _config_map,
    "Secret": _secret, "Endpoints": _endpoints, "PersistentVolumeClaim": _pvc,
    "Lease": _lease, "Event": _event,
}


def describe(info: kinds.KindInfo, obj: Any, now: float, related: Related | None = None) -> str:
    related = related or Related()
    related.now = now
    w = _Writer()
    _header(w, info, obj)
    _BODIES[info.kind](w, obj, related)
    text = w.render()
    if info.kind != "Event":
        text += events_section(related.events, now)
    return text


def describe_template(template: Any) -> str:
    """A pod template alone (rollout history --revision)."""
    w = _Writer()
    _pod_template(w, 0, template)
    return w.render()
