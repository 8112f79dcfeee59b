"""What the store indexes about an object: labels, selectable fields, unique tokens.

The store never parses object bytes, so the API layer hands it, with each
write, the label pairs (label selectors), the field pairs (field selectors:
`spec.nodeName=n1`) and the unique tokens (allocations: a ClusterIP, a
NodePort, a pod CIDR held by at most one object) computed here.

`SELECTABLE_FIELDS` is the contract of field selectors: a selector on any other
field is refused naming the field, as Kubernetes does ("field label not
supported").

Pure functions; safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corral.errors import Invalid
from corral.selectors import FieldSelector

_COMMON = ("metadata.name", "metadata.namespace")

SELECTABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": (*_COMMON, "spec.nodeName", "spec.restartPolicy", "status.phase", "status.podIP",
            "spec.hostname", "spec.subdomain"),
    "Node": (*_COMMON, "spec.unschedulable", "spec.podCIDR"),
    "Namespace": (*_COMMON, "status.phase"),
    "Service": (*_COMMON, "spec.type", "spec.clusterIP"),
    "Secret": (*_COMMON, "type"),
    "Event": (*_COMMON, "involvedObject.kind", "involvedObject.namespace",
              "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
              "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "type",
              "source", "reportingComponent"),
    "ReplicaSet": (*_COMMON, "status.replicas"),
    "Job": (*_COMMON, "status.successful"),
    "PersistentVolumeClaim": (*_COMMON, "spec.volumeName", "status.phase"),
    "Lease": (*_COMMON, "spec.holderIdentity"),
}


def selectable_fields(kind: str) -> tuple[str, ...]:
    return SELECTABLE_FIELDS.get(kind, _COMMON)


def _pod(o: Any) -> dict[str, str]:
    return {"spec.nodeName": o.spec.node_name, "spec.restartPolicy": o.spec.restart_policy,
            "status.phase": o.status.phase, "status.podIP": o.status.pod_ip,
            "spec.hostname": o.spec.hostname, "spec.subdomain": o.spec.subdomain}


def _event(o: Any) -> dict[str, str]:
    ref = o.involved_object
    return {"involvedObject.kind": ref.kind, "involvedObject.namespace": ref.namespace,
            "involvedObject.name": ref.name, "involvedObject.uid": ref.uid,
            "involvedObject.apiVersion": ref.api_version,
            "involvedObject.resourceVersion": ref.resource_version,
            "involvedObject.fieldPath": ref.field_path, "reason": o.reason, "type": o.type,
            "source": o.source.component, "reportingComponent": o.reporting_component}


_FIELDS: dict[str, Callable[[Any], dict[str, str]]] = {
    "Pod": _pod,
    "Node": lambda o: {"spec.unschedulable": "true" if o.spec.unschedulable else "false",
                       "spec.podCIDR": o.spec.pod_cidr},
    "Namespace": lambda o: {"status.phase": o.status.phase},
    "Service": lambda o: {"spec.type": o.spec.type, "spec.clusterIP": o.spec.cluster_ip},
    "Secret": lambda o: {"type": o.type},
    "Event": _event,
    "ReplicaSet": lambda o: {"status.replicas": str(o.status.replicas)},
    "Job": lambda o: {"status.successful": str(o.status.succeeded)},
    "PersistentVolumeClaim": lambda o: {"spec.volumeName": o.spec.volume_name,
                                        "status.phase": o.status.phase},
    "Lease": lambda o: {"spec.holderIdentity": o.spec.holder_identity},
}


def labels(obj: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(obj.metadata.labels.items()))


def fields(kind: str, obj: Any) -> tuple[tuple[str, str], ...]:
    out = {"metadata.name": obj.metadata.name, "metadata.namespace": obj.metadata.namespace}
    fn = _FIELDS.get(kind)
    if fn is not None:
        out.update(fn(obj))
    return tuple(sorted(out.items()))


def unique_tokens(kind: str, obj: Any) -> tuple[str, ...]:
    """The allocations this object holds: no two objects may hold the same token."""
    tokens: set[str] = set()
    if kind == "Service":
        ip = obj.spec.cluster_ip
        if ip and ip != "None":
            tokens.add(cluster_ip_token(ip))
        for p in obj.spec.ports:
            if p.node_port:
                tokens.add(node_port_token(p.protocol or "TCP", p.node_port))
    elif kind == "Node" and obj.spec.pod_cidr:
        tokens.add(pod_cidr_token(obj.spec.pod_cidr))
    return tuple(sorted(tokens))


def cluster_ip_token(ip: str) -> str:
    return f"clusterIP/{ip}"


def node_port_token(protocol: str, port: int) -> str:
    return f"nodePort/{protocol}/{port}"


def pod_cidr_token(cidr: str) -> str:
    return f"podCIDR/{cidr}"


def check_field_selector(kind: str, selector: FieldSelector) -> None:
    allowed = selectable_fields(kind)
    for name in selector.fields():
        if name not in allowed:
            raise Invalid(
                f"field label not supported for {kind}: {name!r} (supported: "
                f"{', '.join(allowed)})",
                "fieldSelector",
            )
