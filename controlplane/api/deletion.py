"""What a Delete does to an object: remove it now, or mark it and let others finish.

`plan_delete(kind, obj, options, now)` is the pure decision, in Kubernetes'
order:
- propagation Foreground / Orphan adds the "foregroundDeletion" / "orphan"
  finalizer (the garbage collector then deletes or orphans the dependents and
  removes the finalizer); Background (the default) adds none;
- a Pod bound to a node and not Succeeded/Failed is deleted gracefully:
  deletionTimestamp = now + grace and deletionGracePeriodSeconds = grace (the
  request's grace_period_seconds, else the pod's terminationGracePeriodSeconds);
  its node agent stops it and deletes it again with grace 0. A later delete may
  shorten the grace, never lengthen it; grace 0 removes at once (force);
- an object with finalizers gets deletionTimestamp and stays until an update
  empties its finalizers (the handler then removes it);
- anything else is removed at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.api.codec import copy
from corral.errors import Invalid

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
POLICIES = ("Background", "Foreground", "Orphan")


@dataclass(frozen=True)
class DeleteOptions:
    grace: int | None
    propagation: str  # Background, Foreground or Orphan

    @classmethod
    def parse(cls, grace: int | None, propagation: str) -> DeleteOptions:
        if grace is not None and grace < 0:
            raise Invalid(f"must be greater than or equal to 0, got {grace}",
                          "gracePeriodSeconds")
        policy = propagation or "Background"
        if policy not in POLICIES:
            raise Invalid(f"unsupported value {propagation!r}: supported values: "
                          f"{', '.join(POLICIES)}", "propagationPolicy")
        return cls(grace, policy)


@dataclass(frozen=True)
class DeletePlan:
    remove: bool  # remove the object from the store now
    updated: Any | None = None  # else: the object to write (None: nothing to change)


def _pod_grace(obj: Any, opts: DeleteOptions) -> int:
    """The grace period a Pod gets: 0 unless it may be running on a node."""
    if not obj.spec.node_name or obj.status.phase in ("Succeeded", "Failed"):
        return 0
    if opts.grace is not None:
        return opts.grace
    return int(obj.spec.termination_grace_period_seconds)


def plan_delete(kind: str, obj: Any, opts: DeleteOptions, now: float) -> DeletePlan:
    m = obj.metadata
    finalizers = list(m.finalizers)
    wanted = {"Foreground": FOREGROUND, "Orphan": ORPHAN}.get(opts.propagation)
    grace = _pod_grace(obj, opts) if kind == "Pod" else 0
    terminating = m.HasField("deletion_timestamp")

    if terminating:
        out = copy(obj)
        changed = False
        if kind == "Pod" and m.HasField("deletion_grace_period_seconds"):
            current = m.deletion_grace_period_seconds
            if grace < current:
                # Shortening: the agent stops it sooner (0 = it is gone now).
                out.metadata.deletion_grace_period_seconds = grace
                out.metadata.deletion_timestamp.seconds = int(now) + grace
                changed = True
        if wanted and wanted not in finalizers:
            out.metadata.finalizers.append(wanted)
            changed = True
        if not out.metadata.finalizers and (
            kind != "Pod" or out.metadata.deletion_grace_period_seconds == 0
        ):
            return DeletePlan(remove=True)
        return DeletePlan(remove=False, updated=out if changed else None)

    if wanted and wanted not in finalizers:
        finalizers.append(wanted)
    if not finalizers and grace == 0:
        return DeletePlan(remove=True)
    out = copy(obj)
    del out.metadata.finalizers[:]
    out.metadata.finalizers.extend(finalizers)
    out.metadata.deletion_timestamp.seconds = int(now) + grace
    out.metadata.deletion_grace_period_seconds = grace
    return DeletePlan(remove=False, updated=out)
