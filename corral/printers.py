"""How the CLI prints objects: kubectl's columns, AGE format and table layout.

Everything here is a pure function of the objects and a `now` (seconds since
the epoch) passed in, so tables are tested without a cluster or a clock. Plain
text only (scripts parse it): columns are padded like kubectl's tabwriter
(3 spaces between columns, minimum width 6, no trailing spaces).

    table(info, objs, now, wide=..., all_namespaces=..., kind_prefix=...)
    name_of(info, name)       -> "deployment.apps/web"   (-o name, apply's output)
    human_duration(seconds)   -> "45s", "5m2s", "3h4m", "2d3h", "4d"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral import kinds, quantity, selectors
from corral.errors import CorralError

NONE = "<none>"

# ------------------------------------------------------------------- primitives


def human_duration(seconds: float) -> str:
    """kubectl's AGE: apimachinery's duration.HumanDuration, to the same breakpoints."""
    secs = math.floor(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def seconds_of(ts: Timestamp) -> float | None:
    """A Timestamp as epoch seconds; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def age(ts: Timestamp, now: float) -> str:
    when = seconds_of(ts)
    return "<unknown>" if when is None else human_duration(now - when)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl's tabwriter lays them out (minwidth 6, padding 3)."""
    rows = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(headers))]
    widths = [max(w, 6) for w in widths]
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + [r[-1]]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def name_of(info: kinds.KindInfo, name: str) -> str:
    """kubectl's resource/name: 'pod/web-1', 'deployment.apps/web'."""
    group = info.group
    kind = info.kind.lower()
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def no_resources(namespace: str, namespaced: bool) -> str:
    if namespaced and namespace:
        return f"No resources found in {namespace} namespace."
    return "No resources found"


def _join(values: Iterable[str]) -> str:
    text = ",".join(v for v in values if v)
    return text or NONE


def _selector_text(sel: Any) -> str:
    try:
        text = str(selectors.from_proto(sel))
    except CorralError:
        text = ""
    return text or NONE


def _map_text(labels: Any) -> str:
    return _join(f"{k}={v}" for k, v in sorted(labels.items()))


def _containers(spec: Any) -> tuple[str, str]:
    return (_join(c.name for c in spec.containers), _join(c.image for c in spec.containers))


def _condition(conditions: Iterable[Any], type_: str) -> Any | None:
    return next((c for c in conditions if c.type == type_), None)


# ------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Columns:
    """A kind's columns after NAME: `row` gives their cells; `wide_row` the cells
    `-o wide` appends."""

    headers: tuple[str, ...]
    row: Callable[[Any, float], list[str]]
    wide_headers: tuple[str, ...] = ()
    wide_row: Callable[[Any, float], list[str]] | None = None


def pod_ready(pod: Any) -> str:
    ready = sum(1 for c in pod.status.container_statuses if c.ready)
    return f"{ready}/{len(pod.spec.containers)}"


def pod_status(pod: Any) -> str:
    """The STATUS column: kubectl's printPod reasoning, simplified to Corral's fields."""
    status = pod.status
    reason = status.reason or status.phase or "Pending"
    initializing = False
    for i, c in enumerate(status.init_container_statuses):
        term, wait = c.state.terminated, c.state.waiting
        if c.state.HasField("terminated") and term.exit_code == 0:
            continue
        if c.state.HasField("terminated"):
            if term.reason:
                reason = f"Init:{term.reason}"
            elif term.signal:
                reason = f"Init:Signal:{term.signal}"
            else:
                reason = f"Init:ExitCode:{term.exit_code}"
        elif c.state.HasField("waiting") and wait.reason and wait.reason != "PodInitializing":
            reason = f"Init:{wait.reason}"
        else:
            reason = f"Init:{i}/{len(pod.spec.init_containers)}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for c in reversed(status.container_statuses):
            term, wait = c.state.terminated, c.state.waiting
            if c.state.HasField("waiting") and wait.reason:
                reason = wait.reason
            elif c.state.HasField("terminated") and term.reason:
                reason = term.reason
            elif c.state.HasField("terminated"):
                reason = f"Signal:{term.signal}" if term.signal else f"ExitCode:{term.exit_code}"
            elif c.state.HasField("running") and c.ready:
                has_running = True
        if reason == "Completed" and has_running:
            ready = _condition(status.conditions, "Ready")
            reason = "Running" if ready is not None and ready.status == "True" else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        reason = "Unknown" if status.reason == "NodeLost" else "Terminating"
    return reason


def pod_restarts(pod: Any, now: float) -> str:
    statuses = list(pod.status.container_statuses)
    count = sum(c.restart_count for c in statuses)
    last = [
        seconds_of(c.last_state.terminated.finished_at)
        for c in statuses
        if c.last_state.HasField("terminated")
    ]
    when = max((t for t in last if t is not None), default=None)
    if count and when is not None:
        return f"{count} ({human_duration(now - when)} ago)"
    return str(count)


def _pod(pod: Any, now: float) -> list[str]:
    return [pod_ready(pod), pod_status(pod), pod_restarts(pod, now),
            age(pod.metadata.creation_timestamp, now)]


def _pod_wide(pod: Any, now: float) -> list[str]:
    return [pod.status.pod_ip or NONE, pod.spec.node_name or NONE]


def _replicas(spec: Any) -> int:
    return spec.replicas if spec.HasField("replicas") else 1


def _deployment(d: Any, now: float) -> list[str]:
    s = d.status
    return [f"{s.ready_replicas}/{_replicas(d.spec)}", str(s.updated_replicas),
            str(s.available_replicas), age(d.metadata.creation_timestamp, now)]


def _workload_wide(obj: Any, now: float) -> list[str]:
    return [*_containers(obj.spec.template.spec), _selector_text(obj.spec.selector)]


def _replica_set(rs: Any, now: float) -> list[str]:
    return [str(_replicas(rs.spec)), str(rs.status.replicas), str(rs.status.ready_replicas),
            age(rs.metadata.creation_timestamp, now)]


def _stateful_set(ss: Any, now: float) -> list[str]:
    return [f"{ss.status.ready_replicas}/{_replicas(ss.spec)}",
            age(ss.metadata.creation_timestamp, now)]


def _daemon_set(ds: Any, now: float) -> list[str]:
    s = ds.status
    return [str(s.desired_number_scheduled), str(s.current_number_scheduled),
            str(s.number_ready), str(s.updated_number_scheduled), str(s.number_available),
            _map_text(ds.spec.template.spec.node_selector),
            age(ds.metadata.creation_timestamp, now)]


def job_status(job: Any) -> str:
    for type_ in ("Complete", "Failed", "Suspended", "FailureTarget"):
        cond = _condition(job.status.conditions, type_)
        if cond is not None and cond.status == "True":
            return type_
    return "Running"


def _job(job: Any, now: float) -> list[str]:
    spec, status = job.spec, job.status
    if spec.HasField("completions"):
        completions = f"{status.succeeded}/{spec.completions}"
    elif spec.HasField("parallelism") and spec.parallelism > 1:
        completions = f"{status.succeeded}/1 of {spec.parallelism}"
    else:
        completions = f"{status.succeeded}/1"
    start = seconds_of(status.start_time)
    end = seconds_of(status.completion_time)
    duration = "" if start is None else human_duration((end if end is not None else now) - start)
    return [job_status(job), completions, duration, age(job.metadata.creation_timestamp, now)]


def service_ports(svc: Any) -> str:
    parts = []
    for p in svc.spec.ports:
        protocol = p.protocol or "TCP"
        parts.append(f"{p.port}:{p.node_port}/{protocol}" if p.node_port
                     else f"{p.port}/{protocol}")
    return _join(parts)


def _service(svc: Any, now: float) -> list[str]:
    spec = svc.spec
    type_ = spec.type or "ClusterIP"
    if type_ == "ExternalName":
        external = spec.external_name or NONE
    elif type_ == "LoadBalancer":
        ips = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
        external = ",".join(ips) if ips else "<pending>"
    else:
        external = NONE
    return [type_, spec.cluster_ip or NONE, external, service_ports(svc),
            age(svc.metadata.creation_timestamp, now)]


def _service_wide(svc: Any, now: float) -> list[str]:
    return [_map_text(svc.spec.selector)]


def endpoints_text(ep: Any, limit: int = 3) -> str:
    items: list[str] = []
    for subset in ep.subsets:
        for addr in subset.addresses:
            if subset.ports:
                items.extend(f"{addr.ip}:{p.port}" for p in subset.ports)
            else:
                items.append(addr.ip)
    if not items:
        return NONE
    text = ",".join(items[:limit])
    if len(items) > limit:
        text += f" + {len(items) - limit} more..."
    return text


def _endpoints(ep: Any, now: float) -> list[str]:
    return [endpoints_text(ep), age(ep.metadata.creation_timestamp, now)]


def _config_map(cm: Any, now: float) -> list[str]:
    return [str(len(cm.data) + len(cm.binary_data)), age(cm.metadata.creation_timestamp, now)]


def _secret(s: Any, now: float) -> list[str]:
    return [s.type or "Opaque", str(len(s.data)), age(s.metadata.creation_timestamp, now)]


def _namespace(ns: Any, now: float) -> list[str]:
    return [ns.status.phase or "Active", age(ns.metadata.creation_timestamp, now)]


def node_status(node: Any) -> str:
    ready = _condition(node.status.conditions, "Ready")
    if ready is None or ready.status == "Unknown":
        text = "Unknown"
    elif ready.status == "True":
        text = "Ready"
    else:
        text = "NotReady"
    if node.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def node_roles(node: Any) -> str:
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.split("/", 1)[1])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return _join(sorted(r for r in roles if r))


def _node(node: Any, now: float) -> list[str]:
    return [node_status(node), node_roles(node), age(node.metadata.creation_timestamp, now),
            node.status.node_info.kubelet_version or NONE]


def node_address(node: Any, type_: str) -> str:
    return _join(a.address for a in node.status.addresses if a.type == type_)


def _node_wide(node: Any, now: float) -> list[str]:
    info = node.status.node_info
    return [node_address(node, "InternalIP"), node_address(node, "ExternalIP"),
            info.os_image or "<unknown>", info.kernel_version or "<unknown>",
            info.container_runtime_version or "<unknown>"]


def event_object(ev: Any) -> str:
    ref = ev.involved_object
    return f"{ref.kind.lower()}/{ref.name}"


def event_last_seen(ev: Any) -> float | None:
    for ts in (ev.last_timestamp, ev.first_timestamp, ev.metadata.creation_timestamp):
        when = seconds_of(ts)
        if when is not None:
            return when
    return None


def _event(ev: Any, now: float) -> list[str]:
    when = event_last_seen(ev)
    last = "<unknown>" if when is None else human_duration(now - when)
    return [last, ev.type or "Normal", ev.reason, event_object(ev), ev.message]


_ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                 "ReadWriteOncePod": "RWOP"}


def _pvc(pvc: Any, now: float) -> list[str]:
    modes = pvc.status.access_modes or pvc.spec.access_modes
    return [pvc.status.phase or "Pending", pvc.spec.volume_name,
            pvc.status.capacity.get("storage", ""),
            ",".join(_ACCESS_MODES.get(m, m) for m in modes),
            pvc.spec.storage_class_name, age(pvc.metadata.creation_timestamp, now)]


def _lease(lease: Any, now: float) -> list[str]:
    return [lease.spec.holder_identity or NONE, age(lease.metadata.creation_timestamp, now)]


_WORKLOAD_WIDE = ("CONTAINERS", "IMAGES", "SELECTOR")

COLUMNS: dict[str, Columns] = {
    "Pod": Columns(("READY", "STATUS", "RESTARTS", "AGE"), _pod, ("IP", "NODE"), _pod_wide),
    "Deployment": Columns(("READY", "UP-TO-DATE", "AVAILABLE", "AGE"), _deployment,
                          _WORKLOAD_WIDE, _workload_wide),
    "ReplicaSet": Columns(("DESIRED", "CURRENT", "READY", "AGE"), _replica_set,
                          _WORKLOAD_WIDE, _workload_wide),
    "StatefulSet": Columns(("READY", "AGE"), _stateful_set, ("CONTAINERS", "IMAGES"),
                           lambda o, now: list(_containers(o.spec.template.spec))),
    "DaemonSet": Columns(("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                          "NODE SELECTOR", "AGE"), _daemon_set, _WORKLOAD_WIDE, _workload_wide),
    "Job": Columns(("STATUS", "COMPLETIONS", "DURATION", "AGE"), _job,
                   _WORKLOAD_WIDE, _workload_wide),
    "Service": Columns(("TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), _service,
                       ("SELECTOR",), _service_wide),
    "Endpoints": Columns(("ENDPOINTS", "AGE"), _endpoints),
    "ConfigMap": Columns(("DATA", "AGE"), _config_map),
    "Secret": Columns(("TYPE", "DATA", "AGE"), _secret),
    "Namespace": Columns(("STATUS", "AGE"), _namespace),
    "Node": Columns(("STATUS", "ROLES", "AGE", "VERSION"), _node,
                    ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                     "CONTAINER-RUNTIME"), _node_wide),
    "PersistentVolumeClaim": Columns(("STATUS", "VOLUME", "CAPACITY", "ACCESS MODES",
                                      "STORAGECLASS", "AGE"), _pvc),
    "Lease": Columns(("HOLDER", "AGE"), _lease),
}


def table_rows(
    info: kinds.KindInfo,
    objs: Sequence[Any],
    now: float,
    *,
    wide: bool = False,
    all_namespaces: bool = False,
    kind_prefix: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for `get`; NAMESPACE first with -A, 'kind.group/name' names
    when several kinds are printed (`get all`)."""
    if info.kind == "Event":
        return _event_rows(objs, now, all_namespaces)
    cols = COLUMNS[info.kind]
    headers = ["NAME", *cols.headers]
    if wide and cols.wide_row is not None:
        headers += cols.wide_headers
    if all_namespaces and info.namespaced:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in objs:
        name = obj.metadata.name
        row = [name_of(info, name) if kind_prefix else name, *cols.row(obj, now)]
        if wide and cols.wide_row is not None:
            row += cols.wide_row(obj, now)
        if all_namespaces and info.namespaced:
            row.insert(0, obj.metadata.namespace)
        rows.append(row)
    return headers, rows


def _event_rows(objs: Sequence[Any], now: float,
                all_namespaces: bool) -> tuple[list[str], list[list[str]]]:
    headers = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    ordered = sorted(objs, key=lambda e: event_last_seen(e) or 0.0)
    rows = [_event(e, now) for e in ordered]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        rows = [[e.metadata.namespace, *r] for e, r in zip(ordered, rows, strict=True)]
    return headers, rows


def table(info: kinds.KindInfo, objs: Sequence[Any], now: float, **options: bool) -> str:
    headers, rows = table_rows(info, objs, now, **options)
    return format_table(headers, rows)


# ------------------------------------------------------------------- top


def _mebibytes(n: int) -> str:
    return f"{n // 2**20}Mi"  # kubectl top prints memory in Mi whatever its size


def _percent(part: float, whole: float) -> str:
    return f"{round(100 * part / whole)}%" if whole > 0 else "<unknown>"


def top_nodes(nodes: Sequence[Any]) -> str:
    """`top nodes`: usage from Node status.usage, percentages of allocatable (as kubectl)."""
    rows = []
    for node in nodes:
        status = node.status
        usage = status.usage
        capacity_cpu = quantity.cpu_millis(status.capacity.get("cpu", "0"))
        alloc_cpu = quantity.cpu_millis(status.allocatable.get("cpu", "0")) or capacity_cpu
        alloc_mem = quantity.bytes_of(status.allocatable.get("memory", "0")) or \
            quantity.bytes_of(status.capacity.get("memory", "0"))
        if not usage.HasField("timestamp"):
            rows.append([node.metadata.name, "<unknown>", "<unknown>", "<unknown>", "<unknown>"])
            continue
        cpu_used = round(usage.cpu_percent / 100 * capacity_cpu)
        mem_used = usage.memory_used_bytes
        rows.append([node.metadata.name, f"{cpu_used}m", _percent(cpu_used, alloc_cpu),
                     _mebibytes(mem_used), _percent(mem_used, alloc_mem)])
    return format_table(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], rows)


def top_pods(pods: Sequence[Any], *, containers: bool = False,
             all_namespaces: bool = False) -> str:
    """`top pods` from a TopResponse's PodUsage list."""
    rows = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        lead = [pod.namespace] if all_namespaces else []
        if containers:
            for c in pod.containers:
                rows.append([*lead, pod.name, c.name, f"{c.cpu_millicores}m",
                             _mebibytes(c.memory_bytes)])
        else:
            cpu = sum(c.cpu_millicores for c in pod.containers)
            mem = sum(c.memory_bytes for c in pod.containers)
            rows.append([*lead, pod.name, f"{cpu}m", _mebibytes(mem)])
    headers = ["POD", "NAME"] if containers else ["NAME"]
    headers += ["CPU(cores)", "MEMORY(bytes)"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    return format_table(headers, rows)
