"""`corral logs`, `corral exec` and `corral top nodes|pods`.

Logs and exec go through the control plane's Pods service, which forwards them
to the node agent of the pod's node (clients need no route to the nodes).

Threads model: main thread, plus for `exec -i` the thread gRPC uses to pull
the request iterator, which reads stdin in chunks; it ends at stdin's EOF.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from corral import printers
from corral.cli import objects
from corral.cli.context import Context, UsageError
from corral.errors import CorralError
from corral.v1 import api_pb2

STDIN_CHUNK = 64 * 1024


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="Print a container's logs",
                       description="Print the logs of a container of a pod.")
    p.add_argument("pod", metavar="POD|pod/POD")
    p.add_argument("-c", "--container", default="",
                   help="container name (needed when the pod has several)")
    p.add_argument("-f", "--follow", action="store_true", help="stream new lines as they come")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines (-1: all)")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the logs of the previous (restarted) instance")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its time")
    p.set_defaults(run=run_logs)

    e = sub.add_parser(
        "exec", parents=[common], help="Run a command in a container",
        description="Run a command in a container: corral exec POD [-c C] [-i] -- CMD ARGS... "
                    "Exits with the command's exit code.",
    )
    e.add_argument("pod", metavar="POD|pod/POD")
    e.add_argument("-c", "--container", default="")
    e.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    e.add_argument("-t", "--tty", action="store_true", help="ask for a terminal")
    # main() hands over everything after `--` as `command`, untouched by argparse.
    e.add_argument("command", nargs="*", metavar="-- CMD ARGS...")
    e.set_defaults(run=run_exec, takes_command=True)

    t = sub.add_parser("top", help="CPU and memory use of nodes or pods")
    verbs = t.add_subparsers(dest="top_verb", metavar="nodes|pods", required=True,
                             parser_class=type(t))
    tn = verbs.add_parser("nodes", aliases=["node", "no"], parents=[common],
                          help="node usage from the agents' measurements")
    tn.add_argument("names", nargs="*", metavar="NAME")
    tn.add_argument("-l", "--selector", default="")
    tn.set_defaults(run=run_top_nodes)
    tp = verbs.add_parser("pods", aliases=["pod", "po"], parents=[common],
                          help="pod usage from the node agents")
    tp.add_argument("name", nargs="?", default="")
    tp.add_argument("-A", "--all-namespaces", action="store_true")
    tp.add_argument("-l", "--selector", default="")
    tp.add_argument("--containers", action="store_true", help="one line per container")
    tp.set_defaults(run=run_top_pods)


def _pod_name(text: str) -> str:
    kind, slash, name = text.partition("/")
    if not slash:
        return text
    if objects.resolve_kind(kind).kind != "Pod":
        raise UsageError(f"{text!r}: logs and exec take a pod (POD or pod/POD)")
    return name


def run_logs(ctx: Context) -> int:
    a = ctx.args
    tail = None if a.tail < 0 else a.tail
    for chunk in ctx.client.logs(_pod_name(a.pod), ctx.namespace, container=a.container,
                                 follow=a.follow, tail_lines=tail, previous=a.previous,
                                 timestamps=a.timestamps):
        ctx.out_bytes(chunk)
    return 0


def _stdin_chunks(ctx: Context) -> Iterator[bytes]:
    stream: Any = getattr(ctx.stdin, "buffer", None)
    if stream is None:  # a text stream (tests): send it whole
        data = ctx.stdin.read()
        if data:
            yield data.encode()
        return
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, STDIN_CHUNK)  # returns what is there: no waiting for a full chunk
        if not chunk:
            return
        yield chunk


def run_exec(ctx: Context) -> int:
    a = ctx.args
    command = list(a.command)
    if not getattr(a, "command_after_dashes", False) and command:
        raise UsageError("corral exec POD CMD is not supported: use corral exec POD -- CMD")
    if not command:
        raise UsageError("give the command after --: corral exec POD -- CMD ARGS...")
    start = api_pb2.ExecStart(namespace=ctx.namespace, name=_pod_name(a.pod),
                              container=a.container, command=command, stdin=a.stdin,
                              tty=a.tty)

    def requests() -> Iterator[api_pb2.ExecRequest]:
        yield api_pb2.ExecRequest(start=start)
        if a.stdin:
            for chunk in _stdin_chunks(ctx):
                yield api_pb2.ExecRequest(stdin=chunk)
            yield api_pb2.ExecRequest(stdin_eof=True)

    code: int | None = None
    for resp in ctx.client.exec_stream(requests(), timeout=ctx.request_timeout):
        if resp.stdout:
            ctx.out_bytes(resp.stdout, "stdout")
        if resp.stderr:
            ctx.out_bytes(resp.stderr, "stderr")
        if resp.HasField("exit_code"):
            code = resp.exit_code
    if code is None:
        raise CorralError("the exec stream ended without the command's exit code")
    return code


def run_top_nodes(ctx: Context) -> int:
    a = ctx.args
    if a.names:
        nodes = [ctx.client.get("Node", n) for n in a.names]
    else:
        nodes, _ = ctx.client.list("Node", label_selector=a.selector)
    if not nodes:
        ctx.warn("No resources found")
        return 0
    ctx.out(printers.top_nodes(objects.sorted_objects(nodes)))
    return 0


def run_top_pods(ctx: Context) -> int:
    a = ctx.args
    namespace = "" if ctx.all_namespaces else ctx.namespace
    resp = ctx.client.top(namespace, a.name, a.selector)
    for err in resp.errors:
        ctx.warn(f"Warning: {err}")
    if not resp.pods:
        ctx.warn(printers.no_resources(namespace, True))
        return 0
    ctx.out(printers.top_pods(list(resp.pods), containers=a.containers,
                              all_namespaces=ctx.all_namespaces))
    return 0
