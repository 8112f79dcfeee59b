"""`corral get`: objects as kubectl prints them (table, wide, yaml, json, name),
`get all`, several kinds at once, and `-w` to follow changes.

Threads model: main thread only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from corral import kinds, manifest, printers
from corral.cli import objects
from corral.cli.context import Context, UsageError
from corral.errors import NotFound

OUTPUTS = ("wide", "yaml", "json", "name")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "get", parents=[common], help="Display one or many resources",
        description="Display one or many resources. KIND is a kind, a short name (po, deploy, "
                    "svc, ...), several joined by commas, or `all`; or give KIND/NAME pairs.",
    )
    p.add_argument("kind", metavar="KIND[,KIND...]|all|KIND/NAME")
    p.add_argument("names", nargs="*", metavar="NAME")
    add_list_flags(p)
    p.add_argument("-o", "--output", choices=OUTPUTS, help="wide, yaml, json or name")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after listing, print changes as they happen")
    p.set_defaults(run=run)


def add_list_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="list across all namespaces")
    p.add_argument("-l", "--selector", default="",
                   help="label selector, e.g. app=web,tier in (a,b),!canary")
    p.add_argument("--field-selector", default="",
                   help="field selector, e.g. spec.nodeName=h1,status.phase!=Running")


def run(ctx: Context) -> int:
    a = ctx.args
    words = [a.kind, *a.names]
    if "/" in a.kind:
        targets = objects.split_targets(words)
        infos = list(dict.fromkeys(info for info, _ in targets))
    else:
        infos = objects.resolve_kinds(a.kind)
        targets = [(infos[0], n) for n in a.names]
        if a.names and len(infos) > 1:
            raise UsageError("names cannot be given with several kinds; use KIND/NAME pairs")
    if targets and (a.selector or a.field_selector):
        raise UsageError("a name cannot be given together with a selector")
    if targets and ctx.all_namespaces:
        raise UsageError("a resource cannot be retrieved by name across all namespaces")
    if a.watch:
        return watch(ctx, infos, targets)

    failed = False
    results: list[tuple[kinds.KindInfo, list[Any]]] = []
    if targets:
        found: dict[kinds.KindInfo, list[Any]] = {}
        for info, name in targets:
            try:
                obj = ctx.client.get(info, name, objects.namespace_of(ctx, info))
            except NotFound:
                ctx.error_line(objects.not_found(info, name))
                failed = True
                continue
            found.setdefault(info, []).append(obj)
        results = list(found.items())
    else:
        for info in infos:
            items, _ = ctx.client.list(info, objects.namespace_of(ctx, info),
                                       label_selector=a.selector,
                                       field_selector=a.field_selector)
            results.append((info, objects.sorted_objects(items)))

    print_results(ctx, results, single=len(targets) == 1 and not failed,
                  named=bool(targets), several_kinds=len(infos) > 1)
    return 1 if failed else 0


def print_results(ctx: Context, results: Sequence[tuple[kinds.KindInfo, list[Any]]], *,
                  single: bool, named: bool, several_kinds: bool) -> None:
    output = ctx.args.output
    everything = [obj for _, objs in results for obj in objs]
    if output in ("yaml", "json"):
        dicts = [manifest.to_dict(o) for o in everything]
        data = dicts[0] if single and dicts else manifest.as_list(dicts)
        ctx.out(manifest.dump_yaml(data) if output == "yaml" else manifest.dump_json(data))
        return
    if output == "name":
        for info, objs in results:
            for obj in objs:
                ctx.out(printers.name_of(info, obj.metadata.name))
        return
    if not everything:
        if not named:  # a named get that found nothing already said so
            namespaced = any(info.namespaced for info, _ in results)
            ns = "" if ctx.all_namespaces else ctx.namespace
            ctx.warn(printers.no_resources(ns, namespaced))
        return
    now = ctx.now()
    sections = []
    for info, objs in results:
        if objs:
            sections.append(printers.table(
                info, objs, now, wide=output == "wide", all_namespaces=ctx.all_namespaces,
                kind_prefix=several_kinds))
    ctx.out("\n".join(sections))


class _RowPrinter:
    """Rows printed one at a time under one header, padded to the header's widths
    (kubectl's `get -w` look)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.widths: list[int] = []

    def start(self, headers: list[str], rows: list[list[str]]) -> None:
        table = [headers, *rows]
        self.widths = [max(max(len(r[i]) for r in table) + 3, 6) for i in range(len(headers))]
        for row in table:
            self.row(row)

    def row(self, cells: list[str]) -> None:
        padded = [c.ljust(max(self.widths[i], len(c) + 3)) for i, c in enumerate(cells[:-1])]
        self.ctx.out(("".join(padded) + cells[-1]).rstrip())


def watch(ctx: Context, infos: list[kinds.KindInfo],
          targets: list[tuple[kinds.KindInfo, str]]) -> int:
    a = ctx.args
    if len(infos) != 1 or len(targets) > 1:
        raise UsageError("watch is only supported on one kind, or one object")
    info = infos[0]
    namespace = objects.namespace_of(ctx, info)
    field_selector = a.field_selector
    if targets:
        field_selector = f"metadata.name={targets[0][1]}"
        namespace = ctx.namespace if info.namespaced else ""
    items, rv = ctx.client.list(info, namespace, label_selector=a.selector,
                                field_selector=field_selector)
    items = objects.sorted_objects(items)
    output = a.output
    rows = _RowPrinter(ctx)

    def emit(objs: list[Any], first: bool) -> None:
        if output == "name":
            for o in objs:
                ctx.out(printers.name_of(info, o.metadata.name))
        elif output == "yaml":
            for o in objs:
                ctx.out("---\n" + manifest.dump_yaml(manifest.to_dict(o)))
        elif output == "json":
            for o in objs:
                ctx.out(manifest.dump_json(manifest.to_dict(o)))
        else:
            headers, cells = printers.table_rows(
                info, objs, ctx.now(), wide=output == "wide",
                all_namespaces=ctx.all_namespaces)
            if first or not rows.widths:
                if cells or not first:
                    rows.start(headers, cells)
            else:
                for c in cells:
                    rows.row(c)

    emit(items, True)
    for event in objects.watch(ctx.client, info, namespace, resource_version=rv,
                               label_selector=a.selector, field_selector=field_selector,
                               timeout=ctx.request_timeout):
        if event.object is not None:
            emit([event.object], False)
    return 0
