"""A pod's container rendered as podman-py `containers.create` keyword arguments. Pure.

Every container of a pod joins the pod's network namespace by path
(`network_mode="ns:/run/netns/<name>"`), gets the pod's hosts and resolv.conf
files bind-mounted over /etc/hosts and /etc/resolv.conf (Podman then writes
neither), the pod's volumes, CPU and memory limits from resources.limits and
CPU shares from resources.requests (kubelet's formulas), and the labels that
name its pod (records.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral import quantity
from corral.errors import Invalid
from corral.v1 import core_pb2
from nodeagent import envvars

CPU_PERIOD_US = 100_000
MIN_SHARES = 2
MAX_SHARES = 262_144


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = False


def cpu_quota(millis: int) -> int:
    """kubelet's MilliCPUToQuota: quota per 100 ms period, at least 1 ms."""
    if millis <= 0:
        return 0
    return max(1000, millis * CPU_PERIOD_US // 1000)


def cpu_shares(millis: int) -> int:
    """kubelet's MilliCPUToShares."""
    if millis <= 0:
        return MIN_SHARES
    return min(MAX_SHARES, max(MIN_SHARES, millis * 1024 // 1000))


def resource_kwargs(container: core_pb2.Container, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limits = container.resources.limits
    requests = container.resources.requests
    try:
        if "cpu" in limits:
            millis = quantity.cpu_millis(limits["cpu"], f"{where}.resources.limits.cpu")
            if millis > 0:
                out["cpu_period"] = CPU_PERIOD_US
                out["cpu_quota"] = cpu_quota(millis)
        if "memory" in limits:
            mem = quantity.bytes_of(limits["memory"], f"{where}.resources.limits.memory")
            if mem > 0:
                out["mem_limit"] = mem
        cpu_request = requests.get("cpu") or limits.get("cpu")
        if cpu_request:
            out["cpu_shares"] = cpu_shares(
                quantity.cpu_millis(cpu_request, f"{where}.resources.requests.cpu"))
    except Invalid as err:
        raise envvars.ContainerConfigError(str(err)) from None
    return out


def mounts_for(container: core_pb2.Container, volume_paths: Mapping[str, str],
               where: str) -> list[Mount]:
    """The container's volumeMounts resolved to host folders (subPath included)."""
    out = []
    for i, vm in enumerate(container.volume_mounts):
        host = volume_paths.get(vm.name)
        if host is None:
            raise envvars.ContainerConfigError(
                f"{where}.volumeMounts[{i}].name: volume {vm.name!r} is not ready or not "
                "defined in spec.volumes")
        if vm.sub_path:
            parts = vm.sub_path.split("/")
            if vm.sub_path.startswith("/") or ".." in parts:
                raise envvars.ContainerConfigError(
                    f"{where}.volumeMounts[{i}].subPath: must be a relative path without "
                    f"'..', got {vm.sub_path!r}")
            host = f"{host.rstrip('/')}/{vm.sub_path}"
        out.append(Mount(host, vm.mount_path, vm.read_only))
    return out


def create_kwargs(
    pod: core_pb2.Pod,
    container: core_pb2.Container,
    *,
    name: str,
    labels: Mapping[str, str],
    env: Mapping[str, str],
    netns_path: str,
    mounts: Sequence[Mount],
    hosts_path: str,
    resolv_path: str,
    cgroup_parent: str,
    hostname: str,
    where: str,
) -> dict[str, Any]:
    entrypoint, cmd = envvars.command_line(container, env)
    kwargs: dict[str, Any] = {
        "image": container.image,
        "name": name,
        "labels": dict(labels),
        "environment": dict(env),
        "network_mode": f"ns:{netns_path}",
        "hostname": hostname,
        "cgroup_parent": cgroup_parent,
        "mounts": [
            {"type": "bind", "source": hosts_path, "target": "/etc/hosts"},
            {"type": "bind", "source": resolv_path, "target": "/etc/resolv.conf"},
        ] + [
            {"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only}
            for m in mounts
        ],
    }
    if entrypoint is not None:
        kwargs["entrypoint"] = entrypoint
    if cmd is not None:
        kwargs["command"] = cmd
    if container.working_dir:
        kwargs["working_dir"] = container.working_dir
    kwargs.update(resource_kwargs(container, where))
    return kwargs
