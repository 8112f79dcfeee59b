"""`corral cluster status`: the control plane's members, who leads, term, commit
and applied indexes, and warnings (e.g. an even number of members).

Threads model: main thread only. `render` is pure.
"""

from __future__ import annotations

import argparse
from typing import Any

from corral import manifest, printers
from corral.cli.context import Context
from corral.v1 import api_pb2


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cluster", help="Control plane membership and health")
    verbs = p.add_subparsers(dest="cluster_verb", metavar="VERB", required=True,
                             parser_class=type(p))
    s = verbs.add_parser(
        "status", parents=[common], help="Members, leader, term, commit and applied indexes",
        description="Each member's view as gathered by the replica that answers.",
    )
    s.add_argument("-o", "--output", choices=("json", "yaml"))
    s.set_defaults(run=run_status)


def run_status(ctx: Context) -> int:
    status = ctx.client.cluster_status()
    output = ctx.args.output
    if output == "json":
        ctx.out(manifest.dump_json(as_dict(status)))
    elif output == "yaml":
        ctx.out(manifest.dump_yaml(as_dict(status)))
    else:
        ctx.out(render(status))
    return 0


def as_dict(status: api_pb2.ClusterStatus) -> dict[str, Any]:
    """Every field, zeros included: a script reading `appliedIndex` should find it."""
    members = [{f.json_name: getattr(m, f.name) for f in m.DESCRIPTOR.fields}
               for m in status.members]
    return {"leader": status.leader, "term": status.term,
            "commitIndex": status.commit_index, "members": members,
            "warnings": list(status.warnings)}


def render(status: api_pb2.ClusterStatus) -> str:
    leader = status.leader or "<none>"
    head = f"Leader: {leader}   Term: {status.term}   Commit index: {status.commit_index}\n"
    rows = []
    for m in sorted(status.members, key=lambda m: m.name):
        if m.reachable:
            rows.append([m.name, m.state or "-", str(m.term), str(m.commit_index),
                         str(m.applied_index), str(m.revision),
                         "yes" if m.has_quorum else "no", m.raft_address or "-",
                         m.api_address or m.socket or "-", m.error or "ok"])
        else:
            rows.append([m.name, "unreachable", "-", "-", "-", "-", "-",
                         m.raft_address or "-", m.api_address or m.socket or "-",
                         m.error or "no answer"])
    table = printers.format_table(
        ["NAME", "STATE", "TERM", "COMMIT", "APPLIED", "REVISION", "QUORUM", "RAFT",
         "API", "STATUS"], rows)
    text = head + table
    if status.warnings:
        text += "Warnings:\n" + "".join(f"  - {w}\n" for w in status.warnings)
    return text
