"""`corral cordon|uncordon|drain NODE`.

drain = cordon, then delete the node's pods (not DaemonSet pods, which would
come straight back) and wait for them to go, as kubectl does. `plan_drain` is
the pure decision of what to delete, what to leave and what blocks the drain.

Threads model: main thread only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral import kinds
from corral.cli import objects
from corral.cli.context import Context
from corral.errors import CorralError, NotFound

NODE = kinds.by_kind("Node")
POD = kinds.by_kind("Pod")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    for verb, text in (("cordon", "Mark a node unschedulable"),
                       ("uncordon", "Mark a node schedulable again")):
        p = sub.add_parser(verb, parents=[common], help=text, description=text + ".")
        p.add_argument("node", metavar="NODE")
        p.set_defaults(run=run_cordon if verb == "cordon" else run_uncordon)

    d = sub.add_parser(
        "drain", parents=[common], help="Cordon a node and move its pods away",
        description="Cordon NODE, then delete its pods (except DaemonSet pods with "
                    "--ignore-daemonsets) and wait until they are gone.",
    )
    d.add_argument("node", metavar="NODE")
    d.add_argument("--ignore-daemonsets", action="store_true",
                   help="leave DaemonSet pods (they would be recreated on the node anyway)")
    d.add_argument("--force", action="store_true",
                   help="also delete pods no controller will recreate")
    d.add_argument("--delete-emptydir-data", action="store_true",
                   help="also delete pods with emptyDir volumes (their data is lost)")
    d.add_argument("--grace-period", type=int, default=-1,
                   help="seconds each pod gets to stop (-1: its own setting)")
    d.add_argument("--timeout", type=objects.parse_duration, default=None,
                   help="give up after this long (e.g. 2m); default: no limit")
    d.set_defaults(run=run_drain)


def set_unschedulable(ctx: Context, name: str, value: bool) -> bool:
    """True when the node changed."""
    def change(node: Any) -> bool:
        if node.spec.unschedulable == value:
            return False
        node.spec.unschedulable = value
        return True

    try:
        _, changed = objects.modify(ctx.client, NODE, name, "", change)
    except NotFound:
        raise CorralError(objects.not_found(NODE, name)) from None
    return changed


def run_cordon(ctx: Context) -> int:
    changed = set_unschedulable(ctx, ctx.args.node, True)
    ctx.out(f"node/{ctx.args.node} {'cordoned' if changed else 'already cordoned'}")
    return 0


def run_uncordon(ctx: Context) -> int:
    changed = set_unschedulable(ctx, ctx.args.node, False)
    ctx.out(f"node/{ctx.args.node} {'uncordoned' if changed else 'already uncordoned'}")
    return 0


@dataclass
class DrainPlan:
    evict: list[Any] = field(default_factory=list)
    ignored: list[Any] = field(default_factory=list)  # DaemonSet pods left alone
    unmanaged: list[Any] = field(default_factory=list)  # deleted only with --force
    blocked: dict[str, list[Any]] = field(default_factory=dict)  # reason -> pods

    @property
    def ok(self) -> bool:
        return not self.blocked


def _controller(pod: Any) -> Any | None:
    return next((o for o in pod.metadata.owner_references if o.controller), None)


def plan_drain(pods: Sequence[Any], *, ignore_daemonsets: bool, force: bool,
               delete_emptydir_data: bool) -> DrainPlan:
    """kubectl's drain filters: finished pods always go; DaemonSet pods block unless
    ignored; pods without a controller block unless forced; emptyDir data blocks
    unless its loss is accepted."""
    plan = DrainPlan()
    for pod in pods:
        if pod.metadata.HasField("deletion_timestamp"):
            plan.evict.append(pod)  # already going: wait for it
            continue
        finished = pod.status.phase in ("Succeeded", "Failed")
        owner = _controller(pod)
        if owner is not None and owner.kind == "DaemonSet" and not finished:
            if ignore_daemonsets:
                plan.ignored.append(pod)
            else:
                plan.blocked.setdefault(
                    "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
                    []).append(pod)
            continue
        if owner is None and not finished:
            if not force:
                plan.blocked.setdefault(
                    "cannot delete Pods that declare no controller (use --force to override)",
                    []).append(pod)
                continue
            plan.unmanaged.append(pod)
        if any(v.HasField("empty_dir") for v in pod.spec.volumes) and not finished \
                and not delete_emptydir_data:
            plan.blocked.setdefault(
                "cannot delete Pods with local storage (use --delete-emptydir-data to override)",
                []).append(pod)
            continue
        plan.evict.append(pod)
    return plan


def _names(pods: Sequence[Any]) -> str:
    return ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods)


def run_drain(ctx: Context) -> int:
    a = ctx.args
    name = a.node
    changed = set_unschedulable(ctx, name, True)
    ctx.out(f"node/{name} {'cordoned' if changed else 'already cordoned'}")
    pods, _ = ctx.client.list(POD, "", field_selector=f"spec.nodeName={name}")
    plan = plan_drain(objects.sorted_objects(pods), ignore_daemonsets=a.ignore_daemonsets,
                      force=a.force, delete_emptydir_data=a.delete_emptydir_data)
    if not plan.ok:
        reasons = "; ".join(f"{why}: {_names(p)}" for why, p in plan.blocked.items())
        raise CorralError(f'unable to drain node "{name}" due to error: {reasons} '
                          f"(the node stays cordoned)")
    if plan.unmanaged:
        ctx.warn(f"Warning: deleting Pods that declare no controller: {_names(plan.unmanaged)}")
    if plan.ignored:
        ctx.warn(f"Warning: ignoring DaemonSet-managed Pods: {_names(plan.ignored)}")
    grace = None if a.grace_period < 0 else a.grace_period
    waiting: dict[tuple[str, str], str] = {}
    for pod in plan.evict:
        m = pod.metadata
        ctx.out(f"evicting pod {m.namespace}/{m.name}")
        try:
            ctx.client.delete(POD, m.name, m.namespace, grace_period_seconds=grace)
        except NotFound:
            pass
        waiting[(m.namespace, m.name)] = m.uid
    if not wait_pods_gone(ctx, waiting, a.timeout):
        return 1
    ctx.out(f"node/{name} drained")
    return 0


def wait_pods_gone(ctx: Context, waiting: dict[tuple[str, str], str],
                   timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.1
    while waiting:
        for (ns, pod_name), uid in list(waiting.items()):
            try:
                pod = ctx.client.get(POD, pod_name, ns)
                gone = pod.metadata.uid != uid
            except NotFound:
                gone = True
            if gone:
                del waiting[(ns, pod_name)]
                ctx.out(f"pod/{pod_name} evicted")
        if not waiting:
            break
        if deadline is not None and time.monotonic() >= deadline:
            ctx.error_line(f"drain timed out waiting for pods to go: "
                           f"{', '.join(f'{ns}/{n}' for ns, n in waiting)}")
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    return True
