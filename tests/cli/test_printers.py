"""corral.printers: kubectl's AGE format, columns per kind, table layout."""

from __future__ import annotations

import re

import pytest

from corral import kinds, printers
from corral.v1 import api_pb2, apps_pb2, batch_pb2, core_pb2

NOW = 1_700_000_000.0


def stamp(msg: object, seconds_ago: float) -> None:
    msg.metadata.creation_timestamp.FromSeconds(int(NOW - seconds_ago))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"),
        (302, "5m2s"), (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
        (3 * 3600 + 4 * 60, "3h4m"), (8 * 3600, "8h"), (47 * 3600, "47h"),
        (2 * 86400 + 3 * 3600, "2d3h"), (4 * 86400, "4d"), (8 * 86400, "8d"),
        (400 * 86400, "400d"), (2 * 365 * 86400 + 10 * 86400, "2y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert printers.human_duration(seconds) == text


def test_table_layout_is_kubectls_tabwriter() -> None:
    out = printers.format_table(["NAME", "READY", "AGE"], [["nginx", "1/1", "5s"],
                                                           ["a", "0/1", "10m"]])
    assert out == ("NAME    READY   AGE\n"
                   "nginx   1/1     5s\n"
                   "a       0/1     10m\n")


def make_pod(name: str = "web-1") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    stamp(pod, 302)
    pod.spec.containers.add(name="app", image="busybox")
    pod.spec.containers.add(name="side", image="busybox")
    pod.spec.node_name = "h1"
    pod.status.phase = "Running"
    pod.status.pod_ip = "10.244.1.5"
    for name in ("app", "side"):
        cs = pod.status.container_statuses.add(name=name, ready=True)
        cs.state.running.started_at.FromSeconds(int(NOW - 300))
    return pod


def test_pod_columns_and_wide() -> None:
    info = kinds.by_kind("Pod")
    pod = make_pod()
    assert printers.table(info, [pod], NOW) == (
        "NAME    READY   STATUS    RESTARTS   AGE\n"
        "web-1   2/2     Running   0          5m2s\n")
    assert printers.table(info, [pod], NOW, wide=True, all_namespaces=True) == (
        "NAMESPACE   NAME    READY   STATUS    RESTARTS   AGE    IP           NODE\n"
        "default     web-1   2/2     Running   0          5m2s   10.244.1.5   h1\n")
    assert printers.table(info, [pod], NOW, kind_prefix=True).splitlines()[1].startswith(
        "pod/web-1   ")


def test_pod_status_reasons() -> None:
    pod = make_pod()
    side = pod.status.container_statuses[1]
    side.ready = False
    side.state.Clear()
    side.state.waiting.reason = "CrashLoopBackOff"
    side.restart_count = 4
    side.last_state.terminated.exit_code = 1
    side.last_state.terminated.finished_at.FromSeconds(int(NOW - 65))
    assert printers.pod_status(pod) == "CrashLoopBackOff"
    assert printers.pod_ready(pod) == "1/2"
    assert printers.pod_restarts(pod, NOW) == "4 (65s ago)"

    pod = make_pod()
    pod.spec.init_containers.add(name="init", image="busybox")
    pod.status.phase = "Pending"
    init = pod.status.init_container_statuses.add(name="init")
    init.state.running.SetInParent()
    assert printers.pod_status(pod) == "Init:0/1"
    init.state.Clear()
    init.state.terminated.exit_code = 2
    assert printers.pod_status(pod) == "Init:ExitCode:2"

    pod = make_pod()
    for cs in pod.status.container_statuses:
        cs.state.Clear()
        cs.state.terminated.reason = "Completed"
    pod.status.phase = "Succeeded"
    assert printers.pod_status(pod) == "Completed"
    pod.metadata.deletion_timestamp.FromSeconds(int(NOW))
    assert printers.pod_status(pod) == "Terminating"

    bare = core_pb2.Pod()
    bare.spec.containers.add(name="a")
    assert printers.pod_status(bare) == "Pending"
    assert printers.pod_ready(bare) == "0/1"


def test_deployment_replicaset_statefulset_daemonset_job_columns() -> None:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    stamp(d, 3 * 3600 + 4 * 60)
    d.spec.replicas = 3
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.spec.containers.add(name="web", image="busybox:1")
    d.status.ready_replicas = 2
    d.status.updated_replicas = 3
    d.status.available_replicas = 2
    out = printers.table(kinds.by_kind("Deployment"), [d], NOW, wide=True)
    assert out == (
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE    CONTAINERS   IMAGES      SELECTOR\n"
        "web    2/3     3            2           3h4m   web          busybox:1   app=web\n")

    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = "web-abc"
    stamp(rs, 45)
    rs.spec.replicas = 3
    rs.status.replicas = 3
    rs.status.ready_replicas = 1
    assert printers.table(kinds.by_kind("ReplicaSet"), [rs], NOW).splitlines() == [
        "NAME      DESIRED   CURRENT   READY   AGE", "web-abc   3         3         1       45s"]

    ss = apps_pb2.StatefulSet()
    ss.metadata.name = "db"
    stamp(ss, 2 * 86400 + 3 * 3600)
    ss.status.ready_replicas = 1  # spec.replicas unset: Kubernetes' default 1
    assert printers.table(kinds.by_kind("StatefulSet"), [ss], NOW).splitlines()[1] == (
        "db     1/1     2d3h")

    ds = apps_pb2.DaemonSet()
    ds.metadata.name = "agent"
    stamp(ds, 4 * 86400)
    ds.spec.template.spec.node_selector["disk"] = "ssd"
    ds.status.desired_number_scheduled = 3
    ds.status.current_number_scheduled = 3
    ds.status.number_ready = 2
    ds.status.updated_number_scheduled = 3
    ds.status.number_available = 2
    assert printers.table(kinds.by_kind("DaemonSet"), [ds], NOW).splitlines() == [
        "NAME    DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE",
        "agent   3         3         2       3            2           disk=ssd        4d"]

    job = batch_pb2.Job()
    job.metadata.name = "pi"
    stamp(job, 600)
    job.spec.completions = 5
    job.status.succeeded = 5
    job.status.start_time.FromSeconds(int(NOW - 590))
    job.status.completion_time.FromSeconds(int(NOW - 548))
    job.status.conditions.add(type="Complete", status="True")
    assert printers.table(kinds.by_kind("Job"), [job], NOW).splitlines()[1] == (
        "pi     Complete   5/5           42s        10m")


def test_service_endpoints_configmap_secret_namespace_columns() -> None:
    svc = core_pb2.Service()
    svc.metadata.name = "web"
    stamp(svc, 60)
    svc.spec.type = "NodePort"
    svc.spec.cluster_ip = "10.96.0.20"
    svc.spec.ports.add(port=80, node_port=30080, protocol="TCP")
    svc.spec.ports.add(port=53, protocol="UDP")
    svc.spec.selector["app"] = "web"
    assert printers.table(kinds.by_kind("Service"), [svc], NOW, wide=True).splitlines() == [
        "NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)               AGE   SELECTOR",
        "web    NodePort   10.96.0.20   <none>        80:30080/TCP,53/UDP   60s   app=web"]

    ep = core_pb2.Endpoints()
    ep.metadata.name = "web"
    subset = ep.subsets.add()
    for i in range(5):
        subset.addresses.add(ip=f"10.244.1.{i}")
    subset.ports.add(port=8080)
    assert printers.endpoints_text(ep) == (
        "10.244.1.0:8080,10.244.1.1:8080,10.244.1.2:8080 + 2 more...")
    assert printers.endpoints_text(core_pb2.Endpoints()) == "<none>"

    cm = core_pb2.ConfigMap()
    cm.metadata.name = "cfg"
    cm.data["a"] = "1"
    cm.binary_data["b"] = b"\0"
    assert printers.table(kinds.by_kind("ConfigMap"), [cm], NOW).splitlines()[1] == (
        "cfg    2      <unknown>")

    secret = core_pb2.Secret()
    secret.metadata.name = "s"
    secret.data["k"] = b"v"
    assert printers.table(kinds.by_kind("Secret"), [secret], NOW).splitlines() == [
        "NAME   TYPE     DATA   AGE", "s      Opaque   1      <unknown>"]

    ns = core_pb2.Namespace()
    ns.metadata.name = "default"
    ns.status.phase = "Active"
    stamp(ns, 86400 * 3)
    assert printers.table(kinds.by_kind("Namespace"), [ns], NOW, all_namespaces=True) == (
        "NAME      STATUS   AGE\ndefault   Active   3d\n")


def test_node_columns() -> None:
    node = core_pb2.Node()
    node.metadata.name = "h1"
    node.metadata.labels["node-role.kubernetes.io/control-plane"] = ""
    stamp(node, 120)
    node.spec.unschedulable = True
    node.status.conditions.add(type="Ready", status="True")
    node.status.addresses.add(type="InternalIP", address="10.250.0.1")
    info = node.status.node_info
    info.kubelet_version = "corral-0.1.0"
    info.os_image = "Debian GNU/Linux 12 (bookworm)"
    info.kernel_version = "6.1.0"
    info.container_runtime_version = "podman://4.3.1"
    out = printers.table(kinds.by_kind("Node"), [node], NOW, wide=True).splitlines()
    assert re.split(r"\s{2,}", out[0]) == [
        "NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
        "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert re.split(r"\s{2,}", out[1]) == [
        "h1", "Ready,SchedulingDisabled", "control-plane", "2m", "corral-0.1.0", "10.250.0.1",
        "<none>", "Debian GNU/Linux 12 (bookworm)", "6.1.0", "podman://4.3.1"]
    # every cell starts under its header
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s{3}))\S", out[0])]
    assert starts == [m.start() for m in re.finditer(r"(?:^|(?<=\s{3}))\S", out[1])]
    node.status.conditions[0].status = "Unknown"
    assert printers.node_status(node) == "Unknown,SchedulingDisabled"


def test_events_sorted_by_last_seen_with_object() -> None:
    def event(reason: str, ago: int) -> core_pb2.Event:
        ev = core_pb2.Event(reason=reason, message=f"{reason} happened", type="Normal")
        ev.metadata.namespace = "default"
        ev.involved_object.kind = "Pod"
        ev.involved_object.name = "web-1"
        ev.last_timestamp.FromSeconds(int(NOW - ago))
        return ev

    out = printers.table(kinds.by_kind("Event"), [event("Started", 5), event("Pulled", 30)],
                         NOW, all_namespaces=True)
    assert out.splitlines() == [
        "NAMESPACE   LAST SEEN   TYPE     REASON    OBJECT      MESSAGE",
        "default     30s         Normal   Pulled    pod/web-1   Pulled happened",
        "default     5s          Normal   Started   pod/web-1   Started happened"]


def test_names_and_empty_messages() -> None:
    assert printers.name_of(kinds.by_kind("Deployment"), "web") == "deployment.apps/web"
    assert printers.name_of(kinds.by_kind("Pod"), "p") == "pod/p"
    assert printers.name_of(kinds.by_kind("Job"), "j") == "job.batch/j"
    assert printers.no_resources("default", True) == "No resources found in default namespace."
    assert printers.no_resources("", True) == "No resources found"
    assert printers.no_resources("default", False) == "No resources found"


def test_top_tables() -> None:
    node = core_pb2.Node()
    node.metadata.name = "h1"
    node.status.capacity.update({"cpu": "2", "memory": "4Gi"})
    node.status.allocatable.update({"cpu": "2", "memory": "4Gi"})
    node.status.usage.cpu_percent = 25.0
    node.status.usage.memory_used_bytes = 1024 * 2**20
    node.status.usage.timestamp.FromSeconds(int(NOW))
    silent = core_pb2.Node()
    silent.metadata.name = "h2"
    assert printers.top_nodes([node, silent]).splitlines() == [
        "NAME   CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%",
        "h1     500m         25%         1024Mi          25%",
        "h2     <unknown>    <unknown>   <unknown>       <unknown>"]
    usage = api_pb2.PodUsage(namespace="default", name="web-1", node_name="h1")
    usage.containers.add(name="app", cpu_millicores=12, memory_bytes=5 * 2**20)
    usage.containers.add(name="side", cpu_millicores=3, memory_bytes=2 * 2**20)
    assert printers.top_pods([usage]).splitlines() == [
        "NAME    CPU(cores)   MEMORY(bytes)", "web-1   15m          7Mi"]
    assert printers.top_pods([usage], containers=True, all_namespaces=True).splitlines() == [
        "NAMESPACE   POD     NAME   CPU(cores)   MEMORY(bytes)",
        "default     web-1   app    12m          5Mi",
        "default     web-1   side   3m           2Mi"]
