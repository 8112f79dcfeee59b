"""`corral describe KIND NAME...`: a human summary with the object's Events at the
bottom (from `get events` with involvedObject field selectors), as kubectl.

Threads model: main thread only. The summaries are rendered by describers.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from corral import kinds, selectors
from corral.cli import describers, objects
from corral.cli.context import Context, UsageError
from corral.errors import CorralError, NotFound

_WORKLOADS = ("ReplicaSet", "StatefulSet", "DaemonSet", "Job")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "describe", parents=[common], help="Show details of objects, with their events",
        description="`describe KIND NAME...`, `describe KIND/NAME`, or `describe KIND -l SEL`.",
    )
    p.add_argument("targets", nargs="+", metavar="KIND NAME...|KIND/NAME")
    p.add_argument("-l", "--selector", default="", help="describe what this selector matches")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.set_defaults(run=run)


def run(ctx: Context) -> int:
    a = ctx.args
    found: list[tuple[kinds.KindInfo, Any]] = []
    failed = False
    if len(a.targets) == 1 and "/" not in a.targets[0]:
        info = objects.resolve_kind(a.targets[0])
        items, _ = ctx.client.list(info, objects.namespace_of(ctx, info),
                                   label_selector=a.selector)
        found = [(info, o) for o in objects.sorted_objects(items)]
        if not found:
            ns = "" if ctx.all_namespaces else ctx.namespace
            ctx.warn(f"No resources found in {ns} namespace." if ns and info.namespaced
                     else "No resources found")
            return 0
    else:
        if a.selector:
            raise UsageError("a name cannot be given together with a selector")
        for info, name in objects.split_targets(a.targets):
            try:
                found.append((info, ctx.client.get(info, name, objects.namespace_of(ctx, info))))
            except NotFound:
                ctx.error_line(objects.not_found(info, name))
                failed = True
    texts = [describers.describe(info, obj, ctx.now(), related(ctx, info, obj))
             for info, obj in found]
    if texts:
        ctx.out("\n\n".join(t.rstrip("\n") for t in texts))
    return 1 if failed else 0


def related(ctx: Context, info: kinds.KindInfo, obj: Any) -> describers.Related:
    """What the summary shows beside the object: its events, its pods, its ReplicaSets."""
    m = obj.metadata
    out = describers.Related()
    selector = f"involvedObject.kind={info.kind},involvedObject.name={m.name}"
    events, _ = ctx.client.list("Event", m.namespace, field_selector=selector)
    # An earlier object of the same name had another uid: not its events. An event
    # that names no uid is kept (its writer did not know it).
    out.events = [e for e in events if e.involved_object.uid in ("", m.uid)]
    if info.kind == "Deployment":
        out.replica_sets, _ = ctx.client.list("ReplicaSet", m.namespace)
    elif info.kind in _WORKLOADS:
        try:
            text = str(selectors.from_proto(obj.spec.selector))
        except CorralError:
            text = ""
        if text:
            pods, _ = ctx.client.list("Pod", m.namespace, label_selector=text)
            out.pods = [p for p in pods
                        if any(o.uid == m.uid for o in p.metadata.owner_references)]
    elif info.kind == "Node":
        out.pods, _ = ctx.client.list("Pod", "", field_selector=f"spec.nodeName={m.name}")
    elif info.kind == "PersistentVolumeClaim":
        pods, _ = ctx.client.list("Pod", m.namespace)
        out.pods = [p for p in pods if any(
            v.persistent_volume_claim.claim_name == m.name for v in p.spec.volumes)]
    return out
