"""What the agent knows about one of its Podman containers, read from Podman alone.

Pure. Every container the agent creates carries labels naming its pod (uid,
namespace, name), its container name, whether it is an init container, its
attempt number (the restart count) and a hash of its spec. These labels are the
agent's only memory of what it started: an agent that restarts lists Podman and
rebuilds everything from them (DESIGN rule 2), so nothing here may depend on
state kept elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.v1 import core_pb2
from nodeagent.fence import carries_identity

PREFIX = "io.corral."
POD_UID = PREFIX + "pod.uid"
POD_NAME = PREFIX + "pod.name"
POD_NAMESPACE = PREFIX + "pod.namespace"
CONTAINER = PREFIX + "container.name"
INIT = PREFIX + "container.init"
ATTEMPT = PREFIX + "container.attempt"
SPEC_HASH = PREFIX + "container.hash"
GRACE = PREFIX + "pod.terminationGracePeriod"
NODE = PREFIX + "node"
# "true" on the containers of a pod that carries an identity (fence.py): an agent
# that starts cut off from the control plane finds them by it.
IDENTITY = PREFIX + "pod.identity"

# Podman's states, reduced to what the pod status needs.
CREATED = "created"
RUNNING = "running"
EXITED = "exited"
UNKNOWN = "unknown"

_PODMAN_STATES = {
    "created": CREATED, "configured": CREATED, "initialized": CREATED,
    "running": RUNNING, "paused": RUNNING, "stopping": RUNNING,
    "exited": EXITED, "stopped": EXITED, "dead": EXITED,
}
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    podman_name: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str  # the container's name in the pod spec
    init: bool
    attempt: int
    spec_hash: str
    state: str  # CREATED, RUNNING, EXITED, UNKNOWN
    exit_code: int
    started_at: float  # epoch seconds, 0 when never started
    finished_at: float  # epoch seconds, 0 when not finished
    image: str
    image_id: str
    grace_seconds: int
    oom_killed: bool = False
    pid: int = 0
    identity: bool = False

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def exited(self) -> bool:
        return self.state == EXITED

    def fingerprint(self) -> tuple[Any, ...]:
        """What PLEG compares between relists: a change here is an event."""
        return (self.state, self.exit_code, self.started_at, self.finished_at)


def container_labels(pod: core_pb2.Pod, container: core_pb2.Container, *, init: bool,
                     attempt: int, node_name: str) -> dict[str, str]:
    grace = pod.spec.termination_grace_period_seconds \
        if pod.spec.HasField("termination_grace_period_seconds") else 30
    extra = {IDENTITY: "true"} if carries_identity(pod) else {}
    return extra | {
        POD_UID: pod.metadata.uid,
        POD_NAME: pod.metadata.name,
        POD_NAMESPACE: pod.metadata.namespace,
        CONTAINER: container.name,
        INIT: "true" if init else "false",
        ATTEMPT: str(attempt),
        SPEC_HASH: spec_hash(container),
        GRACE: str(grace),
        NODE: node_name,
    }


def podman_name(pod: core_pb2.Pod, container_name: str, attempt: int) -> str:
    """Unique per attempt and readable in `podman ps`: corral_web_nginx-1_default_1a2b3c4d_0."""
    raw = (f"corral_{container_name}_{pod.metadata.name}_{pod.metadata.namespace}_"
           f"{pod.metadata.uid[:8]}_{attempt}")
    return _NAME_SAFE.sub("-", raw)


def spec_hash(container: core_pb2.Container) -> str:
    """A change of the container's spec (a new image) restarts it, as kubelet does."""
    data = container.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()[:16]


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value) if value > 0 else 0.0
    return 0.0


def from_podman(attrs: Mapping[str, Any]) -> ContainerRecord | None:
    """A record from one entry of Podman's container list (libpod /containers/json);
    None for a container that is not the agent's (no pod uid label)."""
    labels = attrs.get("Labels") or {}
    uid = labels.get(POD_UID)
    if not uid:
        return None
    try:
        attempt = int(labels.get(ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    try:
        grace = int(labels.get(GRACE, "30"))
    except ValueError:
        grace = 30
    names = attrs.get("Names") or [""]
    state = _PODMAN_STATES.get(str(attrs.get("State", "")).lower(), UNKNOWN)
    started = _epoch(attrs.get("StartedAt"))
    finished = _epoch(attrs.get("ExitedAt"))
    exit_code = int(attrs.get("ExitCode") or 0)
    if state == CREATED and started > 0:
        # It ran before and is "created" again: Podman reset it after a reboot (its
        # tmp dir was gone). It died with the machine: report it exited, killed, so
        # it is restarted as a new attempt (as kubelet does after a reboot).
        state = EXITED
        if finished <= started:
            finished = started
            exit_code = 137 if exit_code == 0 else exit_code
    elif state == CREATED:
        finished = 0.0
    return ContainerRecord(
        id=str(attrs.get("Id", "")),
        podman_name=str(names[0]),
        pod_uid=uid,
        pod_namespace=labels.get(POD_NAMESPACE, ""),
        pod_name=labels.get(POD_NAME, ""),
        name=labels.get(CONTAINER, ""),
        init=labels.get(INIT) == "true",
        attempt=attempt,
        spec_hash=labels.get(SPEC_HASH, ""),
        state=state,
        exit_code=exit_code,
        started_at=started,
        finished_at=finished if state == EXITED else 0.0,
        image=str(attrs.get("Image", "")),
        image_id=str(attrs.get("ImageID", "")),
        grace_seconds=max(0, grace),
        pid=int(attrs.get("Pid") or 0) if state == RUNNING else 0,
        identity=labels.get(IDENTITY) == "true",
    )


def by_pod(records: Iterable[ContainerRecord]) -> dict[str, list[ContainerRecord]]:
    out: dict[str, list[ContainerRecord]] = {}
    for rec in records:
        out.setdefault(rec.pod_uid, []).append(rec)
    return out


def latest_by_name(records: Iterable[ContainerRecord], *, init: bool
                   ) -> dict[str, list[ContainerRecord]]:
    """Per container name, its containers newest attempt first."""
    out: dict[str, list[ContainerRecord]] = {}
    for rec in records:
        if rec.init == init:
            out.setdefault(rec.name, []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: (r.attempt, r.started_at), reverse=True)
    return out
