"""The kinds Corral serves: names, API groups, messages and how to wrap them.

Every layer (store keys, API validation, CLI names and columns, controllers)
looks kinds up here, so adding a kind is one entry in `KINDS` plus its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from corral.errors import Invalid
from corral.v1 import api_pb2, apps_pb2, batch_pb2, core_pb2, meta_pb2


@dataclass(frozen=True)
class KindInfo:
    kind: str  # "Pod"
    api_version: str  # "v1", "apps/v1"
    field: str  # the oneof field of corral.v1.Object: "pod"
    message: type[Message]
    namespaced: bool
    plural: str  # "pods"
    short_names: tuple[str, ...] = ()
    has_spec: bool = True
    has_status: bool = True

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def new(self) -> Any:
        msg = self.message()
        msg.api_version = self.api_version  # type: ignore[attr-defined]
        msg.kind = self.kind  # type: ignore[attr-defined]
        return msg


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Namespace", "v1", "namespace", core_pb2.Namespace, False, "namespaces", ("ns",)),
    KindInfo("Node", "v1", "node", core_pb2.Node, False, "nodes", ("no",)),
    KindInfo("Pod", "v1", "pod", core_pb2.Pod, True, "pods", ("po",)),
    KindInfo("Service", "v1", "service", core_pb2.Service, True, "services", ("svc",)),
    KindInfo(
        "Endpoints", "v1", "endpoints", core_pb2.Endpoints, True, "endpoints", ("ep",),
        has_spec=False, has_status=False,
    ),
    KindInfo(
        "ConfigMap", "v1", "config_map", core_pb2.ConfigMap, True, "configmaps", ("cm",),
        has_spec=False, has_status=False,
    ),
    KindInfo(
        "Secret", "v1", "secret", core_pb2.Secret, True, "secrets", (),
        has_spec=False, has_status=False,
    ),
    KindInfo(
        "Event", "v1", "event", core_pb2.Event, True, "events", ("ev",),
        has_spec=False, has_status=False,
    ),
    KindInfo(
        "PersistentVolumeClaim", "v1", "persistent_volume_claim",
        core_pb2.PersistentVolumeClaim, True, "persistentvolumeclaims", ("pvc",),
    ),
    KindInfo(
        "Lease", "coordination.k8s.io/v1", "lease", batch_pb2.Lease, True, "leases", (),
        has_status=False,
    ),
    KindInfo("Deployment", "apps/v1", "deployment", apps_pb2.Deployment, True, "deployments",
             ("deploy",)),
    KindInfo("ReplicaSet", "apps/v1", "replica_set", apps_pb2.ReplicaSet, True, "replicasets",
             ("rs",)),
    KindInfo("StatefulSet", "apps/v1", "stateful_set", apps_pb2.StatefulSet, True,
             "statefulsets", ("sts",)),
    KindInfo("DaemonSet", "apps/v1", "daemon_set", apps_pb2.DaemonSet, True, "daemonsets",
             ("ds",)),
    KindInfo("Job", "batch/v1", "job", batch_pb2.Job, True, "jobs", ()),
)

_BY_KIND = {k.kind: k for k in KINDS}
_BY_FIELD = {k.field: k for k in KINDS}
_BY_MESSAGE = {k.message: k for k in KINDS}
_BY_NAME: dict[str, KindInfo] = {}
for _k in KINDS:
    for _name in (_k.kind.lower(), _k.plural, _k.singular, *_k.short_names):
        _BY_NAME[_name] = _k


def by_kind(kind: str) -> KindInfo:
    """The kind named exactly as in a manifest's `kind:` ("Pod")."""
    info = _BY_KIND.get(kind)
    if info is None:
        raise Invalid(f"unknown kind {kind!r}; Corral serves: {', '.join(sorted(_BY_KIND))}",
                      "kind")
    return info


def resolve(name: str) -> KindInfo:
    """A kind from what a user types: "pods", "po", "Pod", "deploy", "deployments.apps"."""
    key = name.lower().split(".", 1)[0] if "." in name else name.lower()
    info = _BY_NAME.get(key) or _BY_KIND.get(name)
    if info is None:
        raise Invalid(
            f"the server doesn't have a resource type {name!r} "
            f"(known: {', '.join(sorted(k.plural for k in KINDS))})"
        )
    return info


def of(msg: Message) -> KindInfo:
    info = _BY_MESSAGE.get(type(msg))
    if info is None:
        raise Invalid(f"{type(msg).__name__} is not a kind Corral serves")
    return info


def wrap(msg: Message) -> api_pb2.Object:
    """A kind message inside the corral.v1.Object envelope (the message is copied)."""
    if isinstance(msg, api_pb2.Object):
        return msg
    obj = api_pb2.Object()
    getattr(obj, of(msg).field).CopyFrom(msg)
    return obj


def unwrap(obj: api_pb2.Object) -> tuple[KindInfo, Any]:
    """The kind and the kind message inside an Object (the message is not copied)."""
    field = obj.WhichOneof("kind")
    if field is None:
        raise Invalid("the object has no kind set", "object")
    return _BY_FIELD[field], getattr(obj, field)


def metadata(msg: Message) -> meta_pb2.ObjectMeta:
    return msg.metadata  # type: ignore[attr-defined,no-any-return]


def key_of(msg: Message) -> tuple[str, str, str]:
    meta = metadata(msg)
    return of(msg).kind, meta.namespace, meta.name


def describe(msg: Message) -> str:
    """'Pod default/web-1', 'Node n1': how errors and logs name an object."""
    kind, ns, name = key_of(msg)
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
