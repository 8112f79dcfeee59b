"""Is the lab up? Asks each replica over its unix socket, and decides.

The decisions (`raft_verdict`, `nodes_verdict`) are pure functions of what the
replicas answered, each returning (ready?, a sentence saying why not), so they are
tested without a cluster. `Probe` asks: Cluster.LocalStatus and grpc.health.v1 on
each replica's socket with a short deadline (a replica that does not serve the
health service counts as serving). Threads model: one caller at a time; gRPC
channels are thread-safe anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.limits import CLIENT_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc


@dataclass(frozen=True)
class ReplicaView:
    host: str
    status: api_pb2.MemberStatus | None
    error: str = ""
    # True/False from grpc.health.v1; None when the replica does not serve it.
    serving: bool | None = None


def raft_verdict(views: Sequence[ReplicaView]) -> tuple[bool, str]:
    """Ready when every asked replica answers, serves, and names the same leader."""
    if not views:
        return False, "no control plane replica to ask"
    for v in views:
        if v.status is None:
            return False, f"{v.host}: not answering ({v.error or 'no reply'})"
    leaders = {v.status.leader for v in views if v.status is not None}
    if leaders == {""}:
        return False, "no Raft leader elected yet"
    if "" in leaders or len(leaders) > 1:
        seen = ", ".join(f"{v.host}->{v.status.leader or 'none'}" for v in views
                         if v.status is not None)
        return False, f"replicas do not agree on a leader yet ({seen})"
    for v in views:
        if v.serving is False:
            return False, f"{v.host}: health is not SERVING yet"
    return True, f"leader {leaders.pop()}"


def node_ready(node: Any, since: float = 0.0) -> bool:
    """Ready=True, posted at or after `since` (wall clock seconds): a host that just
    came back must not count as Ready on the strength of a heartbeat from before
    its power loss."""
    for c in node.status.conditions:
        if c.type == "Ready" and c.status == "True":
            beat = c.last_heartbeat_time.seconds + c.last_heartbeat_time.nanos / 1e9
            return beat >= since
    return False


def nodes_verdict(nodes: Iterable[Any], wanted: Sequence[str],
                  since: float = 0.0) -> tuple[bool, str]:
    """Ready when every node named in `wanted` exists with condition Ready=True
    heartbeated at or after `since`."""
    by_name = {n.metadata.name: n for n in nodes}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        return False, f"nodes not registered yet: {', '.join(missing)}"
    unready = [w for w in wanted if not node_ready(by_name[w], since)]
    if unready:
        return False, f"nodes not Ready yet: {', '.join(unready)}"
    return True, f"{len(wanted)} nodes Ready"


class Probe:
    """Asks replicas through their unix sockets."""

    def __init__(self, sockets: dict[str, Path], timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._channels = {
            host: grpc.insecure_channel(f"unix:{path}", options=CLIENT_OPTIONS)
            for host, path in sockets.items()
        }

    def view(self, host: str) -> ReplicaView:
        ch = self._channels[host]
        try:
            status = api_pb2_grpc.ClusterStub(ch).LocalStatus(
                api_pb2.MemberStatusRequest(), timeout=self.timeout)
        except grpc.RpcError as err:
            return ReplicaView(host, None, f"{err.code().name}: {err.details()}")
        serving: bool | None
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self.timeout)
            serving = resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError as err:
            serving = None if err.code() == grpc.StatusCode.UNIMPLEMENTED else False
        return ReplicaView(host, status, serving=serving)

    def views(self, hosts: Iterable[str]) -> list[ReplicaView]:
        return [self.view(h) for h in hosts]

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
