"""How a write request becomes the object to store: what the server keeps.

- `for_update(info, old, new)`: Update replaces metadata (labels, annotations,
  ownerReferences, finalizers) and spec; the server keeps uid,
  creationTimestamp, generation, deletion fields and status.
- `for_status(info, old, new)`: UpdateStatus replaces status only.
- `for_apply(info, old, manifest)`: Apply is an update that also keeps what a
  manifest typically leaves out because the server or a controller owns it:
  status, allocated fields (clusterIP, nodePorts, podCIDR: see allocators),
  spec.nodeName, finalizers and ownerReferences when the manifest has none,
  annotations under system prefixes (deployment.kubernetes.io/, ...), the
  replica count of a workload when the manifest leaves `replicas` unset (so a
  `corral scale` survives re-applying), and a Job's generated selector.
- `spec_changed(info, old, new)`: whether metadata.generation must grow.

Pure functions over protobuf messages; safe from any thread.
"""

from __future__ import annotations

from typing import Any

from controlplane.api import defaults
from controlplane.api.codec import copy
from corral.errors import Invalid
from corral.kinds import KindInfo

# Annotations owned by controllers and tools; Apply keeps them when the
# manifest does not mention them.
SYSTEM_ANNOTATION_PREFIXES = (
    "deployment.kubernetes.io/",
    "kubernetes.io/",
    "kubectl.kubernetes.io/",
    "corral.dev/",
    "control-plane.alpha.kubernetes.io/",
)
_WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet")


def copy_field(src: Any, dst: Any, name: str) -> None:
    """dst.name = src.name, presence included (an unset submessage stays unset, so
    identical objects serialize to identical bytes)."""
    if src.HasField(name):
        getattr(dst, name).CopyFrom(getattr(src, name))
    else:
        dst.ClearField(name)


def _keep_server_metadata(old: Any, new: Any) -> None:
    o, n = old.metadata, new.metadata
    n.uid = o.uid
    copy_field(o, n, "creation_timestamp")
    n.generation = o.generation
    n.generate_name = o.generate_name
    copy_field(o, n, "deletion_timestamp")
    if o.HasField("deletion_grace_period_seconds"):
        n.deletion_grace_period_seconds = o.deletion_grace_period_seconds
    else:
        n.ClearField("deletion_grace_period_seconds")
    n.resource_version = ""


def _check_new_finalizers(old: Any, new: Any) -> None:
    if old.metadata.HasField("deletion_timestamp"):
        added = set(new.metadata.finalizers) - set(old.metadata.finalizers)
        if added:
            raise Invalid(f"no new finalizers can be added if the object is being deleted, "
                          f"found new finalizers {sorted(added)}", "metadata.finalizers")


def for_update(info: KindInfo, old: Any, new: Any) -> Any:
    out = copy(new)
    _keep_server_metadata(old, out)
    if info.has_status:
        copy_field(old, out, "status")
    _check_new_finalizers(old, out)
    if info.kind == "Job":
        # The generated selector and template labels come from the stored Job.
        defaults.job_selector(out)
    return out


def for_status(info: KindInfo, old: Any, new: Any) -> Any:
    if not info.has_status:
        raise Invalid(f"{info.kind} has no status: use Update", "status")
    out = copy(old)
    copy_field(new, out, "status")
    out.metadata.resource_version = ""
    return out


def for_apply(info: KindInfo, old: Any, manifest: Any) -> Any:
    out = for_update(info, old, manifest)
    om, nm = old.metadata, out.metadata
    if not nm.finalizers:
        nm.finalizers.extend(om.finalizers)
    if not nm.owner_references:
        nm.owner_references.extend(om.owner_references)
    for key, value in om.annotations.items():
        if key not in nm.annotations and key.startswith(SYSTEM_ANNOTATION_PREFIXES):
            nm.annotations[key] = value
    if info.kind == "Pod" and not out.spec.node_name:
        out.spec.node_name = old.spec.node_name
    if info.kind in _WORKLOADS and not manifest.spec.HasField("replicas"):
        out.spec.replicas = old.spec.replicas
    _check_new_finalizers(old, out)
    return out


def _body(info: KindInfo, obj: Any) -> bytes:
    """What generation counts: the spec, or for kinds without one everything but
    metadata and status."""
    if info.has_spec:
        return obj.spec.SerializeToString(deterministic=True)  # type: ignore[no-any-return]
    c = copy(obj)
    c.ClearField("metadata")
    if info.has_status:
        c.ClearField("status")
    return c.SerializeToString(deterministic=True)  # type: ignore[no-any-return]


def spec_changed(info: KindInfo, old: Any, new: Any) -> bool:
    return _body(info, old) != _body(info, new)
