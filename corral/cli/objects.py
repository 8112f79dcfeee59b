"""Shared by the verbs: naming kinds and objects the way kubectl does, reading
lists in a stable order, and a watch that survives a replica going away.

Threads model: main thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from corral import kinds
from corral.cli.context import Context, UsageError
from corral.client import Client, WatchEvent
from corral.errors import Conflict, Expired, Invalid, Timeout, Unavailable

# What `get all` shows, in kubectl's order.
ALL_KINDS = ("Pod", "Service", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet", "Job")


def resolve_kind(name: str) -> kinds.KindInfo:
    try:
        return kinds.resolve(name)
    except Invalid as err:
        raise UsageError(str(err)) from None


def resolve_kinds(text: str) -> list[kinds.KindInfo]:
    """'pods', 'po,svc', 'all' (pods, services, daemonsets, deployments, replicasets,
    statefulsets, jobs)."""
    out: list[kinds.KindInfo] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        infos = ([kinds.by_kind(k) for k in ALL_KINDS] if part == "all"
                 else [resolve_kind(part)])
        out.extend(i for i in infos if i not in out)
    if not out:
        raise UsageError("you must specify the type of resource to get")
    return out


def split_targets(args: Sequence[str]) -> list[tuple[kinds.KindInfo, str]]:
    """Positional `KIND NAME...` or `KIND/NAME ...` into (kind, name) pairs."""
    if not args:
        raise UsageError("you must specify the type of resource and a name")
    if all("/" in a for a in args):
        pairs = []
        for arg in args:
            kind, _, name = arg.partition("/")
            if not name:
                raise UsageError(f"{arg!r}: expected KIND/NAME")
            pairs.append((resolve_kind(kind), name))
        return pairs
    if "/" in args[0]:
        raise UsageError("there is no need to specify a resource type as a separate argument "
                         "when passing arguments in resource/name form")
    info = resolve_kind(args[0])
    return [(info, name) for name in args[1:]]


def kind_ref(info: kinds.KindInfo) -> str:
    """kubectl's resource name in messages: 'pods', 'deployments.apps'."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


def not_found(info: kinds.KindInfo, name: str) -> str:
    return f'{kind_ref(info)} "{name}" not found'


def namespace_of(ctx: Context, info: kinds.KindInfo) -> str:
    """The namespace a read of this kind uses: '' for cluster-scoped kinds and -A."""
    if not info.namespaced or ctx.all_namespaces:
        return ""
    return ctx.namespace


def sorted_objects(objs: Sequence[Any]) -> list[Any]:
    return sorted(objs, key=lambda o: (o.metadata.namespace, o.metadata.name))


def watch(
    client: Client,
    info: kinds.KindInfo,
    namespace: str,
    *,
    resource_version: str,
    label_selector: str = "",
    field_selector: str = "",
    timeout: float | None = None,
) -> Iterator[WatchEvent]:
    """Events after `resource_version`, resumed on another replica when a stream breaks.

    Ends when `timeout` seconds have passed (None: never). A resume point older
    than the server's history lists again: the objects are replayed as ADDED,
    as a fresh watch would (kubectl's `get -w` does the same)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rv = resource_version
    delay = 0.1
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        stream = client.watch(info, namespace, label_selector=label_selector,
                              field_selector=field_selector, resource_version=rv,
                              allow_bookmarks=True, timeout=remaining)
        try:
            for event in stream:
                if event.resource_version:
                    rv = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                delay = 0.1
                yield event
        except Timeout:
            return
        except Expired:
            rv = ""  # the server replays current objects as ADDED
            continue
        except Unavailable:
            client.rotate_endpoint(stream.endpoint)
        finally:
            stream.cancel()
        # A stream that ended (replica stopping) or broke: resume elsewhere.
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """kubectl-style durations for flags: '30s', '2m', '1h30m', '500ms', or plain seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, number, i = 0.0, "", 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in _UNITS or not number:
            raise UsageError(f"invalid duration {text!r} (use e.g. 30s, 2m, 1h)")
        total += float(number) * _UNITS[unit]
        number = ""
        i += len(unit)
    if number:
        raise UsageError(f"invalid duration {text!r}: a number needs a unit (s, m, h)")
    return total


def parse_bool(text: str) -> bool:
    """For kubectl's --flag=false style booleans."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise UsageError(f"invalid boolean {text!r} (use true or false)")


def modify(
    client: Client,
    info: kinds.KindInfo,
    name: str,
    namespace: str,
    change: Callable[[Any], bool],
    *,
    attempts: int = 10,
) -> tuple[Any, bool]:
    """Read, change, write back with the read's resourceVersion (compare-and-set),
    and start over when someone else wrote in between. `change(obj)` edits obj in
    place and returns False when nothing needs writing. (object, written?)."""
    for _ in range(attempts):
        obj = client.get(info, name, namespace)
        if not change(obj):
            return obj, False
        try:
            return client.update(obj), True
        except Conflict:
            continue
    raise Conflict(f'{kind_ref(info)} "{name}" kept changing under {attempts} attempts to '
                   f"update it; try again")
