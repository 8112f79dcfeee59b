"""Small pure facts about pods, owners and conditions that every controller asks.

Threads model: pure functions over protobuf messages; they never mutate their
arguments unless the name says so (`set_condition`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corral.v1 import core_pb2, meta_pb2

from .clock import from_timestamp, is_set, to_timestamp

POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"


# ---------------------------------------------------------------- conditions
def get_condition(conditions: Iterable[meta_pb2.Condition],
                  type_: str) -> meta_pb2.Condition | None:
    for c in conditions:
        if c.type == type_:
            return c
    return None


def condition_true(conditions: Iterable[meta_pb2.Condition], type_: str) -> bool:
    c = get_condition(conditions, type_)
    return c is not None and c.status == "True"


def set_condition(conditions: Any, type_: str, status: str, reason: str, message: str,
                  now: float, *, heartbeat: bool = False) -> bool:
    """Set a condition in a repeated Condition field; True if anything changed.

    lastTransitionTime moves only when the status flips (Kubernetes' rule);
    lastUpdateTime moves whenever reason or message change.
    """
    c = get_condition(conditions, type_)
    if c is None:
        c = conditions.add(type=type_, status=status, reason=reason, message=message)
        c.last_transition_time.CopyFrom(to_timestamp(now))
        c.last_update_time.CopyFrom(to_timestamp(now))
        if heartbeat:
            c.last_probe_time.CopyFrom(to_timestamp(now))
        return True
    changed = False
    if c.status != status:
        c.status = status
        c.last_transition_time.CopyFrom(to_timestamp(now))
        changed = True
    if c.reason != reason or c.message != message:
        c.reason = reason
        c.message = message
        changed = True
    if changed:
        c.last_update_time.CopyFrom(to_timestamp(now))
    return changed


def remove_condition(conditions: Any, type_: str) -> bool:
    for i, c in enumerate(conditions):
        if c.type == type_:
            del conditions[i]
            return True
    return False


# ---------------------------------------------------------------------- pods
def is_terminating(obj: Any) -> bool:
    return is_set(obj.metadata.deletion_timestamp)


def is_finished(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: core_pb2.Pod) -> bool:
    """Counts towards a controller's replicas: not finished, not being deleted."""
    return not is_finished(pod) and not is_terminating(pod)


def is_ready(pod: core_pb2.Pod) -> bool:
    return condition_true(pod.status.conditions, "Ready")


def ready_since(pod: core_pb2.Pod) -> float:
    c = get_condition(pod.status.conditions, "Ready")
    if c is None or c.status != "True":
        return 0.0
    return from_timestamp(c.last_transition_time)


def is_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least minReadySeconds (Kubernetes' IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since > 0 and since + min_ready_seconds <= now


def available_in(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until a ready pod becomes available (None: not ready, or already)."""
    if min_ready_seconds <= 0 or not is_ready(pod):
        return None
    left = ready_since(pod) + min_ready_seconds - now
    return left if left > 0 else None


def is_running_and_ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Running" and is_ready(pod)


def restart_count(pod: core_pb2.Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def created(obj: Any) -> float:
    return from_timestamp(obj.metadata.creation_timestamp)


# -------------------------------------------------------------------- owners
def controller_ref(obj: Any) -> meta_pb2.OwnerReference | None:
    for ref in obj.metadata.owner_references:
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def owner_ref(owner: Any, *, controller: bool = True) -> meta_pb2.OwnerReference:
    ref = meta_pb2.OwnerReference(
        api_version=owner.api_version, kind=owner.kind, name=owner.metadata.name,
        uid=owner.metadata.uid,
    )
    if controller:
        ref.controller = True
        ref.block_owner_deletion = True
    return ref


def is_controlled_by(obj: Any, owner: Any) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.uid == owner.metadata.uid


def copy(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def pod_from_template(template: core_pb2.PodTemplateSpec, owner: Any, *,
                      name: str = "", generate_name: str = "",
                      extra_labels: dict[str, str] | None = None) -> core_pb2.Pod:
    """A new pod from a controller's template, owned (controller=true) by `owner`."""
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.namespace = owner.metadata.namespace
    if name:
        pod.metadata.name = name
    else:
        pod.metadata.generate_name = generate_name or f"{owner.metadata.name}-"
    pod.metadata.labels.update(template.metadata.labels)
    if extra_labels:
        pod.metadata.labels.update(extra_labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.finalizers.extend(template.metadata.finalizers)
    pod.metadata.owner_references.append(owner_ref(owner))
    pod.spec.CopyFrom(template.spec)
    return pod
