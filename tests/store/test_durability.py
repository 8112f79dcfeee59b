"""Real corral-controlplane replicas (tests/cluster.py) killed with SIGKILL:
nothing acknowledged is lost, killed replicas catch up, replicas converge to
the same digest, and strace shows the journal sync before the reply."""

from __future__ import annotations

import os
import pickle
import re
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.store import inspect
from controlplane.store.raftnode import AeadEncryptor, FrameCodec
from corral.client import Client
from corral.errors import CorralError
from corral.v1 import core_pb2
from tests.cluster import Cluster, ReplicaProcess
from tests.store.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def configmap(name: str, ns: str = "default") -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.namespace = ns
    cm.data["payload"] = name * 4
    return cm


class Writers:
    """Threads creating ConfigMaps through every endpoint; remembers what was acknowledged."""

    def __init__(self, cluster: Cluster, n: int, prefix: str = "w") -> None:
        self.client = cluster.client(timeout=10.0, retry_for=30.0)
        self.acked: set[str] = set()
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(f"{prefix}{i}",), daemon=True)
                         for i in range(n)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def _run(self, who: str) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"{who}-{i}"
            i += 1
            try:
                self.client.create(configmap(name))
            except CorralError:
                with self._lock:
                    self.failed += 1
                continue
            with self._lock:
                self.acked.add(name)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_more(self, n: int, timeout: float = 60.0) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target, timeout, f"{n} more acknowledged writes")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    # make_cluster (tests/conftest.py) prints every replica's log tail if the test fails.
    return make_cluster(3)


def listing(r: ReplicaProcess, stale: bool = False) -> tuple[set[str], int]:
    """The ConfigMaps `r` serves and the revision it read them at. Linearizable
    unless `stale`: the read waits until `r` has applied every write the cluster
    acknowledged, so its revision counts them all."""
    with Client([r.api_address], retry_for=30.0) as c:
        items, rev = c.list("ConfigMap", "default", stale=stale)
    return {o.metadata.name for o in items}, int(rev)


def names_on(r: ReplicaProcess, stale: bool = False) -> set[str]:
    return listing(r, stale)[0]


def wait_same_revision(cluster: Cluster, timeout: float = 60.0) -> int:
    """Until every running replica has applied the same, complete history.

    Equal revisions with applied == commit everywhere are not enough right after
    all replicas restart: each first applies its journal up to the commit index
    it recorded (flushed once a second, so it may lag), and all can agree on that
    old revision before a leader commits the rest. A linearizable read first
    waits for a leader whose term has committed, i.e. for the whole history."""
    live = [r for r in cluster.replicas if r.running]
    floor = listing(live[0])[1]
    revs: list[int] = []

    def same() -> bool:
        try:
            sts = [r.local_status() for r in live]
        except Exception:
            return False
        revs[:] = [st.revision for st in sts]
        return (len(set(revs)) == 1 and revs[0] >= floor
                and all(st.applied_index == st.commit_index for st in sts))

    wait_for(same, timeout, "every replica at the same revision")
    return revs[0]


def assert_no_divergence(cluster: Cluster) -> None:
    for r in cluster.replicas:
        text = r.log_text()
        assert "diverged" not in text and "truncating already-applied" not in text, r.name


def test_leader_sigkill_while_writers_run_loses_no_acknowledged_write(cluster: Cluster) -> None:
    with Writers(cluster, 4) as w:
        w.wait_more(200)
        leader = cluster.leader()
        leader.kill()
        killed_at = w.count()
        w.wait_more(200)  # writes resume on the new leader
        leader.start()
        cluster.wait_ready()
        w.wait_more(100)
    assert w.count() > killed_at
    rev = wait_same_revision(cluster)
    for r in cluster.replicas:
        missing = w.acked - names_on(r)
        assert not missing, f"{r.name} lacks {len(missing)} acknowledged writes"
    assert rev >= len(w.acked)
    assert_no_divergence(cluster)


def test_sigkill_of_every_replica_loses_nothing(cluster: Cluster) -> None:
    with Writers(cluster, 4) as w:
        w.wait_more(300)
        for r in cluster.replicas:  # as close to "at once" as signals get
            assert r.pid is not None
            os.kill(r.pid, signal.SIGKILL)
        for r in cluster.replicas:
            r.kill()  # reaps
        acked = set(w.acked)
    cluster.start()
    for r in cluster.replicas:
        names, rev = listing(r)
        missing = acked - names
        assert not missing, f"{r.name} lacks {len(missing)} acknowledged writes after restart"
        assert rev >= len(acked), f"{r.name} read at revision {rev}"
    assert wait_same_revision(cluster) >= len(acked)


def test_killed_replica_catches_up_after_1000_writes(cluster: Cluster) -> None:
    lagger = cluster.followers()[0]
    lagger.kill()
    client = cluster.client(timeout=10.0)
    lock = threading.Lock()
    written: list[str] = []

    def write(part: int) -> None:
        for i in range(250):
            client.create(configmap(f"catch-{part}-{i}"))
            with lock:
                written.append(f"catch-{part}-{i}")

    threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(written) == 1000
    leader_rev = cluster.leader().local_status().revision
    lagger.start()
    cluster.wait_ready(replicas=[lagger])
    wait_for(lambda: lagger.local_status().revision >= leader_rev, 60, "the lagger to catch up")
    assert set(written) <= names_on(lagger, stale=True)


def test_replicas_converge_after_writers_and_leader_kills(cluster: Cluster) -> None:
    with Writers(cluster, 6) as w:
        for _ in range(3):
            w.wait_more(150)
            leader = cluster.leader()
            leader.kill()
            w.wait_more(100)
            leader.start()
            cluster.wait_ready()
        w.wait_more(100)
    rev = wait_same_revision(cluster)
    for r in cluster.replicas:
        assert r.stop() == 0, f"{r.name} did not stop cleanly"
    images = {r.name: inspect.load(str(r.data_dir)) for r in cluster.replicas}
    digests = {(img.revision, img.digest) for img in images.values()}
    assert len(digests) == 1, {n: (i.revision, i.digest) for n, i in images.items()}
    assert next(iter(digests))[0] == rev
    present = {r.name for r in images["cp-0"].state.list("ConfigMap", "default")}
    assert w.acked <= present
    assert_no_divergence(cluster)


# ---- strace: the sync sits between the append and the reply ------------------------
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<fd>\d+)<(?P<what>.*?)>(?:[,)]| <unfinished)")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>")
_DATA = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_RECORD = struct.Struct("<IIQQ")  # the journal's record header: length, crc, index, term

Event = tuple[str, str, str]  # (syscall, fd description, the call's text)


def _unescape(what: str) -> str:
    # -xx prints paths hex-escaped too.
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), what)


def strace_events(text: str) -> list[Event]:
    """Syscalls in order of completion, from `strace -f -yy` output."""
    pending: dict[tuple[str, str], tuple[str, str]] = {}
    events: list[Event] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, rest = m.group("pid"), m.group("rest")
        call = _CALL.match(rest)
        if call:
            what = _unescape(call.group("what"))
            if "<unfinished ...>" in rest:
                pending[(pid, call.group("name"))] = (what, rest)
            else:
                events.append((call.group("name"), what, rest))
            continue
        resumed = _RESUMED.match(rest)
        if resumed and (pid, resumed.group("name")) in pending:
            what, first = pending.pop((pid, resumed.group("name")))
            events.append((resumed.group("name"), what, first))
    return events


def payload(text: str) -> bytes:
    """The buffer argument(s) of a call traced with -xx, concatenated (sendmsg has
    one per iovec)."""
    return b"".join(bytes.fromhex(m.group(1).replace("\\x", "")) for m in _DATA.finditer(text))


def is_journal(what: str) -> bool:
    return what.endswith("/raft.journal")


def check_leader(events: list[Event], api_port: str) -> int:
    """Every answer to the client about object `traced-N` leaves after a journal
    write holding that object and an fdatasync after that write (other writes,
    e.g. by the leader's controllers, may interleave). Returns the answers checked."""
    answer = re.compile(rf"TCP(v6)?:\[.*?:{api_port}->")
    name = re.compile(rb"traced-\d+")
    written: set[bytes] = set()
    synced: set[bytes] = set()
    answers = 0
    for call, what, text in events:
        if call == "pwrite64" and is_journal(what):
            written.update(name.findall(payload(text)))
        elif call == "fdatasync" and is_journal(what):
            synced |= written
        elif call == "sendmsg" and answer.match(what):
            for n in set(name.findall(payload(text))):
                assert n in synced, f"the leader answered about {n!r} before its journal sync"
                answers += 1
    return answers


def raft_messages(stream: bytearray, crypt: AeadEncryptor) -> list[Any]:
    """Complete pysyncobj frames at the head of `stream` (consumed), decoded."""
    out = []
    while len(stream) >= 4:
        (length,) = struct.unpack_from("i", stream)
        if len(stream) < 4 + length:
            break
        token = bytes(stream[4 : 4 + length])
        del stream[: 4 + length]
        try:
            message = pickle.loads(FrameCodec.decompress(crypt.decrypt(token)))
        except Exception:
            continue  # the key exchange, or a frame cut by the start of the trace
        out.append(message[1] if isinstance(message, tuple) else message)
    return out


def check_follower(events: list[Event], api_port: str, password: str) -> int:
    """Every acknowledgement the follower sends (a `next_node_idx` success, read
    by decrypting its Raft frames with the cluster's password) names only entries
    that a journal write followed by fdatasync already covered. Returns how many
    acknowledgements of new entries were checked."""
    crypt = AeadEncryptor(password)
    api = re.compile(rf":{api_port}[->\]]")
    written = synced = 0
    acked = 0
    checked = 0
    streams: dict[str, bytearray] = {}
    for name, what, text in events:
        if name == "pwrite64" and is_journal(what):
            data, off = payload(text), 0
            while off + _RECORD.size <= len(data):
                length, _, idx, _ = _RECORD.unpack_from(data, off)
                written = max(written, idx)
                off += _RECORD.size + length
        elif name == "fdatasync" and is_journal(what):
            synced = written
        elif name == "sendto" and what.startswith("TCP:") and not api.search(what):
            stream = streams.setdefault(what, bytearray())
            stream += payload(text)
            for msg in raft_messages(stream, crypt):
                if isinstance(msg, dict) and msg.get("type") == "next_node_idx" \
                        and msg.get("success") and synced:
                    idx = msg["next_node_idx"] - 1
                    assert idx <= synced, (
                        f"the follower acknowledged entry {idx} while only {synced} was synced"
                    )
                    if idx > acked:
                        checked += 1
                        acked = idx
    return checked


def test_strace_shows_the_sync_between_append_and_reply(cluster: Cluster, tmp_path: Path) -> None:
    leader = cluster.leader()
    follower = cluster.followers()[0]
    client = leader.client(timeout=10.0)
    client.create(configmap("warm-up"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    outs: dict[str, Path] = {}
    try:
        for r in (leader, follower):
            outs[r.name] = tmp_path / f"strace-{r.name}.txt"
            procs[r.name] = subprocess.Popen(
                ["strace", "-f", "-yy", "-qq", "-xx", "-s", "65536", "-o", str(outs[r.name]),
                 "-p", str(r.pid), "-e", "trace=pwrite64,fdatasync,fsync,sendto,sendmsg"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        time.sleep(1.0)  # attached to every thread
        for i in range(40):
            client.create(configmap(f"traced-{i}"))
        time.sleep(0.5)
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(10)
        client.close()
    answers = check_leader(strace_events(outs[leader.name].read_text()),
                           leader.api_address.rpartition(":")[2])
    assert answers >= 40, f"only {answers} answers to the client seen on the leader"
    password = cluster.password_file.read_text().strip()
    acks = check_follower(strace_events(outs[follower.name].read_text()),
                          follower.api_address.rpartition(":")[2], password)
    assert acks >= 20, f"only {acks} acknowledgements of new entries seen on the follower"


def _hex(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


def test_strace_checks_fail_on_the_wrong_order() -> None:
    """The checks above can fail: an answer or an acknowledgement before the sync."""
    j = "3</d/raft.journal>"
    api = "9<TCP:[127.0.0.1:7000->127.0.0.1:5555]>"
    good_leader = (
        f'1 pwrite64({j}, "{_hex(b"traced-1")}", 8, 0) = 8\n'
        f"1 fdatasync({j}) = 0\n"
        f'1 pwrite64({j}, "{_hex(b"traced-2")}", 8, 8) = 8\n'  # another write interleaves
        f'2 sendmsg({api}, "{_hex(b"traced-1")}", 0) = 8\n'
    )
    assert check_leader(strace_events(good_leader), "7000") == 1
    bad_leader = good_leader + f'2 sendmsg({api}, "{_hex(b"traced-2")}", 0) = 8\n'
    interleaved = (  # strace splits calls that overlap with another thread's
        f'1 pwrite64({j}, "{_hex(b"traced-3")}", 8, 0) = 8\n'
        f'2 sendmsg({api}, "{_hex(b"ping")}", 0 <unfinished ...>\n'
        f"1 fdatasync({j} <unfinished ...>\n"
        "2 <... sendmsg resumed>) = 4\n"
        "1 <... fdatasync resumed>) = 0\n"
        f'3 sendmsg({api}, "{_hex(b"traced-3")}", 0) = 8\n'
    )
    assert check_leader(strace_events(interleaved), "7000") == 1
    with pytest.raises(AssertionError, match="before its journal sync"):
        check_leader(strace_events(bad_leader), "7000")
    crypt = AeadEncryptor("pw")

    def frame(msg: object) -> bytes:
        token = crypt.encrypt_at_time(FrameCodec.compress(pickle.dumps((b"key", msg), 2)), 1)
        return struct.pack("i", len(token)) + token

    def record(idx: int) -> bytes:
        return _RECORD.pack(1, 0, idx, 1) + b"c"

    sock = "5<TCP:[127.0.0.1:9001->127.0.0.1:9002]>"
    ack = frame({"type": "next_node_idx", "next_node_idx": 8, "success": True, "reset": False})
    synced_6 = f'1 pwrite64({j}, "{_hex(record(6))}", 25, 0) = 25\n1 fdatasync({j}) = 0\n'
    write_7 = f'1 pwrite64({j}, "{_hex(record(7))}", 25, 25) = 25\n'
    send_ack = f'1 sendto({sock}, "{_hex(ack)}", {len(ack)}, 0, NULL, 0) = {len(ack)}\n'
    with pytest.raises(AssertionError, match="acknowledged entry 7 while only 6"):
        check_follower(strace_events(synced_6 + write_7 + send_ack), "7000", "pw")
    good = synced_6 + write_7 + f"1 fdatasync({j}) = 0\n" + send_ack
    assert check_follower(strace_events(good), "7000", "pw") == 1
