"""Builders of API objects for the pure tests (plain functions, no cluster)."""

from __future__ import annotations

import itertools
from typing import Any

from controlplane.controllers.clock import to_timestamp
from corral.v1 import apps_pb2, batch_pb2, core_pb2

_uid = itertools.count(1)
NOW = 1_795_000_000.0


def uid() -> str:
    return f"uid-{next(_uid):06d}"


def meta(obj: Any, name: str, namespace: str = "default", *, labels: dict[str, str] | None = None,
         rv: int = 1, created: float = NOW - 100) -> Any:
    obj.metadata.name = name
    obj.metadata.namespace = namespace
    obj.metadata.uid = uid()
    obj.metadata.resource_version = str(rv)
    obj.metadata.creation_timestamp.CopyFrom(to_timestamp(created))
    obj.metadata.generation = 1
    if labels:
        obj.metadata.labels.update(labels)
    return obj


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
         ready: bool = True, labels: dict[str, str] | None = None,
         taints: list[tuple[str, str, str]] | None = None,
         unschedulable: bool = False) -> core_pb2.Node:
    n = core_pb2.Node(api_version="v1", kind="Node")
    meta(n, name, "", labels={"kubernetes.io/hostname": name, **(labels or {})})
    n.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.capacity.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.conditions.add(type="Ready", status="True" if ready else "False")
    for key, value, effect in taints or []:
        n.spec.taints.add(key=key, value=value, effect=effect)
    n.spec.unschedulable = unschedulable
    return n


def pod(name: str, namespace: str = "default", *, cpu: str = "", memory: str = "",
        node_name: str = "", labels: dict[str, str] | None = None, owner: Any = None,
        phase: str = "", ready: bool = False, ready_since: float | None = None,
        host_port: int = 0, node_selector: dict[str, str] | None = None,
        tolerations: list[core_pb2.Toleration] | None = None,
        claims: list[str] | None = None, created: float = NOW - 100,
        ip: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    meta(p, name, namespace, labels=labels, created=created)
    c = p.spec.containers.add(name="main", image="localhost/busybox:latest")
    if cpu:
        c.resources.requests["cpu"] = cpu
    if memory:
        c.resources.requests["memory"] = memory
    if host_port:
        c.ports.add(container_port=80, host_port=host_port)
    p.spec.node_name = node_name
    if node_selector:
        p.spec.node_selector.update(node_selector)
    if tolerations:
        p.spec.tolerations.extend(tolerations)
    for claim in claims or []:
        v = p.spec.volumes.add(name=claim)
        v.persistent_volume_claim.claim_name = claim
    if owner is not None:
        ref = p.metadata.owner_references.add(api_version=owner.api_version, kind=owner.kind,
                                              name=owner.metadata.name, uid=owner.metadata.uid)
        ref.controller = True
    if phase:
        p.status.phase = phase
    if ready:
        cond = p.status.conditions.add(type="Ready", status="True")
        cond.last_transition_time.CopyFrom(to_timestamp(ready_since or NOW - 50))
    if ip:
        p.status.pod_ip = ip
    return p


def template(labels: dict[str, str], image: str = "localhost/busybox:latest"
             ) -> core_pb2.PodTemplateSpec:
    t = core_pb2.PodTemplateSpec()
    t.metadata.labels.update(labels)
    t.spec.containers.add(name="main", image=image)
    return t


def replicaset(name: str, replicas: int, labels: dict[str, str], *, owner: Any = None,
               namespace: str = "default") -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    meta(rs, name, namespace, labels=labels)
    rs.spec.replicas = replicas
    rs.spec.selector.match_labels.update(labels)
    rs.spec.template.CopyFrom(template(labels))
    if owner is not None:
        ref = rs.metadata.owner_references.add(api_version=owner.api_version, kind=owner.kind,
                                               name=owner.metadata.name, uid=owner.metadata.uid)
        ref.controller = True
    return rs


def deployment(name: str, replicas: int, labels: dict[str, str], *,
               image: str = "localhost/busybox:latest",
               namespace: str = "default") -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    meta(d, name, namespace, labels=labels)
    d.spec.replicas = replicas
    d.spec.selector.match_labels.update(labels)
    d.spec.template.CopyFrom(template(labels, image))
    return d


def statefulset(name: str, replicas: int, labels: dict[str, str], *,
                claims: list[str] | None = None, service: str = "") -> apps_pb2.StatefulSet:
    s = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    meta(s, name, labels=labels)
    s.spec.replicas = replicas
    s.spec.selector.match_labels.update(labels)
    s.spec.template.CopyFrom(template(labels))
    s.spec.service_name = service or name
    for claim in claims or []:
        t = s.spec.volume_claim_templates.add()
        t.metadata.name = claim
        t.spec.access_modes.append("ReadWriteOnce")
        t.spec.resources.requests["storage"] = "1Gi"
    return s


def daemonset(name: str, labels: dict[str, str]) -> apps_pb2.DaemonSet:
    d = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    meta(d, name, labels=labels)
    d.spec.selector.match_labels.update(labels)
    d.spec.template.CopyFrom(template(labels))
    return d


def job(name: str, *, completions: int | None = 1, parallelism: int | None = 1,
        backoff_limit: int | None = None) -> batch_pb2.Job:
    j = batch_pb2.Job(api_version="batch/v1", kind="Job")
    meta(j, name)
    if completions is not None:
        j.spec.completions = completions
    if parallelism is not None:
        j.spec.parallelism = parallelism
    if backoff_limit is not None:
        j.spec.backoff_limit = backoff_limit
    j.spec.template.CopyFrom(template({"app": name}))
    j.spec.template.spec.restart_policy = "Never"
    return j


def claim(name: str, *, volume: str = "", namespace: str = "default"
          ) -> core_pb2.PersistentVolumeClaim:
    c = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    meta(c, name, namespace)
    c.spec.access_modes.append("ReadWriteOnce")
    c.spec.volume_name = volume
    return c


def toleration(key: str, value: str = "", effect: str = "", operator: str = "Equal"
               ) -> core_pb2.Toleration:
    return core_pb2.Toleration(key=key, value=value, effect=effect, operator=operator)
