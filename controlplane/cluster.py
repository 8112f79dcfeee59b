"""The Cluster service: this replica's view (LocalStatus) and everyone's (Status).

Status asks every member for its LocalStatus over gRPC, in parallel, with a
short deadline, so one dead member costs one deadline, not one per member.
Members come from the replicated member registry (each replica registers its
API address when it starts) merged with the configured peers (a member that
never started is still listed, as unreachable). Warnings point at what an
operator should fix: no leader, unreachable members, an even member count,
a member far behind.

Threading: called from gRPC worker threads; the fan-out uses a small thread
pool per call. Channels to peers are cached and shared (thread-safe).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from controlplane.api.servicer import call
from controlplane.store.base import LocalStatus, MemberInfo, Store
from corral.errors import CorralError
from corral.limits import CLIENT_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc

# How long Status waits for each member.
MEMBER_DEADLINE = 1.5
# A member this many entries behind the leader's commit index is called out.
LAG_WARNING_ENTRIES = 1000


@dataclass(frozen=True)
class Self:
    name: str
    raft_address: str
    api_address: str
    socket: str


def member_status(local: LocalStatus, me: Self, names: Mapping[str, str]) -> api_pb2.MemberStatus:
    """A MemberStatus from a store's LocalStatus; `names` maps raft address -> name."""
    return api_pb2.MemberStatus(
        name=me.name, raft_address=me.raft_address, api_address=me.api_address,
        socket=me.socket, state=local.state, leader=names.get(local.leader, local.leader),
        term=local.term, commit_index=local.commit_index, applied_index=local.applied_index,
        revision=local.revision, has_quorum=local.has_quorum, reachable=True,
        log_entries=local.log_entries,
    )


def warnings(members: list[api_pb2.MemberStatus], leader: str,
             leader_commit: int) -> list[str]:
    """What an operator should know, as sentences. Pure."""
    out = []
    n = len(members)
    if not leader:
        out.append("no leader: writes and linearizable reads fail until a majority of "
                   f"the {n} members is up and connected")
    if n and n % 2 == 0:
        tolerated = (n - 1) // 2
        what = {0: "no failure", 1: "1 failure"}.get(tolerated, f"{tolerated} failures")
        out.append(f"an even number of members ({n}) tolerates no more failures than "
                   f"{n - 1}: {n} tolerates {what}, like {n - 1}; add or remove one member")
    for m in members:
        if not m.reachable:
            out.append(f"member {m.name} is unreachable: {m.error}")
        elif leader and leader_commit - m.applied_index > LAG_WARNING_ENTRIES:
            out.append(f"member {m.name} is {leader_commit - m.applied_index} entries behind "
                       "the leader")
    return out


class ClusterServicer(api_pb2_grpc.ClusterServicer):
    def __init__(self, store: Store, me: Self, peers: Mapping[str, str]) -> None:
        self._store = store
        self._me = me
        # name -> raft address, from the configuration (self included).
        self._peers = dict(peers)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def set_api_address(self, address: str) -> None:
        """The address the server really listens on (known after binding)."""
        self._me = Self(self._me.name, self._me.raft_address, address, self._me.socket)

    def _names(self, members: list[MemberInfo]) -> dict[str, str]:
        names = {addr: name for name, addr in self._peers.items()}
        names.update({m.raft_address: m.name for m in members})
        return names

    def local(self) -> api_pb2.MemberStatus:
        return member_status(self._store.local_status(), self._me,
                             self._names(self._store.members()))

    def LocalStatus(self, request: api_pb2.MemberStatusRequest,
                    context: grpc.ServicerContext) -> api_pb2.MemberStatus:
        return call(context, self._store, self.local)

    def Status(self, request: api_pb2.ClusterStatusRequest,
               context: grpc.ServicerContext) -> api_pb2.ClusterStatus:
        return call(context, self._store, self.status)

    def status(self) -> api_pb2.ClusterStatus:
        registered = {m.name: m for m in self._store.members()}
        if set(self._peers) - set(registered) and self._store.has_quorum():
            # A peer this replica has no record of may have registered a moment
            # ago through another replica: sync (one ReadIndex round) brings in
            # every record committed before this call. Without quorum the status
            # is wanted all the more: this replica's own view.
            try:
                self._store.sync()
            except CorralError:
                pass
            registered = {m.name: m for m in self._store.members()}
        names = sorted(set(registered) | set(self._peers) | {self._me.name})
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = {n: pool.submit(self._ask, n, registered.get(n)) for n in names}
            members = [futures[n].result() for n in names]
        leaders = [m for m in members if m.reachable and m.state == "leader"]
        # Two members may briefly both believe they lead: the higher term wins.
        leader = max(leaders, key=lambda m: m.term, default=None)
        term = max((m.term for m in members if m.reachable), default=0)
        return api_pb2.ClusterStatus(
            members=members, leader=leader.name if leader else "",
            term=leader.term if leader else term,
            commit_index=leader.commit_index if leader else 0,
            warnings=warnings(members, leader.name if leader else "",
                              leader.commit_index if leader else 0),
        )

    def _ask(self, name: str, info: MemberInfo | None) -> api_pb2.MemberStatus:
        if name == self._me.name:
            return self.local()
        raft = info.raft_address if info else self._peers.get(name, "")
        target = ""
        if info is not None:
            target = info.api_address or (f"unix:{info.socket}" if info.socket else "")
        base = api_pb2.MemberStatus(name=name, raft_address=raft,
                                    api_address=info.api_address if info else "",
                                    socket=info.socket if info else "", reachable=False)
        if not target:
            base.error = "it has not registered an API address (never started, or started " \
                         "without quorum)"
            return base
        try:
            stub = api_pb2_grpc.ClusterStub(self._channel(target))
            resp: api_pb2.MemberStatus = stub.LocalStatus(api_pb2.MemberStatusRequest(),
                                                          timeout=MEMBER_DEADLINE)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            base.error = f"{target}: {code.name if code else 'error'}: " \
                         f"{err.details() if hasattr(err, 'details') else err}"
            return base
        resp.reachable = True
        return resp

    def _channel(self, target: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(target)
            if ch is None:
                ch = self._channels[target] = grpc.insecure_channel(target,
                                                                    options=CLIENT_OPTIONS)
            return ch

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
