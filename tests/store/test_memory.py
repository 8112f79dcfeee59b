"""MemoryStore and the watch hub: order, resume, expiry, close, thread safety."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from controlplane.store.base import MUST_NOT_EXIST, Change, Event, MemberInfo
from controlplane.store.memory import MemoryStore
from corral.errors import AlreadyExists, Expired, Invalid, Unavailable


def pod(name: str, namespace: str = "default", data: bytes = b"p") -> Change:
    return Change("Pod", namespace, name, data=data)


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    s = MemoryStore()
    s.put(Change("Namespace", "", "default"))
    try:
        yield s
    finally:
        s.close()


def test_crud_and_list(store: MemoryStore) -> None:
    rec = store.put(pod("a"), require_namespace="default")
    assert store.get(("Pod", "default", "a")) == rec
    records, rev = store.list("Pod", "default")
    assert records == [rec] and rev == store.revision == 2
    with pytest.raises(AlreadyExists):
        store.put(pod("a"), expect=MUST_NOT_EXIST)
    store.delete(("Pod", "default", "a"))
    assert store.list("Pod")[0] == []


def test_watch_delivers_in_revision_order_and_resumes(store: MemoryStore) -> None:
    w = store.watch(store.revision)
    for i in range(5):
        store.put(pod(f"p{i}"))
    store.delete(("Pod", "default", "p0"))
    got: list[Event] = []
    while len(got) < 6:
        got += w.next(timeout=5)
    assert [e.revision for e in got] == list(range(2, 8))
    assert [e.type for e in got] == ["ADDED"] * 5 + ["DELETED"]
    assert got[-1].prev is not None and got[-1].prev.revision == 2
    assert w.revision == 7
    # Resume from the middle: exactly the events after it.
    w2 = store.watch(4)
    assert [e.revision for e in w2.next(timeout=1)] == [5, 6, 7]
    w.close()
    w2.close()


def test_watch_of_one_kind_skips_others_and_advances(store: MemoryStore) -> None:
    w = store.watch(store.revision, kind="ConfigMap")
    store.put(pod("a"))
    assert w.next(timeout=0.05) == []
    assert w.revision == store.revision  # skipped over the Pod write
    store.put(Change("ConfigMap", "default", "c"))
    events = w.next(timeout=5)
    assert [(e.record.kind, e.type) for e in events] == [("ConfigMap", "ADDED")]


def test_blocked_watcher_wakes_on_write(store: MemoryStore) -> None:
    w = store.watch(store.revision, kind="Pod")
    got: list[list[Event]] = []
    t = threading.Thread(target=lambda: got.append(w.next(timeout=10)))
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    store.put(pod("a"))
    t.join(10)
    assert got and got[0][0].record.name == "a"
    assert time.monotonic() - started < 2


def test_watch_too_old_is_expired() -> None:
    s = MemoryStore(max_history=3)
    s.put(Change("Namespace", "", "default"))
    for i in range(10):
        s.put(pod(f"p{i}"))
    with pytest.raises(Expired, match="too old"):
        s.watch(1)
    s.watch(s.revision - 3).close()


def test_slow_watcher_falls_behind_and_expires() -> None:
    s = MemoryStore(max_history=5)
    s.put(Change("Namespace", "", "default"))
    w = s.watch(s.revision)
    for i in range(20):
        s.put(pod(f"p{i}"))
    with pytest.raises(Expired):
        w.next(timeout=1)


def test_bad_watch_arguments(store: MemoryStore) -> None:
    with pytest.raises(Invalid, match="from_revision"):
        store.watch(-1)
    with pytest.raises(Invalid, match="from_revision"):
        store.watch("3")  # type: ignore[arg-type]


def test_close_ends_watches_and_refuses_calls() -> None:
    s = MemoryStore()
    w = s.watch(0)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            w.next(timeout=30)
        except Unavailable as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    s.close()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    with pytest.raises(Unavailable):
        s.put(pod("x"))
    with pytest.raises(Unavailable):
        s.watch(0)


def test_watch_close_wakes_its_reader(store: MemoryStore) -> None:
    w = store.watch(store.revision)
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(lambda: w.next(timeout=30), errors))
    t.start()
    time.sleep(0.1)
    w.close()
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], Unavailable)


def _catch(fn, errors: list[BaseException]) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException as e:
        errors.append(e)


def test_concurrent_writers_readers_and_watchers(store: MemoryStore) -> None:
    """Reads never see a torn state; watchers see every write once, in order."""
    writers, per_writer = 4, 200
    start_rev = store.revision
    watches = [store.watch(start_rev), store.watch(start_rev, kind="Pod")]
    seen: list[list[int]] = [[], []]
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(per_writer):
                store.put(pod(f"w{i}-{j}"), request_id=f"{i}-{j}")
                if j % 3 == 0:
                    store.delete(("Pod", "default", f"w{i}-{j}"))
        except BaseException as e:
            failures.append(e)

    def read() -> None:
        try:
            while not stop.is_set():
                records, rev = store.list("Pod")
                assert all(r.revision <= rev for r in records)
                assert [r.name for r in records] == sorted(r.name for r in records)
        except BaseException as e:
            failures.append(e)

    def watch(idx: int) -> None:
        try:
            while not stop.is_set():
                for ev in watches[idx].next(timeout=0.2):
                    seen[idx].append(ev.revision)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    others = [threading.Thread(target=read), threading.Thread(target=watch, args=(0,)),
              threading.Thread(target=watch, args=(1,))]
    for t in threads + others:
        t.start()
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        not seen[0] or seen[0][-1] != store.revision or seen[1][-1] != store.revision
    ):
        time.sleep(0.05)
    stop.set()
    for t in others:
        t.join(10)
    assert not failures, failures
    expected = list(range(start_rev + 1, store.revision + 1))
    writes = writers * (per_writer + (per_writer + 2) // 3)
    assert len(expected) == writes
    assert seen[0] == expected and seen[1] == expected


def test_members_and_status(store: MemoryStore) -> None:
    store.register_member(MemberInfo("b", "127.0.0.1:2"))
    store.register_member(MemberInfo("a", "127.0.0.1:1"))
    assert [m.name for m in store.members()] == ["a", "b"]
    st = store.local_status()
    assert st.state == "leader" and st.revision == store.revision and st.has_quorum
    calls: list[bool] = []
    store.on_leadership_change(calls.append)
    assert calls == [True] and store.is_leader()
