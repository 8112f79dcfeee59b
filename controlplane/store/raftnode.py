"""RaftNode: pysyncobj 0.3.17 made durable, fast and safe for Corral.

`RaftNode` subclasses pysyncobj's `SyncObj` and changes five things, each by
overriding a method pysyncobj calls through its name-mangled attribute
(`self._SyncObj__x` resolves on the instance, so a subclass attribute of that
name replaces it). The overrides depend on pysyncobj's private code, so the
version is pinned and checked at import (`PINNED_PYSYNCOBJ`).

1. Durable journal (`journal.DurableJournal`) swapped in for pysyncobj's mmap
   journal right after `SyncObj.__init__` (nothing has ticked yet). The
   sync points are:
   - leader: `_checkCommandsToApply` appends a tick's commands, sends them to
     the followers at once, then syncs (the followers' fsyncs run in parallel
     with the leader's). The leader counts itself towards commit at the top
     of the next tick, after that sync; `__onBecomeLeader` syncs its no-op.
   - follower: every `next_node_idx` reply (the acknowledgement) is held back
     while the journal has unsynced entries, and sent, in order, right after
     the sync that follows the poll that received the entries (`_onTick`
     syncs before and after pysyncobj's tick). One sync per poll batch.
2. Raft's append rule on the follower (`__onMessageReceived`). pysyncobj
   truncates the log after `prevLogIdx` whenever it holds later entries, even
   when they are identical to the ones arriving; Raft (§5.3) truncates only
   at the first entry whose term conflicts. Duplicates arrive all the time
   under load (point 3), so pysyncobj kept deleting and re-adding committed,
   applied entries: that is its CRITICAL "truncating already-applied log
   entries ... may have diverged". Worse, a follower that removes entries it
   has acknowledged can make a committed entry lose its majority. Here
   entries already held with the same term are skipped, the log is cut only
   at a real conflict, and the commit index advances to
   min(leaderCommit, index of the last entry of this message), as Raft says
   (pysyncobj used the end of the whole local log, safe only because it had
   just truncated it).
3. The leader's nextIndex never moves back on a success reply. pysyncobj sets
   nextIndex = reply + 1 on every success, but it advances nextIndex
   optimistically when it sends, so a reply to an older message pulled it
   back and the next send repeated entries the follower already had (the
   duplicates of point 2). Failure replies (`reset`) still move it anywhere.
4. Batching kept, latency removed. `appendEntriesUseBatch=True` (one message
   per tick carries every new entry) but entries go out as soon as a tick
   appended them, and again as soon as the commit index advances (so a
   follower applies, answers its client, and serves a barrier read, without
   waiting for the next heartbeat). A pipe wakes the tick thread when a
   command is queued, since pysyncobj only creates its own pipe when
   batching is off.
5. One line per notable event: elected, lost leadership, peer unreachable /
   reachable again, snapshot taken or installed.
6. Cheaper frames: AES-GCM instead of Fernet (`AeadEncryptor`) and no zlib
   for frames under 64 KiB (`FrameCodec`); together they took ~0.5 ms of CPU
   off every write's path to commit.
7. Fewer messages for writes sent to a follower: a follower forwards all the
   commands queued in a tick in one message, and the leader answers all the
   commands of a tick in one message per follower (pysyncobj: one message
   each way per command).

Snapshots (no fork: gRPC servers must not fork) replace pysyncobj's
serializer methods: the state is captured on the tick thread (references to
immutable objects, cheap), then encoded, written, fsynced and renamed by a
background thread in frames (snapshotfile.py) so the tick thread keeps
running; pysyncobj learns the outcome through `serializeChecker` and only then
drops the journal entries the snapshot covers (the journal fsyncs the folder
first). A snapshot received from the leader meanwhile wins: the background
writer then discards its own.

Threading: one tick thread (`start()`) runs every pysyncobj callback, every
replicated command and every journal call; `wake()` may be called from any
thread. `status` is an immutable snapshot refreshed by the tick thread each
tick, safe to read anywhere.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import pysyncobj
import pysyncobj.pickle as sync_pickle
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, tcp_connection
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.monotonic import monotonic as sync_monotonic
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from controlplane.store import snapshotfile
from controlplane.store.journal import DurableJournal, fsync_dir
from controlplane.store.readindex import ROUND, ReadIndex
from corral.errors import Invalid, Timeout, Unavailable

log = logging.getLogger("corral.raft")

PINNED_PYSYNCOBJ = "0.3.17"
if PYSYNCOBJ_VERSION != PINNED_PYSYNCOBJ:  # pragma: no cover - guarded by pyproject's pin
    raise ImportError(
        f"controlplane.store.raftnode overrides private methods of pysyncobj "
        f"{PINNED_PYSYNCOBJ}; found {PYSYNCOBJ_VERSION} at {pysyncobj.__file__}"
    )

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
FORWARD = "corral_apply_batch"  # follower -> leader: queued commands, one message
REPLY = "apply_command_response"  # pysyncobj's answer to one forwarded command
REPLIES = "corral_apply_responses"  # leader -> follower: this tick's answers, one message
FORWARD_BATCH = 1000
STATE_NAMES = {_FOLLOWER: "follower", _CANDIDATE: "candidate", _LEADER: "leader"}
_NO_OP = b"\x01"  # pysyncobj's _COMMAND_TYPE.NO_OP as its first log entry


@dataclass(frozen=True)
class RaftTuning:
    """Timers and sizes. Defaults aim at <= 1 s failover on a LAN."""

    heartbeat: float = 0.05  # appendEntriesPeriod
    election_timeout_min: float = 0.3
    election_timeout_max: float = 0.6
    connection_timeout: float = 2.0  # no bytes for this long: connection dead
    connection_retry: float = 0.5
    leader_fallback: float = 1.0  # a leader without a majority answering steps down
    tick_wait: float = 0.025  # longest the tick thread sleeps in poll()
    snapshot_min_entries: int = 20_000
    snapshot_min_seconds: float = 300.0
    max_batch_bytes: int = 8 << 20
    # Start an election soon after the leader's connection drops (a crash shows
    # up as a reset connection long before the election timeout).
    fast_failover: bool = True

    def validate(self) -> None:
        def need(ok: bool, fieldname: str, what: str) -> None:
            if not ok:
                raise Invalid(what, f"raft.{fieldname}")

        need(self.heartbeat > 0, "heartbeat", "must be > 0")
        need(self.election_timeout_min > 3 * self.heartbeat, "electionTimeoutMin",
             f"must be more than 3 heartbeats ({3 * self.heartbeat:g}s)")
        need(self.election_timeout_max > self.election_timeout_min, "electionTimeoutMax",
             "must be more than electionTimeoutMin")
        need(self.connection_timeout >= self.election_timeout_max, "connectionTimeout",
             "must be at least electionTimeoutMax")
        need(self.connection_retry > 0, "connectionRetry", "must be > 0")
        need(self.leader_fallback > self.heartbeat, "leaderFallback",
             "must be more than the heartbeat")
        need(0 < self.tick_wait <= self.heartbeat, "tickWait", "must be in (0, heartbeat]")
        need(self.snapshot_min_entries >= 2, "snapshotMinEntries", "must be at least 2")
        need(self.snapshot_min_seconds > 0, "snapshotMinSeconds", "must be > 0")
        need(self.max_batch_bytes >= 1 << 20, "maxBatchBytes", "must be at least 1 MiB")

    @property
    def max_command_bytes(self) -> int:
        # Above the batch size pysyncobj splits one entry over several messages
        # ("transmission"), whose end marker it computes from the wrong length.
        return self.max_batch_bytes // 2


class AeadEncryptor:
    """Encrypts Raft frames with AES-256-GCM, in place of pysyncobj's Fernet.

    pysyncobj's connections call `encrypt_at_time`, `extract_timestamp` and
    `decrypt` on whatever `SyncObj.encryptor` returns. Fernet (AES-CBC, then
    HMAC-SHA256, then base64) costs ~10x more per frame than one AES-GCM call,
    and every write crosses four frames on its way to commit. Token:
    version (1) | timestamp (8, authenticated as associated data) | nonce (12)
    | ciphertext and tag. The key comes from the password by PBKDF2-SHA256
    (200,000 rounds, a Corral-specific fixed salt, as pysyncobj derives its
    own): every member must share the password, nothing else.
    """

    VERSION = b"\x01"
    _SALT = b"corral-raft-aead-v1"

    def __init__(self, password: str) -> None:
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=self._SALT,
                         iterations=200_000)
        self._aead = AESGCM(kdf.derive(password.encode()))

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        header = self.VERSION + struct.pack(">Q", max(0, int(current_time)))
        nonce = os.urandom(12)
        return header + nonce + self._aead.encrypt(nonce, data, header)

    def extract_timestamp(self, token: bytes) -> int:
        if len(token) < 21 or token[:1] != self.VERSION:
            raise ValueError("not a Corral Raft frame")
        return int(struct.unpack_from(">Q", token, 1)[0])

    def decrypt(self, token: bytes) -> bytes:
        return self._aead.decrypt(token[9:21], token[21:], token[:9])


class FrameCodec:
    """Stands in for the `zlib` module inside pysyncobj.tcp_connection.

    pysyncobj compresses every frame with `zlib.compress(data, 3)`; for the small
    frames Raft mostly sends (a few hundred bytes) that costs ~50-100 µs, mostly
    setting up deflate's state, and it is paid four times on every write's path
    to commit. Frames under 64 KiB now go as they are (marker 0); larger ones
    (batches for a lagging follower, snapshot chunks) are still compressed
    (marker 1). The marker sits inside the encrypted payload. Every member must
    run this codec (as they must share the frame encryption).
    """

    THRESHOLD = 64 * 1024

    @staticmethod
    def compress(data: bytes, level: int = 1) -> bytes:
        if len(data) < FrameCodec.THRESHOLD:
            return b"\x00" + data
        return b"\x01" + zlib.compress(data, 1)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if data[:1] == b"\x00":
            return data[1:]
        if data[:1] == b"\x01":
            return zlib.decompress(data[1:])
        raise ValueError("unknown Raft frame encoding")


def install_frame_codec() -> None:
    """Point pysyncobj's connections at FrameCodec (process-wide, idempotent)."""
    tcp_connection.zlib = FrameCodec  # type: ignore[assignment]


@dataclass(frozen=True)
class NodeStatus:
    state: str = "follower"
    leader: str = ""
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    log_entries: int = 0
    first_index: int = 0
    has_quorum: bool = False
    connected: tuple[str, ...] = ()
    match_index: tuple[tuple[str, int], ...] = ()
    journal_syncs: int = 0
    snapshot_index: int = 0
    updated: float = field(default=0.0)


def check_address(value: str, where: str) -> tuple[str, int]:
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise Invalid(f"must be HOST:PORT with a port in 1-65535, got {value!r}", where)
    if host in ("0.0.0.0", "::", "[::]", "*"):
        raise Invalid(
            f"must be the address the peers use to reach this member, not the wildcard {host}",
            where,
        )
    return host, int(port_s)


def probe_bind(address: str, where: str) -> None:
    """Fail fast and clearly if the Raft address cannot be bound (pysyncobj would spin)."""
    host, port = check_address(address, where)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Invalid(f"cannot resolve {host!r}: {e}", where) from e
    family, _, _, _, sockaddr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sockaddr)
    except OSError as e:
        raise Unavailable(f"cannot bind the Raft address {address}: {e.strerror}") from e
    finally:
        s.close()


class RaftNode(SyncObj):
    """A pysyncobj node with the changes listed in the module docstring."""

    def __init__(
        self,
        self_address: str,
        peers: Iterable[str],
        *,
        data_dir: str,
        password: str,
        consumers: list[SyncObjConsumer],
        capture_state: Callable[[], Any],
        restore_state: Callable[[Any], None],
        on_state_change: Callable[[str, int], None] | None = None,
        tuning: RaftTuning | None = None,
    ) -> None:
        tuning = tuning or RaftTuning()
        tuning.validate()
        if not isinstance(password, str) or not password:
            raise Invalid(
                "a Raft password is required: peers' frames are unpickled, so anyone who "
                "can reach the Raft port could run code without one",
                "raft.password",
            )
        peers = sorted(set(peers) - {self_address})
        for p in peers:
            check_address(p, "raft.peers")
        probe_bind(self_address, "raft.address")
        os.makedirs(data_dir, exist_ok=True)
        self._tuning = tuning
        self._capture_state = capture_state
        self._restore_state = restore_state
        self._on_state_change_cb = on_state_change
        self._snapshot_path = os.path.join(data_dir, "raft.snapshot")
        # Open (and verify) the journal before binding anything.
        self._journal = DurableJournal(os.path.join(data_dir, "raft.journal"))
        # Load the snapshot now: a damaged one stops the start here (pysyncobj would
        # log and carry on without it), and the state is in place before any tick.
        self._preloaded: tuple[tuple[int, int, int], Any] | None = None
        if os.path.exists(self._snapshot_path):
            st = os.stat(self._snapshot_path)
            raft_data, state = snapshotfile.decode(snapshotfile.read(self._snapshot_path))
            restore_state(state)
            self._preloaded = ((st.st_ino, st.st_size, st.st_mtime_ns), raft_data)
        self._snap_lock = threading.Lock()
        self._snap_generation = 0
        self._snap_thread: threading.Thread | None = None
        self._snap_result: int | None = None
        self._deferred: list[tuple[Any, dict[str, Any]]] = []
        self._commit_sent = 0
        self._peers_up: set[str] = set()
        self._peers_seen: set[str] = set()
        self._snapshot_index = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status = NodeStatus()
        install_frame_codec()
        # The transport encrypts with whatever `self.encryptor` is (see below);
        # pysyncobj's own password option would build a Fernet it then never uses.
        self._encryptor = AeadEncryptor(password)
        conf = SyncObjConf(
            password=None,
            autoTick=False,
            appendEntriesUseBatch=True,
            appendEntriesPeriod=tuning.heartbeat,
            appendEntriesBatchSizeBytes=tuning.max_batch_bytes,
            raftMinTimeout=tuning.election_timeout_min,
            raftMaxTimeout=tuning.election_timeout_max,
            connectionTimeout=tuning.connection_timeout,
            connectionRetryTime=tuning.connection_retry,
            leaderFallbackTimeout=tuning.leader_fallback,
            logCompactionMinEntries=tuning.snapshot_min_entries,
            logCompactionMinTime=tuning.snapshot_min_seconds,
            commandsWaitLeader=False,
            dynamicMembershipChange=False,
            bindAddress=self_address,
            maxBindRetries=3,
            bindRetryTime=0.1,
            sendBufferSize=1 << 20,
            recvBufferSize=1 << 20,
            fullDumpFile=self._snapshot_path,
            journalFile=None,
            useFork=False,
            serializer=self._never_called,  # serialize() itself is replaced below
            deserializer=self._read_snapshot,
            serializeChecker=self._snapshot_state,
            onStateChanged=self._on_state_changed,
        )
        super().__init__(self_address, peers, conf, consumers=consumers)
        journal = self._journal
        if len(journal) == 0:
            journal.add(_NO_OP, 1, 0)
            journal.sync()
        # Replace pysyncobj's journal and the values it read from it.
        self._SyncObj__raftLog = journal
        self._SyncObj__raftCurrentTerm = max(journal.getCurrentTerm(), journal[-1][2])
        self._SyncObj__votedForNodeId = journal.getVotedForNodeId()
        self._SyncObj__raftCommitIndex = journal.getRaftCommitIndex()
        self._notifier = PipeNotifier(self._poller)
        transport = self._SyncObj__transport
        raw_send = transport.send
        self._reads = ReadIndex(
            is_leader=lambda: self._SyncObj__raftState == _LEADER,
            leader=lambda: self._SyncObj__raftLeader,
            commit_ready=self._read_commit_index,
            peers=lambda: list(self._SyncObj__otherNodes),
            send=raw_send,
            heartbeat=self._SyncObj__sendAppendEntries,
        )

        def send(node: Any, message: Any) -> bool:
            if isinstance(message, dict):
                if self._held_replies is not None and message.get("type") == REPLY:
                    self._held_replies.setdefault(node, []).append(message)
                    return True
                self._reads.tag(message)
            return bool(raw_send(node, message))

        self._raw_send = raw_send
        self._held_replies: dict[Any, list[dict[str, Any]]] | None = None

        transport.send = send
        self._apply_waiters: list[tuple[int, int, threading.Event]] = []
        self._apply_waiters_lock = threading.Lock()
        self._waiter_seq = itertools.count()
        # pysyncobj's snapshot sender opens the snapshot file per follower and never
        # closes it (not when done, not when cancelled): replace those two methods.
        self._sending: dict[Any, list[Any]] = {}
        serializer = self._SyncObj__serializer
        serializer.serialize = self._start_snapshot
        serializer.getTransmissionData = self._snapshot_chunk
        serializer.cancelTransmisstion = self._cancel_snapshot_send
        self.address = self_address
        self.peers = tuple(peers)

    @property
    def encryptor(self) -> AeadEncryptor:  # pysyncobj's transport reads this
        return self._encryptor

    def _getEncryptor(self) -> AeadEncryptor:
        return self._encryptor

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"raft-{self.address}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._reads.close()
        with self._apply_waiters_lock:  # readers waiting to apply: wake them (not applied)
            for _, _, event in self._apply_waiters:
                event.set()
            self._apply_waiters.clear()
        if self._snap_thread is not None:
            self._snap_thread.join(timeout)
        self.destroy()  # autoTick=False: closes sockets and the journal right here
        self._close_snapshot_sends()
        for fd in (self._notifier._PipeNotifier__pipeR, self._notifier._PipeNotifier__pipeW):
            try:
                os.close(fd)
            except OSError:
                pass

    def wake(self) -> None:
        """Make the tick thread run now (a command was queued)."""
        try:
            self._notifier.notify()
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the tick thread has wakeups pending anyway

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.doTick(self._tuning.tick_wait)
            except Exception:
                log.exception("raft %s: tick failed; retrying", self.address)
                time.sleep(self._tuning.tick_wait)

    @property
    def journal(self) -> DurableJournal:
        return self._journal

    def force_snapshot(self) -> None:
        self.forceLogCompaction()
        self.wake()

    # ---- durability (overrides) ------------------------------------------------------
    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._durable_point()
        self._reads.start()
        SyncObj._onTick(self, timeToWait)
        self._durable_point()
        self._release_apply_waiters()
        self._refresh_status()

    def _durable_point(self) -> None:
        self._journal.sync()
        if self._deferred:
            transport = self._SyncObj__transport
            for node, message in self._deferred:
                transport.send(node, message)
            self._deferred.clear()

    def _checkCommandsToApply(self) -> None:
        leader = self._SyncObj__raftLeader
        if self._SyncObj__raftState != _LEADER and leader is not None:
            self._forward_commands(leader)
            self._journal.sync()
            return
        before = self._journal.last_index
        # The leader answers every forwarded command with its log position; hold
        # those answers and send one message per follower instead of one per command.
        self._held_replies = {}
        try:
            SyncObj._checkCommandsToApply(self)
        finally:
            held, self._held_replies = self._held_replies, None
        for node, replies in held.items():
            self._raw_send(node, {"type": REPLIES, "replies": replies})
        if self._journal.last_index != before and self._SyncObj__raftState == _LEADER:
            self._SyncObj__sendAppendEntries()
        self._journal.sync()

    def _forward_commands(self, leader: Any) -> None:
        """Follower: send every queued command to the leader in one message (pysyncobj
        sends one message per command), registering the callbacks as it does."""
        queue_ = self._SyncObj__commandsQueue
        batch: list[list[Any]] = []
        while len(batch) < FORWARD_BATCH:
            try:
                command, callback = queue_.get_nowait()
            except Empty:
                break
            if isinstance(callback, tuple):  # forwarded to us by a node that took us for leader
                node, request_id = callback
                self._raw_send(node, {"type": REPLY, "request_id": request_id,
                                      "error": FAIL_REASON.NOT_LEADER})
                continue
            entry: list[Any] = [command]
            if callback is not None:
                self._SyncObj__commandsLocalCounter += 1
                request_id = self._SyncObj__commandsLocalCounter
                self._SyncObj__commandsWaitingReply[request_id] = callback
                entry.append(request_id)
            batch.append(entry)
        if batch:
            self._raw_send(leader, {"type": FORWARD, "commands": batch})

    def _SyncObj__onBecomeLeader(self) -> None:
        SyncObj._SyncObj__onBecomeLeader(self)
        self._journal.sync()

    def _SyncObj__sendNextNodeIdx(
        self, node: Any, reset: bool = False, nextNodeIdx: int | None = None,
        success: bool = False,
    ) -> None:
        if nextNodeIdx is None:
            nextNodeIdx = self._journal[-1][1] + 1
        self._reply(node, {
            "type": "next_node_idx",
            "next_node_idx": nextNodeIdx,
            "reset": reset,
            "success": success,
        })

    def _reply(self, node: Any, message: dict[str, Any]) -> None:
        """Send an acknowledgement, after the sync if the journal holds unsynced entries."""
        if self._journal.dirty or self._deferred:
            self._deferred.append((node, message))
        else:
            self._SyncObj__transport.send(node, message)

    # ---- batching with low latency (overrides) ----------------------------------------
    def _SyncObj__sendAppendEntries(self) -> None:
        self._commit_sent = self._SyncObj__raftCommitIndex
        SyncObj._SyncObj__sendAppendEntries(self)

    def _SyncObj__applyLogEntries(self) -> bool:
        SyncObj._SyncObj__applyLogEntries(self)
        # True makes _onTick send append_entries now: followers learn the new
        # commit index without waiting for the heartbeat. When commands are
        # queued, this tick's _checkCommandsToApply sends them with the new commit
        # index anyway: one message instead of two.
        return bool(
            self._SyncObj__raftState == _LEADER
            and self._SyncObj__raftCommitIndex > self._commit_sent
            and not self._SyncObj__commandsQueue._FastQueue__queue
        )

    # ---- Raft's append rule, and nextIndex that does not regress (overrides) ---------
    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        mtype = message.get("type") if isinstance(message, dict) else None
        if mtype is not None and self._reads.on_message(node, message):
            return
        if mtype == FORWARD:
            for entry in message["commands"]:
                self._applyCommand(entry[0], (node, entry[1]) if len(entry) > 1 else None)
            return
        if mtype == REPLIES:
            for reply in message["replies"]:
                SyncObj._SyncObj__onMessageReceived(self, node, reply)
            return
        if (
            mtype == "append_entries"
            and "prevLogIdx" in message
            and message.get("transmission") not in ("start", "process")
            and message["term"] >= self._SyncObj__raftCurrentTerm
        ):
            self._on_append_entries(node, message)
            return
        if mtype == "next_node_idx" and self._SyncObj__raftState == _LEADER:
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            after = next_index.get(node)
            if (
                message.get("success") and not message.get("reset")
                and before is not None and after is not None and after < before
            ):
                next_index[node] = before
            self._reads.on_ack(node, message)
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _on_append_entries(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("transmission") == "finish":
            data = self._SyncObj__recvTransmission + message["data"]
            self._SyncObj__recvTransmission = ""
            entries = [sync_pickle.loads(data)]
        else:
            entries = message.get("entries", [])
        journal = self._journal
        prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        first, last = journal[0][1], journal[-1][1]
        commit = self._SyncObj__raftCommitIndex
        if prev_idx is None or prev_idx < first or prev_idx > last:
            reply = {"success": False, "reset": True, "nextNodeIdx": last + 1}
        elif journal[prev_idx - first][2] != prev_term:
            reply = {"success": False, "reset": True, "nextNodeIdx": prev_idx}
        elif any(e[1] != prev_idx + 1 + i for i, e in enumerate(entries)):
            log.error("raft %s: dropped append_entries with non-consecutive entries after %d",
                      self.address, prev_idx)
            return
        else:
            i = 0
            while i < len(entries):
                _, idx, term = entries[i]
                if idx > last:
                    break
                if journal[idx - first][2] != term:
                    self._truncate_conflict(idx, term)
                    break
                i += 1
            for entry in entries[i:]:
                journal.add(*entry)
            last_new = prev_idx + len(entries)
            reply = {"success": True, "reset": False, "nextNodeIdx": last_new + 1}
            commit = max(commit, min(message["commit_index"], last_new))
        # pysyncobj's own handling of the term, the leader, the election timer and
        # the commit index, with no log payload and the commit index computed above.
        SyncObj._SyncObj__onMessageReceived(
            self, node, {"type": "append_entries", "term": message["term"], "commit_index": commit}
        )
        answer = {
            "type": "next_node_idx",
            "next_node_idx": reply["nextNodeIdx"],
            "reset": reply["reset"],
            "success": reply["success"],
        }
        if ROUND in message:  # the leader's read round this message belongs to
            answer[ROUND] = message[ROUND]
        self._reply(node, answer)

    def _truncate_conflict(self, idx: int, term: int) -> None:
        applied = self._SyncObj__raftLastApplied
        if idx <= applied:
            # Committed entries never conflict in Raft; if this happens, say so loudly.
            log.critical(
                "raft %s: the leader's entry %d (term %d) conflicts with an entry this replica "
                "already applied (applied up to %d): replicas have diverged",
                self.address, idx, term, applied,
            )
        self._SyncObj__deleteEntriesFrom(idx)

    # ---- events (overrides and callbacks) ----------------------------------------------
    def _on_state_changed(self, old: int, new: int) -> None:
        term = self._SyncObj__raftCurrentTerm
        if new == _LEADER:
            log.info("raft %s: elected leader for term %d", self.address, term)
        elif old == _LEADER:
            log.warning("raft %s: lost leadership in term %d (now %s)",
                        self.address, term, STATE_NAMES.get(new, new))
            self._reads.leadership_lost()
        if self._on_state_change_cb is not None:
            self._on_state_change_cb(STATE_NAMES.get(new, str(new)), term)

    def _SyncObj__onLeaderChanged(self) -> None:
        SyncObj._SyncObj__onLeaderChanged(self)
        self._reads.leader_changed()

    def _SyncObj__onNodeConnected(self, node: Any) -> None:
        SyncObj._SyncObj__onNodeConnected(self, node)
        addr = str(node.id)
        if addr not in self._peers_up:
            self._peers_up.add(addr)
            if addr in self._peers_seen:
                log.info("raft %s: peer %s reachable again", self.address, addr)
            else:
                log.info("raft %s: connected to peer %s", self.address, addr)
            self._peers_seen.add(addr)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        SyncObj._SyncObj__onNodeDisconnected(self, node)
        addr = str(node.id)
        if addr in self._peers_up:
            self._peers_up.discard(addr)
            log.warning("raft %s: peer %s unreachable", self.address, addr)
        if self._SyncObj__raftLeader == node and self._SyncObj__raftState != _LEADER:
            # pysyncobj keeps forwarding commands to a leader it cannot reach, and a
            # forward that cannot be sent is never answered. Forget the leader: new
            # commands fail fast with MISSING_LEADER, and the ones waiting for the
            # leader's reply fail with LEADER_CHANGED (their outcome is unknown: the
            # request id makes the retry safe). The next append_entries restores it.
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()
            if self._tuning.fast_failover and self._SyncObj__raftState == _FOLLOWER:
                # The leader's connection broke (a crash resets it at once): stand for
                # election after a short random delay instead of a full timeout. Early
                # elections are always safe in Raft; the delay avoids split votes.
                delay = random.uniform(0.05, 0.5) * self._tuning.election_timeout_min
                # pysyncobj's deadlines are on CLOCK_MONOTONIC_RAW, not time.monotonic().
                soon = sync_monotonic() + delay
                if soon < self._SyncObj__raftElectionDeadline:
                    self._SyncObj__raftElectionDeadline = soon

    # ---- linearizable reads (ReadIndex) ------------------------------------------------
    def read_index(self, timeout: float) -> int:
        """An index such that a replica that has applied it has every write
        acknowledged before this call. Raises Unavailable or Timeout."""
        if self._stop.is_set():
            raise Unavailable(f"the Raft member {self.address} is stopping")
        req = self._reads.request()
        self.wake()
        deadline = time.monotonic() + timeout
        # Short waits: a request queued just as the member stops is never answered.
        while not req.event.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            if self._stop.is_set():
                raise Unavailable(f"the Raft member {self.address} is stopping")
            if time.monotonic() >= deadline:
                raise Timeout(f"no read index confirmed within {timeout:g}s")
        if req.error:
            raise Unavailable(req.error)
        return req.index

    def wait_applied(self, index: int, timeout: float) -> bool:
        """Wait until this replica has applied log entry `index`."""
        if self._SyncObj__raftLastApplied >= index:
            return True
        event = threading.Event()
        with self._apply_waiters_lock:
            heapq.heappush(self._apply_waiters, (index, next(self._waiter_seq), event))
        self.wake()
        return event.wait(timeout) and self._SyncObj__raftLastApplied >= index

    def read_rounds(self) -> int:
        # A method, not a property: SyncObj.__init__ getattr()s every attribute.
        return self._reads.rounds_confirmed

    def _read_commit_index(self) -> int | None:
        noop = self._SyncObj__noopIDx
        commit = self._SyncObj__raftCommitIndex
        if noop is None or commit < noop:
            return None
        return int(commit)

    def _release_apply_waiters(self) -> None:
        if not self._apply_waiters:
            return
        applied = self._SyncObj__raftLastApplied
        with self._apply_waiters_lock:
            while self._apply_waiters and self._apply_waiters[0][0] <= applied:
                heapq.heappop(self._apply_waiters)[2].set()

    # ---- snapshots -------------------------------------------------------------------
    @staticmethod
    def _never_called(path: str, data: Any) -> None:
        raise AssertionError("RaftNode replaces Serializer.serialize")

    def _start_snapshot(self, data: Any, serialize_id: int) -> None:
        """Serializer.serialize, on the tick thread: capture, then write in the background."""
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return
        self._SyncObj__serializer._Serializer__currentID = serialize_id
        raft_data = data[1:]  # (last applied entry, the one before, cluster nodes)
        captured = self._capture_state()
        with self._snap_lock:
            generation = self._snap_generation
        self._snap_result = None
        self._snap_thread = threading.Thread(
            target=self._write_snapshot, args=(captured, raft_data, generation),
            name=f"snapshot-{self.address}", daemon=True,
        )
        self._snap_thread.start()

    def _write_snapshot(self, captured: Any, raft_data: Any, generation: int) -> None:
        started = time.monotonic()
        tmp = self._snapshot_path + ".writing"
        try:
            size = snapshotfile.write(tmp, snapshotfile.encode(captured, raft_data))
            with self._snap_lock:
                if generation != self._snap_generation:
                    os.unlink(tmp)  # a snapshot from the leader was installed meanwhile
                    self._snap_result = SERIALIZER_STATE.FAILED
                    return
                os.rename(tmp, self._snapshot_path)
                fsync_dir(os.path.dirname(self._snapshot_path))
            self._snapshot_index = raft_data[0][1]
            log.info(
                "raft %s: snapshot taken at index %d (%d bytes, %.0f ms in the background); "
                "the journal keeps the entries after it",
                self.address, raft_data[0][1], size, (time.monotonic() - started) * 1000,
            )
            self._snap_result = SERIALIZER_STATE.SUCCESS
        except Exception:
            log.exception("raft %s: writing a snapshot failed", self.address)
            self._snap_result = SERIALIZER_STATE.FAILED

    def _snapshot_state(self) -> int:
        """serializeChecker, on the tick thread."""
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING
        result = self._snap_result
        if result is None:
            return SERIALIZER_STATE.NOT_SERIALIZING
        self._snap_result = None
        if result == SERIALIZER_STATE.SUCCESS:
            # Followers being sent the previous snapshot start over with this one.
            self._close_snapshot_sends()
        return result

    def _snapshot_chunk(self, transmission_id: Any) -> Any:
        """The next chunk of the snapshot for one follower: (data, is_first, is_last),
        None when there is nothing to send now, False on a read error."""
        sending = self._sending.get(transmission_id)
        if sending is None:
            try:
                # Closed by _cancel_snapshot_send: it outlives this call.
                f = open(self._snapshot_path, "rb")  # noqa: SIM115
                sending = self._sending[transmission_id] = [f, 0]
            except OSError as e:
                log.error("raft %s: cannot open the snapshot to send it: %s", self.address, e)
                return None
        f, sent = sending
        try:
            data = f.read(self.conf.logCompactionBatchSize)
        except OSError as e:
            log.error("raft %s: reading the snapshot to send failed: %s", self.address, e)
            self._cancel_snapshot_send(transmission_id)
            return False
        sending[1] += len(data)
        if not data:
            self._cancel_snapshot_send(transmission_id)
            log.info("raft %s: sent a snapshot of %d bytes to %s", self.address, sent,
                     transmission_id)
        return data, sent == 0, not data

    def _cancel_snapshot_send(self, transmission_id: Any) -> None:
        sending = self._sending.pop(transmission_id, None)
        if sending is not None:
            sending[0].close()

    def _close_snapshot_sends(self) -> None:
        for key in list(self._sending):
            self._cancel_snapshot_send(key)

    def _read_snapshot(self, path: str) -> Any:
        """pysyncobj's deserializer: at the first tick (the snapshot preloaded in
        __init__) and when a snapshot from the leader has been received."""
        if self._preloaded is not None:
            key, raft_data = self._preloaded
            self._preloaded = None
            st = os.stat(path)
            if key == (st.st_ino, st.st_size, st.st_mtime_ns):
                self._snapshot_index = raft_data[0][1]
                return raft_data
        with self._snap_lock:
            self._snap_generation += 1  # a background write in flight must not win
        # pysyncobj wrote the received snapshot without fsync: make it durable
        # before the journal it replaces is cleared.
        snapshotfile.make_durable(path)
        raft_data, state = snapshotfile.decode(snapshotfile.read(path))
        self._restore_state(state)
        self._snapshot_index = raft_data[0][1]
        log.info("raft %s: state loaded from the snapshot at index %d",
                 self.address, self._snapshot_index)
        return raft_data

    # ---- status ----------------------------------------------------------------------
    def _refresh_status(self) -> None:
        journal = self._journal
        leader = self._SyncObj__raftLeader
        state = self._SyncObj__raftState
        match: tuple[tuple[str, int], ...] = ()
        if state == _LEADER:
            match = tuple(sorted((str(n.id), i) for n, i in self._SyncObj__raftMatchIndex.items()))
        self.status = NodeStatus(
            state=STATE_NAMES.get(state, str(state)),
            leader=str(leader.id) if leader is not None else "",
            term=self._SyncObj__raftCurrentTerm,
            commit_index=self._SyncObj__raftCommitIndex,
            applied_index=self._SyncObj__raftLastApplied,
            log_entries=len(journal),
            first_index=journal[0][1] if len(journal) else 0,
            has_quorum=self.hasQuorum,
            connected=tuple(sorted(self._peers_up)),
            match_index=match,
            journal_syncs=journal.stats.syncs,
            snapshot_index=self._snapshot_index,
            updated=time.monotonic(),
        )
