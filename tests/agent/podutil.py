"""Helpers for the agent's real tests: build pods, wait for conditions on them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from corral import kinds
from corral.client import Client
from corral.errors import CorralError, NotFound
from corral.v1 import core_pb2

IMAGE = "localhost/busybox:latest"


def container(name: str, *command: str, **fields: Any) -> core_pb2.Container:
    c = core_pb2.Container(name=name, image=IMAGE, image_pull_policy="Never",
                           command=list(command))
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(c, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(c, key).CopyFrom(value)
        else:
            setattr(c, key, value)
    return c


def pod(name: str, namespace: str, node: str, *containers: core_pb2.Container,
        init: tuple[core_pb2.Container, ...] = (), volumes: tuple[core_pb2.Volume, ...] = (),
        restart_policy: str = "Always", grace: int | None = None,
        labels: dict[str, str] | None = None) -> core_pb2.Pod:
    p = kinds.by_kind("Pod").new()
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.labels.update(labels or {})
    p.spec.node_name = node
    p.spec.restart_policy = restart_policy
    p.spec.containers.extend(containers)
    p.spec.init_containers.extend(init)
    p.spec.volumes.extend(volumes)
    if grace is not None:
        p.spec.termination_grace_period_seconds = grace
    return p


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except CorralError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def get_pod(client: Client, namespace: str, name: str) -> core_pb2.Pod:
    result: core_pb2.Pod = client.get("Pod", name, namespace)
    return result


def wait_pod(client: Client, namespace: str, name: str,
             check: Callable[[core_pb2.Pod], bool], what: str, timeout: float = 60.0
             ) -> core_pb2.Pod:
    def fn() -> core_pb2.Pod | None:
        p = get_pod(client, namespace, name)
        return p if check(p) else None
    result: core_pb2.Pod = wait_for(f"pod {namespace}/{name}: {what}", fn, timeout)
    return result


def running(p: core_pb2.Pod) -> bool:
    return p.status.phase == "Running"


def ready(p: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def condition(p: core_pb2.Pod, ctype: str) -> str:
    return next((c.status for c in p.status.conditions if c.type == ctype), "")


def cstatus(p: core_pb2.Pod, name: str) -> core_pb2.ContainerStatus:
    """The container's status (an empty one while the agent has not reported it)."""
    for st in list(p.status.container_statuses) + list(p.status.init_container_statuses):
        if st.name == name:
            return st
    return core_pb2.ContainerStatus(name=name)


def wait_gone(client: Client, namespace: str, name: str, timeout: float = 60.0) -> None:
    def fn() -> bool:
        try:
            client.get("Pod", name, namespace)
            return False
        except NotFound:
            return True
    wait_for(f"pod {namespace}/{name} removed", fn, timeout)
