"""ReadIndex: linearizable reads without writing to the Raft log (Raft thesis §6.4).

A read that must see every write acknowledged before it began needs the
commit index of a leader that is still the leader after the read arrived:

- on the leader: take the commit index (once the no-op of its term has
  committed, so the index is current), then confirm leadership with one round
  of append_entries sent after the read arrived: when a majority (the leader
  included) has answered that round, no other leader can have committed
  anything newer; the read is served once this replica has applied up to
  that index;
- on a follower: ask the leader for such an index (`corral_read_index`),
  then wait until the follower itself has applied up to it.

Rounds: the leader tags every append_entries it sends with its current round
number (`cr`), and Corral's followers echo the round of the message they
answer (they answer only messages of a term they accept). Reads that arrive
during one tick share one round. Compared with committing a no-op barrier,
a read costs one network round trip and no journal write or fsync.

Threading: `request()` and the reply events are used from any thread; every
other method runs on the Raft tick thread (`RaftNode` calls them from its
overrides).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("corral.raft")

READ_INDEX = "corral_read_index"
READ_INDEX_REPLY = "corral_read_index_reply"
ROUND = "cr"


class ReadRequest:
    """One read waiting for an index; `reply_to` is set for a follower's request."""

    __slots__ = ("error", "event", "index", "reply_to", "round")

    def __init__(self, reply_to: tuple[Any, int] | None = None) -> None:
        self.event = threading.Event()
        self.index = 0
        self.error = ""
        self.round = 0
        self.reply_to = reply_to


class ReadIndex:
    """The bookkeeping; `node` supplies the Raft facts through the callables."""

    def __init__(
        self,
        *,
        is_leader: Callable[[], bool],
        leader: Callable[[], Any],
        commit_ready: Callable[[], int | None],
        peers: Callable[[], list[Any]],
        send: Callable[[Any, dict[str, Any]], bool],
        heartbeat: Callable[[], None],
    ) -> None:
        self._is_leader = is_leader
        self._leader = leader
        self._commit_ready = commit_ready
        self._peers = peers
        self._send = send
        self._heartbeat = heartbeat
        self._new: queue.SimpleQueue[ReadRequest] = queue.SimpleQueue()
        self._incoming: list[ReadRequest] = []
        self._pending: list[ReadRequest] = []  # leader: waiting for their round
        self._remote: dict[int, ReadRequest] = {}  # follower: waiting for the leader
        self._acked: dict[Any, int] = {}
        self._seq = 0
        self.round = 0
        self.rounds_confirmed = 0

    # ---- any thread -------------------------------------------------------------------
    def request(self) -> ReadRequest:
        req = ReadRequest()
        self._new.put(req)
        return req

    # ---- tick thread ------------------------------------------------------------------
    def start(self) -> None:
        """Give this tick's new reads a round (leader) or send them to the leader."""
        batch = self._incoming
        self._incoming = []
        while True:
            try:
                batch.append(self._new.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        if self._is_leader():
            index = self._commit_ready()
            if index is None:
                for req in batch:
                    self._fail(req, "the new leader has not committed in its term yet")
                return
            self.round += 1
            for req in batch:
                req.round = self.round
                req.index = index
            self._pending.extend(batch)
            self._check()
            if self._pending:
                self._heartbeat()  # tagged with the new round by the send hook
            return
        leader = self._leader()
        for req in batch:
            if req.reply_to is not None:
                self._fail(req, "not the leader")
            elif leader is None:
                self._fail(req, "no leader is known")
            else:
                self._seq += 1
                if self._send(leader, {"type": READ_INDEX, "id": self._seq}):
                    self._remote[self._seq] = req
                else:
                    self._fail(req, "the leader is unreachable")

    def tag(self, message: dict[str, Any]) -> None:
        """Leader: mark an outgoing append_entries with the current round."""
        if self.round and message.get("type") == "append_entries":
            message[ROUND] = self.round

    def on_message(self, node: Any, message: dict[str, Any]) -> bool:
        """Handle the read-index messages; False for every other message."""
        mtype = message.get("type")
        if mtype == READ_INDEX:
            self._incoming.append(ReadRequest(reply_to=(node, int(message["id"]))))
            return True
        if mtype == READ_INDEX_REPLY:
            req = self._remote.pop(message.get("id", -1), None)
            if req is not None:
                if message.get("error"):
                    self._fail(req, f"the leader refused: {message['error']}")
                else:
                    self._finish(req, int(message["index"]))
            return True
        return False

    def on_ack(self, node: Any, message: dict[str, Any]) -> None:
        """Leader: a follower answered a message of round `cr`."""
        r = message.get(ROUND)
        if r and self._is_leader():
            if r > self._acked.get(node, 0):
                self._acked[node] = r
            self._check()

    def leadership_lost(self) -> None:
        self._acked.clear()
        for req in self._pending:
            self._fail(req, "leadership lost before the read was confirmed")
        self._pending.clear()

    def leader_changed(self) -> None:
        """Follower: requests sent to the old leader will not be answered."""
        for req in self._remote.values():
            self._fail(req, "the leader changed")
        self._remote.clear()

    def close(self) -> None:
        self.leadership_lost()
        self.leader_changed()
        for req in self._incoming:
            self._fail(req, "the replica is stopping")
        self._incoming.clear()
        while True:
            try:
                self._fail(self._new.get_nowait(), "the replica is stopping")
            except queue.Empty:
                break

    # ---- internals ----------------------------------------------------------------------
    def _check(self) -> None:
        if not self._pending:
            return
        peers = self._peers()
        need = (len(peers) + 1) // 2 + 1  # a majority of the members, this one included
        confirmed = []
        for req in self._pending:
            votes = 1 + sum(1 for p in peers if self._acked.get(p, 0) >= req.round)
            if votes >= need:
                confirmed.append(req)
        if confirmed:
            self.rounds_confirmed += 1
            done = set(map(id, confirmed))
            self._pending = [r for r in self._pending if id(r) not in done]
            for req in confirmed:
                self._finish(req, req.index)

    def _finish(self, req: ReadRequest, index: int) -> None:
        if req.reply_to is not None:
            node, rid = req.reply_to
            self._send(node, {"type": READ_INDEX_REPLY, "id": rid, "index": index})
            return
        req.index = index
        req.event.set()

    def _fail(self, req: ReadRequest, why: str) -> None:
        if req.reply_to is not None:
            node, rid = req.reply_to
            self._send(node, {"type": READ_INDEX_REPLY, "id": rid, "error": why})
            return
        req.error = why
        req.event.set()
