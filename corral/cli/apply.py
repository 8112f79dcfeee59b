"""`corral apply -f` and `corral create`: all or nothing.

Every document is checked before anything is written: client-side (the
manifest walk), then each namespace it needs must exist or be created by the
same apply, then the server validates each object with a dry run. Any error
prints one line per bad document and exits 1 with nothing written. Only then
are the objects applied, Namespaces first, printing kubectl's
"deployment.apps/web created|configured|unchanged".

Threads model: main thread only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from corral import manifest, printers
from corral.cli.context import Context, UsageError
from corral.cli.objects import resolve_kind
from corral.errors import CorralError, NotFound, Timeout, Unavailable
from corral.manifest import Document, ManifestError
from corral.v1 import core_pb2

DRY_RUN = ("none", "client", "server")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "apply", parents=[common], help="Create or update objects from manifests",
        description="Create or update the objects of YAML/JSON manifests (files, folders or - "
                    "for stdin). Every document is validated first; if any is bad, nothing "
                    "is written.",
    )
    add_file_flag(p, required=True)
    p.add_argument("--dry-run", choices=DRY_RUN, default="none",
                   help="client: check manifests only; server: also ask the server; "
                        "nothing is written either way")
    p.set_defaults(run=run_apply)

    c = sub.add_parser(
        "create", parents=[common], help="Create a namespace, or objects from manifests",
        description="`corral create namespace NAME`, or `corral create -f FILE` (fails on "
                    "objects that already exist).",
    )
    c.add_argument("what", nargs="*", metavar="namespace NAME")
    add_file_flag(c, required=False)
    c.set_defaults(run=run_create)


def add_file_flag(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], required=required,
                   metavar="FILE|DIR|-",
                   help="manifest file, folder of *.yaml/*.yml/*.json, or - for stdin "
                        "(repeatable)")


def load(ctx: Context, paths: Sequence[str]) -> list[Document]:
    """The manifests' documents with namespaces filled in, Namespaces first."""
    docs = manifest.load(list(paths), stdin=ctx.stdin)
    if not docs:
        raise UsageError("no objects passed to apply")
    for doc in docs:
        meta = doc.obj.metadata
        # Apply is declarative: the manifest says what should be, whatever changed
        # meanwhile. A resourceVersion copied from `get -o yaml` would turn it into a
        # compare-and-set that fails as soon as a controller touches the object.
        meta.resource_version = ""
        if not meta.name:
            raise ManifestError(doc.where, "required (give the object a name)", "metadata.name")
        if not doc.info.namespaced:
            meta.namespace = ""  # as Kubernetes: cluster-scoped objects have none
        elif not meta.namespace:
            meta.namespace = ctx.namespace
        elif ctx.namespace_given and meta.namespace != ctx.namespace:
            raise ManifestError(
                doc.where,
                f'the namespace from the manifest "{meta.namespace}" does not match the '
                f'namespace "{ctx.namespace}" of --namespace: drop one of them',
                "metadata.namespace",
            )
    return sorted(docs, key=lambda d: d.info.kind != "Namespace")


def check_namespaces(ctx: Context, docs: Sequence[Document]) -> tuple[list[str], set[str]]:
    """Errors for documents whose namespace neither exists nor is created here; and the
    namespaces this apply creates that do not exist yet."""
    created_here = {d.name for d in docs if d.info.kind == "Namespace"}
    existing: dict[str, bool] = {}

    def exists(ns: str) -> bool:
        if ns not in existing:
            try:
                ctx.client.get("Namespace", ns)
                existing[ns] = True
            except NotFound:
                existing[ns] = False
        return existing[ns]

    errors = []
    for doc in docs:
        ns = doc.obj.metadata.namespace
        if doc.info.namespaced and ns not in created_here and not exists(ns):
            errors.append(f'{doc.where}: namespaces "{ns}" not found (create it first, or '
                          f"put a Namespace in the same apply)")
    new = {ns for ns in created_here if not exists(ns)}
    return errors, new


def server_check(ctx: Context, docs: Sequence[Document], new_namespaces: set[str],
                 *, create: bool = False) -> tuple[list[str], list[str]]:
    """The server's dry run of every document: (one error line per refused document,
    the result each would have: created/configured/unchanged)."""
    errors, results = [], []
    for doc in docs:
        try:
            if create:
                ctx.client.create(doc.obj, dry_run=True)
                result = "created"
            else:
                _, result = ctx.client.apply(doc.obj, dry_run=True)
        except (Unavailable, Timeout):
            raise  # the cluster's fault, not the document's
        except NotFound as err:
            if doc.obj.metadata.namespace in new_namespaces:
                # A server that checks namespaces in dry runs cannot know this one
                # will exist by then; the manifest walk already passed it.
                results.append("created")
                continue
            errors.append(f"{doc.where}: {err}")
            continue
        except CorralError as err:
            errors.append(f"{doc.where}: {err}")
            continue
        results.append(result)
    return errors, results


def _fail(ctx: Context, errors: Sequence[str]) -> int:
    """One `error:` line per bad document; exit 1 says nothing was written."""
    for line in errors:
        ctx.error_line(line)
    return 1


def run_apply(ctx: Context) -> int:
    docs = load(ctx, ctx.args.filename)
    if ctx.args.dry_run == "client":
        for doc in docs:
            ctx.out(f"{printers.name_of(doc.info, doc.name)} checked (client dry run)")
        return 0
    errors, new_namespaces = check_namespaces(ctx, docs)
    refused, results = server_check(ctx, docs, new_namespaces)
    errors += refused
    if errors:
        return _fail(ctx, errors)
    if ctx.args.dry_run == "server":
        for doc, result in zip(docs, results, strict=True):
            ctx.out(f"{printers.name_of(doc.info, doc.name)} {result} (server dry run)")
        return 0
    for doc in docs:
        try:
            _, result = ctx.client.apply(doc.obj)
        except CorralError as err:
            # Validated moments ago: something changed meanwhile. Say what was done.
            ctx.error_line(f"{doc.where}: {err}")
            return 1
        ctx.out(f"{printers.name_of(doc.info, doc.name)} {result}")
    return 0


def run_create(ctx: Context) -> int:
    what = ctx.args.what
    if ctx.args.filename:
        if what:
            raise UsageError("give either -f FILE or `namespace NAME`, not both")
        docs = load(ctx, ctx.args.filename)
        errors, new_namespaces = check_namespaces(ctx, docs)
        errors += server_check(ctx, docs, new_namespaces, create=True)[0]
        if errors:
            return _fail(ctx, errors)
        for doc in docs:
            ctx.client.create(doc.obj)
            ctx.out(f"{printers.name_of(doc.info, doc.name)} created")
        return 0
    if len(what) != 2 or resolve_kind(what[0]).kind != "Namespace":
        raise UsageError("usage: corral create namespace NAME, or corral create -f FILE")
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = what[1]
    ctx.client.create(ns)
    ctx.out(f"namespace/{what[1]} created")
    return 0
