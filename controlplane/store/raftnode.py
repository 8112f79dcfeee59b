"""RaftNode: pysyncobj 0.3.17 made durable, fast and safe for Corral.

`RaftNode` subclasses pysyncobj's `SyncObj` and changes what follows, mostly
by overriding methods pysyncobj calls through their name-mangled attributes
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
   follower applies, answers its client and serves reads without waiting for
   the next heartbeat). A pipe wakes the tick thread when a command is
   queued, since pysyncobj only creates its own pipe when batching is off.
   What a poll brings is acted on right after it (`_after_poll`), not one
   tick later: the leader advances its commit index from the
   acknowledgements (counting itself only up to its synced index), every
   replica applies what is committed, and commands queued meanwhile are
   appended (leader) or forwarded (follower).
   A writer thread that queues a command while the tick thread waits in
   poll() appends and sends it (leader) or forwards it (follower) itself
   (`submit()`), instead of waking the tick thread to do it.
5. Fewer messages for writes sent to a follower: it forwards all the commands
   queued in a tick in one message, and the leader answers all of a tick's
   forwarded commands in one message per follower (pysyncobj: one message
   each way per command). Cheaper frames (raftwire.py): AES-GCM instead of
   Fernet, no zlib under 64 KiB; together ~0.5 ms of CPU off each write.
6. A lost leader is noticed at once: when the connection to the leader drops,
   the follower forgets it (new commands fail fast with MISSING_LEADER instead
   of being forwarded into the void, and those waiting fail with
   LEADER_CHANGED) and stands for election after 5-50 % of the minimum
   election timeout, on pysyncobj's own clock (CLOCK_MONOTONIC_RAW).
7. PreVote (prevote.py, Raft thesis §9.6): when its election timer runs out a
   follower first asks its peers whether they would vote for it, changing no
   term; pysyncobj's election runs only after a majority said yes. A member
   cut off by a silent partition keeps its term and, on heal, does not depose
   the leader. A follower that heard from a live leader within the minimum
   election timeout says no; one whose leader connection dropped says yes, so
   fast failover (point 6) stays fast.
8. Linearizable reads by ReadIndex (readindex.py): append_entries carry a read
   round, followers echo it, and `corral_read_index` messages let followers
   ask the leader for an index.
9. Snapshots off the tick thread (raftsnapshots.py), and one line per notable
   event: elected, lost leadership, peer unreachable / reachable again,
   snapshot taken, sent or installed.

Threading: one tick thread (`start()`) runs every pysyncobj callback and every
replicated command, holding `_tick_lock` except while it blocks in poll().
A writer thread that queued a command (`submit()`) and finds the lock free
appends and sends it itself (or forwards it, on a follower), saving a thread
hand-off; nothing else of pysyncobj runs outside the tick thread. `wake()`,
`submit()`, `read_index()` and `wait_applied()` may be called from any thread.
`status` is an immutable snapshot refreshed by the tick thread each tick, safe
to read anywhere.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import select
import threading
import time
from collections.abc import Callable, Iterable
from queue import Empty
from typing import Any

import pysyncobj
import pysyncobj.pickle as sync_pickle
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer
from pysyncobj.monotonic import monotonic as sync_monotonic
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from controlplane.store import prevote, snapshotfile
from controlplane.store.journal import DurableJournal
from controlplane.store.raftconfig import NodeStatus, RaftTuning, check_address, probe_bind
from controlplane.store.raftsnapshots import SnapshotMixin
from controlplane.store.raftwire import AeadEncryptor, FrameCodec, install_frame_codec
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

__all__ = ["AeadEncryptor", "FrameCodec", "NodeStatus", "RaftNode", "RaftTuning"]


class RaftNode(SnapshotMixin, SyncObj):
    """A pysyncobj node with the changes listed in the module docstring."""

    # pysyncobj's private attributes this class reads or sets (untyped there).
    _SyncObj__raftLeader: Any
    _SyncObj__recvTransmission: Any
    _SyncObj__raftElectionDeadline: float

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
            self._trim_journal_to(raft_data, self_address)
        self._snap_lock = threading.Lock()
        self._snap_generation = 0
        self._snap_thread: threading.Thread | None = None
        self._snap_result: int | None = None
        self._deferred: list[tuple[Any, dict[str, Any]]] = []
        self._commit_sent = 0
        self._peers_up: set[str] = set()
        self._peers_seen: set[str] = set()
        self._snapshot_index = 0
        self._prevote = prevote.PreVoteRounds(len(peers) + 1)
        self._leader_contact = 0.0  # when an append_entries of a current leader last came
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
        # Held by whichever thread runs Raft code: the tick thread, except while it
        # waits in poll(), and a writer thread that found it free (submit()).
        self._tick_lock = threading.Lock()
        self._poller.poll = self._poll_unlocked
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

    def _trim_journal_to(self, raft_data: Any, who: str) -> None:
        """Drop the journal entries a snapshot found at start already covers, when a
        stop came between the snapshot's rename and the compaction that follows it.

        pysyncobj keeps the journal at start only if it begins with the snapshot's
        last two entries, and otherwise clears it, entries after the snapshot
        included: acknowledged entries would be lost on this replica. Here, if the
        journal holds those two entries, everything before them goes (as the
        compaction would have done) and everything after them stays. A journal
        without them (it ends before the snapshot, or disagrees with it: a snapshot
        received from the leader) is left to pysyncobj to clear."""
        last, before = tuple(raft_data[0]), tuple(raft_data[1])
        journal = self._journal
        if len(journal) < 2:
            return
        pos = before[1] - journal[0][1]
        if pos <= 0 or pos + 1 >= len(journal):
            return
        if tuple(journal[pos]) != before or tuple(journal[pos + 1]) != last:
            return
        kept = journal.last_index - before[1] + 1
        journal.deleteEntriesTo(pos)
        log.warning(
            "raft %s: the journal still held %d entries the snapshot at index %d covers "
            "(stopped before compacting); dropped them, kept the %d entries from index %d",
            who, pos, last[1], kept, before[1],
        )

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
        with self._tick_lock:  # a writer thread may be in submit()
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

    def submit(self) -> None:
        """A command was queued (any thread). If the tick thread is waiting in its
        poll, append and send it (leader) or forward it (follower) right here: the
        write skips one thread hand-off, and the tick thread's poll then delivers
        the answers. Otherwise wake the tick thread."""
        if not self._stop.is_set() and self._tick_lock.acquire(blocking=False):
            try:
                if self._thread is not None and not self._stop.is_set() and (
                        self._SyncObj__raftState == _LEADER
                        or self._SyncObj__raftLeader is not None):
                    self._checkCommandsToApply()
                    self._durable_point()
                    return
            except Exception:  # the tick thread retries whatever is left
                log.exception("raft %s: submitting from a writer thread failed", self.address)
            finally:
                self._tick_lock.release()
        self.wake()

    def _poll_unlocked(self, timeout: float) -> None:
        """pysyncobj's PollPoller.poll with the tick lock released while it blocks."""
        poller = self._poller
        lock = self._tick_lock
        # Held here by the tick thread (`_run`); a test driving doTick() by hand
        # holds nothing.
        held = lock.locked()
        if held:
            lock.release()
        try:
            events = poller._PollPoller__poll.poll(timeout * 1000)
        finally:
            if held:
                lock.acquire()
        callbacks = poller._PollPoller__descrToCallbacks
        for descr, event in events:
            mask = 0
            if event & select.POLLIN:
                mask |= POLL_EVENT_TYPE.READ
            if event & select.POLLOUT:
                mask |= POLL_EVENT_TYPE.WRITE
            if event & (select.POLLERR | select.POLLHUP):
                mask |= POLL_EVENT_TYPE.ERROR
            callback = callbacks.get(descr)
            if callback is not None:  # unsubscribed by an earlier callback of this poll
                callback(descr, mask)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._tick_lock:
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
        self._pre_vote_gate()
        SyncObj._onTick(self, timeToWait)  # ends in the poll that delivers messages
        self._durable_point()
        self._after_poll()
        self._release_apply_waiters()
        self._refresh_status()

    def _after_poll(self) -> None:
        """Act on what the poll brought at once rather than in the next tick (which
        first reruns pysyncobj's timers and bookkeeping): commit and apply what the
        acknowledgements allow, apply what the leader says is committed, and append
        (leader) or forward (follower) the commands queued meanwhile."""
        leader = self._SyncObj__raftState == _LEADER
        if leader:
            self._advance_commit()
        if (self._SyncObj__raftCommitIndex > self._SyncObj__raftLastApplied
                and self._SyncObj__applyLogEntries() and self._SyncObj__raftState == _LEADER):
            self._SyncObj__sendAppendEntries()  # followers learn the commit now
        if self._SyncObj__commandsQueue._FastQueue__queue and (
                leader or self._SyncObj__raftLeader is not None):
            self._checkCommandsToApply()

    def _advance_commit(self) -> None:
        """Leader: the commit index Raft allows now (§5.3, §5.4.2): the highest index a
        majority holds on stable storage, if its entry is of the current term.

        This leader counts only up to its own synced index, so the rule stays right
        whenever it runs; pysyncobj's own loop (next tick) counts the leader for its
        whole log, which is right there because every tick syncs before it."""
        journal = self._journal
        commit = self._SyncObj__raftCommitIndex
        if journal.last_index <= commit:
            return
        match = self._SyncObj__raftMatchIndex
        held = sorted([journal.synced_index, *(match.get(n, 0) for n in
                                                self._SyncObj__otherNodes)], reverse=True)
        index = held[len(held) // 2]  # what a majority (n // 2 + 1 members) holds
        if index <= commit:
            return
        entry = journal[index - journal[0][1]]
        if entry[2] != self._SyncObj__raftCurrentTerm:
            return  # older terms' entries commit only under one of this term (§5.4.2)
        self._SyncObj__raftCommitIndex = index
        self._SyncObj__leaderCommitIndex = index
        journal.setRaftCommitIndex(index)

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
        if mtype == prevote.PRE_VOTE:
            self._on_pre_vote(node, message)
            return
        if mtype == prevote.PRE_VOTE_REPLY:
            self._on_pre_vote_reply(node, message)
            return
        if mtype == "append_entries" and message["term"] >= self._SyncObj__raftCurrentTerm:
            self._leader_contact = sync_monotonic()
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

    # ---- PreVote (prevote.py) ----------------------------------------------------------
    def _pre_vote_gate(self) -> None:
        """Before pysyncobj's tick: when its election timer has run out, ask the peers
        first (a pre-vote round) and push pysyncobj's election back by one timeout;
        let the election run only in the tick right after a round reached a majority."""
        approved = self._prevote.take_approval()
        if not self._tuning.pre_vote or self._SyncObj__raftState == _LEADER:
            return
        now = sync_monotonic()
        if self._SyncObj__raftElectionDeadline >= now or approved:
            return
        if (
            self._SyncObj__transferInProgress  # the leader itself asked us to take over
            or not self._SyncObj__connectedToAnyone()  # pysyncobj will not elect anyway
            or self._prevote.alone_wins()
        ):
            return
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        if self._SyncObj__raftLeader is not None:
            # Silent for a whole election timeout: forget it, as pysyncobj does when it
            # stands for election (waiting writes fail over, new ones fail fast).
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()
        next_term = self._SyncObj__raftCurrentTerm + 1
        round_id = self._prevote.start(next_term)
        last = self._journal[-1]
        message = prevote.request(round_id, next_term, prevote.LogPosition(last[2], last[1]))
        log.debug("raft %s: pre-vote round %d for term %d", self.address, round_id, next_term)
        for node in self._SyncObj__otherNodes:
            self._raw_send(node, message)

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        term, their_log = prevote.asked(message)
        leader_alive = self._SyncObj__raftState == _LEADER or (
            self._SyncObj__raftLeader is not None
            and sync_monotonic() - self._leader_contact < self._tuning.election_timeout_min
        )
        last = self._journal[-1]
        current = self._SyncObj__raftCurrentTerm
        granted = prevote.grants(asked_term=term, asker_log=their_log, my_term=current,
                                 my_log=prevote.LogPosition(last[2], last[1]),
                                 leader_alive=leader_alive)
        self._raw_send(node, prevote.reply(message, current, granted))

    def _on_pre_vote_reply(self, node: Any, message: dict[str, Any]) -> None:
        state = self._SyncObj__raftState
        if state == _LEADER:
            return
        if int(message["term"]) > self._SyncObj__raftCurrentTerm:
            # Any higher term is adopted (Raft): the next round asks above it.
            self._SyncObj__setCurrentTerm(int(message["term"]), None)
            self._SyncObj__setState(_FOLLOWER)
            return
        if self._prevote.on_reply(str(node.id), message):
            log.info("raft %s: pre-vote won, standing for election in term %d",
                     self.address, self._SyncObj__raftCurrentTerm + 1)
            self._SyncObj__raftElectionDeadline = 0.0  # pysyncobj elects at the next tick

    def pre_vote_rounds(self) -> tuple[int, int]:
        """(rounds started, rounds that reached a majority). A method, not a property:
        SyncObj.__init__ getattr()s every attribute."""
        return self._prevote.rounds, self._prevote.elections

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
