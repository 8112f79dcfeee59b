"""`corral delete`: by name, by KIND/NAME, by label selector, or the objects of a
manifest, with kubectl's --grace-period, --cascade, --force and --wait.

Threads model: main thread only.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from corral import kinds
from corral.cli import objects
from corral.cli.apply import add_file_flag, load
from corral.cli.context import Context, UsageError
from corral.errors import NotFound

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
           "true": "Background", "false": "Orphan"}
FORCE_WARNING = ("Warning: Immediate deletion does not wait for confirmation that the running "
                 "resource has been terminated. The resource may continue to run on the "
                 "cluster indefinitely.")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "delete", parents=[common], help="Delete objects by name, selector or manifest",
        description="Delete objects: `delete KIND NAME...`, `delete KIND/NAME...`, "
                    "`delete KIND -l SELECTOR`, `delete KIND --all` or `delete -f FILE`.",
    )
    p.add_argument("targets", nargs="*", metavar="KIND NAME...|KIND/NAME")
    add_file_flag(p, required=False)
    p.add_argument("-l", "--selector", default="", help="delete what this selector matches")
    p.add_argument("--all", action="store_true", help="delete every object of the kind")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="with -l or --all: in every namespace")
    p.add_argument("--grace-period", type=int, default=-1,
                   help="seconds a pod gets to stop (-1: its own setting; 0: at once)")
    p.add_argument("--cascade", nargs="?", const="background", default="background",
                   choices=sorted(CASCADE),
                   help="what happens to dependents: background (default), foreground, orphan")
    p.add_argument("--force", action="store_true",
                   help="remove at once (grace period 0) without waiting for the node")
    p.add_argument("--now", action="store_true", help="same as --grace-period=1")
    p.add_argument("--wait", nargs="?", const="true", default="true", type=objects.parse_bool,
                   help="wait until the objects are gone (default true; --wait=false to not)")
    p.add_argument("--timeout", type=objects.parse_duration, default=None,
                   help="give up waiting after this long (e.g. 60s); default: no limit")
    p.add_argument("--ignore-not-found", action="store_true",
                   help="a missing object is not an error")
    p.set_defaults(run=run)


def _targets(ctx: Context) -> list[tuple[kinds.KindInfo, str, str]]:
    """(kind, namespace, name) of everything to delete, in order."""
    a = ctx.args
    if a.filename:
        if a.targets or a.selector or a.all:
            raise UsageError("give either -f FILE or KIND and names, not both")
        docs = load(ctx, a.filename)
        # Reverse: a Namespace listed first in the manifest goes last.
        return [(d.info, d.obj.metadata.namespace, d.name) for d in reversed(docs)]
    if not a.targets:
        raise UsageError("you must specify KIND NAME, KIND/NAME, KIND -l SELECTOR, KIND --all "
                         "or -f FILE")
    if a.selector or a.all:
        if len(a.targets) != 1 or "/" in a.targets[0]:
            raise UsageError("with -l or --all give only the kind")
        out = []
        for info in objects.resolve_kinds(a.targets[0]):
            items, _ = ctx.client.list(info, objects.namespace_of(ctx, info),
                                       label_selector=a.selector)
            out += [(info, o.metadata.namespace, o.metadata.name)
                    for o in objects.sorted_objects(items)]
        return out
    if ctx.all_namespaces:
        raise UsageError("-A needs -l or --all")
    pairs = objects.split_targets(a.targets)
    if not pairs:
        raise UsageError("give the names to delete, or -l SELECTOR, or --all")
    return [(info, ctx.namespace if info.namespaced else "", name) for info, name in pairs]


def run(ctx: Context) -> int:
    a = ctx.args
    grace: int | None = None if a.grace_period < 0 else a.grace_period
    if a.now:
        grace = 1
    if a.force:
        if grace is None:
            grace = 0
        if grace == 0:
            ctx.warn(FORCE_WARNING)
    policy = CASCADE[a.cascade]
    targets = _targets(ctx)
    if not targets and (a.selector or a.all):
        ns = "" if ctx.all_namespaces else ctx.namespace
        ctx.warn(f"No resources found in {ns} namespace." if ns else "No resources found")
        return 0
    failed = False
    pending: list[tuple[kinds.KindInfo, str, str, str]] = []
    for info, ns, name in targets:
        try:
            obj, removed = ctx.client.delete(info, name, ns, grace_period_seconds=grace,
                                             propagation_policy=policy)
        except NotFound:
            if not a.ignore_not_found:
                ctx.error_line(objects.not_found(info, name))
                failed = True
            continue
        ctx.out(f'{_singular_ref(info)} "{name}" deleted')
        if not removed and a.wait:
            pending.append((info, ns, name, obj.metadata.uid if obj is not None else ""))
    if pending and not wait_gone(ctx, pending, a.timeout):
        failed = True
    return 1 if failed else 0


def _singular_ref(info: kinds.KindInfo) -> str:
    """kubectl's 'deployment.apps', 'pod' in `delete` output."""
    kind = info.kind.lower()
    return f"{kind}.{info.group}" if info.group else kind


def wait_gone(ctx: Context, pending: list[tuple[kinds.KindInfo, str, str, str]],
              timeout: float | None) -> bool:
    """Poll until every object is gone (or replaced by one with another uid)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.1
    while pending:
        still = []
        for info, ns, name, uid in pending:
            try:
                obj = ctx.client.get(info, name, ns)
            except NotFound:
                continue
            if uid and obj.metadata.uid != uid:
                continue
            still.append((info, ns, name, uid))
        pending = still
        if not pending:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            for info, _, name, _ in pending:
                ctx.error_line(f'timed out waiting for {_singular_ref(info)} "{name}" to be '
                               f"deleted (it waits for finalizers or its node; --force removes "
                               f"it at once)")
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    return True
