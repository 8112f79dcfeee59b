"""A point-in-time view of the cluster for one scheduling batch.

`NodeInfo` keeps what the predicates and scorers ask of a node, precomputed
once per snapshot: allocatable and requested resources, host ports in use, how
many pods of each owner it runs, taints (with the virtual not-ready taint of
a node whose Ready condition is not True). `PodInfo` does the same for a pod
to place. `Snapshot.assume` adds a just-placed pod to its node so the next pod
of the batch sees it (kube-scheduler's assume).

Threads model: a snapshot is built and used by one thread (the scheduling loop).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from corral import quantity
from corral.errors import Invalid
from corral.v1 import core_pb2

# Kubernetes' defaults when a container requests nothing: used for scoring only,
# so pods without requests still spread by load (non-zero requests).
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024
DEFAULT_MAX_PODS = 110

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def claim_node(claim: core_pb2.PersistentVolumeClaim) -> str:
    """The node a claim's folder is on ("" while unbound): volumeName is "NODE:/path"."""
    node, sep, _ = claim.spec.volume_name.partition(":")
    return node if sep else ""


def _requests(containers: Iterable[core_pb2.Container], where: str) -> tuple[int, int, int, int]:
    cpu = mem = nz_cpu = nz_mem = 0
    for i, c in enumerate(containers):
        req = c.resources.requests
        c_cpu = quantity.cpu_millis(req["cpu"], f"{where}[{i}].resources.requests.cpu") \
            if "cpu" in req else 0
        c_mem = quantity.bytes_of(req["memory"], f"{where}[{i}].resources.requests.memory") \
            if "memory" in req else 0
        cpu += c_cpu
        mem += c_mem
        nz_cpu += c_cpu if "cpu" in req else DEFAULT_MILLI_CPU
        nz_mem += c_mem if "memory" in req else DEFAULT_MEMORY
    return cpu, mem, nz_cpu, nz_mem


def pod_requests(spec: core_pb2.PodSpec) -> tuple[int, int, int, int]:
    """(cpu millis, memory bytes, non-zero cpu, non-zero memory) the pod requests.

    Kubernetes' rule: the sum over app containers, but at least the largest init
    container's request (init containers run one at a time, before the others).
    """
    cpu, mem, nz_cpu, nz_mem = _requests(spec.containers, "spec.containers")
    for i, c in enumerate(spec.init_containers):
        i_cpu, i_mem, i_nz_cpu, i_nz_mem = _requests([c], f"spec.initContainers[{i}]")
        cpu, mem = max(cpu, i_cpu), max(mem, i_mem)
        nz_cpu, nz_mem = max(nz_cpu, i_nz_cpu), max(nz_mem, i_nz_mem)
    return cpu, mem, nz_cpu, nz_mem


def host_ports(spec: core_pb2.PodSpec) -> tuple[tuple[str, str, int], ...]:
    out = []
    for c in spec.containers:
        for p in c.ports:
            if p.host_port:
                out.append((p.host_ip or "0.0.0.0", p.protocol or "TCP", p.host_port))
    return tuple(out)


def ports_conflict(used: set[tuple[str, str, int]], wanted: Iterable[tuple[str, str, int]]) -> bool:
    for ip, proto, port in wanted:
        for u_ip, u_proto, u_port in used:
            if u_port == port and u_proto == proto and (
                    ip == u_ip or ip == "0.0.0.0" or u_ip == "0.0.0.0"):
                return True
    return False


def owner_uid(pod: core_pb2.Pod) -> str:
    for ref in pod.metadata.owner_references:
        if ref.HasField("controller") and ref.controller:
            return ref.uid
    return ""


@dataclass(slots=True)
class PodInfo:
    pod: core_pb2.Pod
    cpu: int
    memory: int
    nz_cpu: int
    nz_memory: int
    ports: tuple[tuple[str, str, int], ...]
    owner: str
    claims: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.pod.metadata.namespace, self.pod.metadata.name)

    @staticmethod
    def of(pod: core_pb2.Pod) -> PodInfo:
        """Raises Invalid (with the field) for a request that is not a quantity."""
        cpu, mem, nz_cpu, nz_mem = pod_requests(pod.spec)
        claims = tuple(v.persistent_volume_claim.claim_name for v in pod.spec.volumes
                       if v.HasField("persistent_volume_claim"))
        return PodInfo(pod, cpu, mem, nz_cpu, nz_mem, host_ports(pod.spec), owner_uid(pod),
                       claims)


@dataclass(slots=True)
class NodeInfo:
    name: str
    node: core_pb2.Node
    labels: dict[str, str]
    taints: list[core_pb2.Taint]
    ready: bool
    unschedulable: bool
    alloc_cpu: int
    alloc_memory: int
    alloc_pods: int
    cpu: int = 0
    memory: int = 0
    nz_cpu: int = 0
    nz_memory: int = 0
    pods: int = 0
    ports: set[tuple[str, str, int]] = field(default_factory=set)
    owners: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of(node: core_pb2.Node) -> NodeInfo:
        name = node.metadata.name
        alloc = node.status.allocatable or node.status.capacity
        where = f"Node {name} status.allocatable"
        try:
            cpu = quantity.cpu_millis(alloc["cpu"], f"{where}.cpu") if "cpu" in alloc else 0
            mem = quantity.bytes_of(alloc["memory"], f"{where}.memory") if "memory" in alloc else 0
            pods = int(quantity.parse(alloc["pods"], f"{where}.pods")) if "pods" in alloc \
                else DEFAULT_MAX_PODS
        except Invalid:
            cpu = mem = pods = 0
        ready = False
        for c in node.status.conditions:
            if c.type == "Ready":
                ready = c.status == "True"
        taints = list(node.spec.taints)
        if not ready and not any(t.key in (TAINT_NOT_READY, TAINT_UNREACHABLE) for t in taints):
            # The node lifecycle controller adds this taint moments later; act as
            # if it were there already (Kubernetes' TaintNodesByCondition).
            taints.append(core_pb2.Taint(key=TAINT_NOT_READY, effect="NoSchedule"))
        return NodeInfo(name, node, dict(node.metadata.labels), taints, ready,
                        node.spec.unschedulable, cpu, mem, pods)

    def add(self, p: PodInfo) -> None:
        self.cpu += p.cpu
        self.memory += p.memory
        self.nz_cpu += p.nz_cpu
        self.nz_memory += p.nz_memory
        self.pods += 1
        self.ports.update(p.ports)
        if p.owner:
            self.owners[p.owner] = self.owners.get(p.owner, 0) + 1


class Snapshot:
    def __init__(self, nodes: Iterable[core_pb2.Node], bound_pods: Iterable[core_pb2.Pod] = (),
                 claims: Iterable[core_pb2.PersistentVolumeClaim] = (), *,
                 bound_infos: Iterable[tuple[str, PodInfo | None]] = ()) -> None:
        """`bound_pods` are pods with spec.nodeName set; a caller that keeps PodInfos
        between batches passes them as `bound_infos` (node name, info or None for a
        pod whose requests do not parse) instead, to skip parsing them again."""
        self.nodes: dict[str, NodeInfo] = {}
        for n in sorted(nodes, key=lambda n: n.metadata.name):
            self.nodes[n.metadata.name] = NodeInfo.of(n)
        self.order = list(self.nodes.values())
        for pod in bound_pods:
            if pod.status.phase in ("Succeeded", "Failed"):
                continue
            try:
                self._add(pod.spec.node_name, PodInfo.of(pod))
            except Invalid:
                self._add(pod.spec.node_name, None)
        for node_name, info in bound_infos:
            self._add(node_name, info)
        self.claims: dict[tuple[str, str], core_pb2.PersistentVolumeClaim] = {
            (c.metadata.namespace, c.metadata.name): c for c in claims
        }
        # Claims bound during this batch (assumed), by key -> node.
        self.claim_nodes: dict[tuple[str, str], str] = {}

    def _add(self, node_name: str, info: PodInfo | None) -> None:
        node = self.nodes.get(node_name)
        if node is None:
            return
        if info is None:
            node.pods += 1
        else:
            node.add(info)

    def claim_bound_node(self, namespace: str, name: str) -> str | None:
        """The node of a claim: a name, "" while unbound, None if there is no such claim."""
        key = (namespace, name)
        if key in self.claim_nodes:
            return self.claim_nodes[key]
        claim = self.claims.get(key)
        if claim is None:
            return None
        return claim_node(claim)

    def assume(self, p: PodInfo, node: str) -> None:
        self.nodes[node].add(p)
        for claim in p.claims:
            if not self.claim_bound_node(p.pod.metadata.namespace, claim):
                self.claim_nodes[(p.pod.metadata.namespace, claim)] = node
