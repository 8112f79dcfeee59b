"""Watch: initial state, resume, selector transitions, bookmarks, expiry, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from controlplane.api import codec
from controlplane.api.handler import Handler
from controlplane.api.watch import ApiEvent, Filter, translate
from controlplane.store.base import Event, Record
from controlplane.store.memory import MemoryStore
from corral.errors import Expired, Invalid
from corral.selectors import EVERYTHING, FieldSelector, parse_label_selector
from tests.api.conftest import config_map, pod


def take(events: Iterator[ApiEvent], n: int, skip_bookmarks: bool = True) -> list[ApiEvent]:
    out: list[ApiEvent] = []
    for ev in events:
        if skip_bookmarks and ev.type == "BOOKMARK":
            continue
        out.append(ev)
        if len(out) == n:
            break
    return out


def summary(evs: list[ApiEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.record.name if e.record else "") for e in evs]


def rec(name: str, rev: int, labels: dict[str, str]) -> Record:
    return Record("Pod", "default", name, b"", rev, 1, tuple(sorted(labels.items())))


def test_translate_rules() -> None:
    flt = Filter("default", parse_label_selector("app=web"), FieldSelector())
    web, db = rec("p", 2, {"app": "web"}), rec("p", 3, {"app": "db"})
    assert translate(Event("ADDED", web, None, 2), flt).type == "ADDED"  # type: ignore[union-attr]
    assert translate(Event("ADDED", db, None, 3), flt) is None
    stop = translate(Event("MODIFIED", db, web, 3), flt)
    assert stop is not None and stop.type == "DELETED"
    assert stop.record is not None and stop.record.label_map() == {"app": "web"}
    assert stop.record.revision == 3  # the previous state, stamped with the event's revision
    start = translate(Event("MODIFIED", web, db, 4), flt)
    assert start is not None and start.type == "ADDED"
    assert translate(Event("MODIFIED", web, web, 5), flt).type == "MODIFIED"  # type: ignore[union-attr]
    assert translate(Event("DELETED", db, db, 6), flt) is None
    other_ns = Filter("other", EVERYTHING, FieldSelector())
    assert translate(Event("ADDED", web, None, 2), other_ns) is None


def test_watch_without_version_starts_with_current_objects(h: Handler) -> None:
    h.create(config_map(name="a"))
    h.create(config_map(name="b"))
    stream = h.watch("ConfigMap", "default")
    events = stream.events()
    first = take(events, 2)
    assert summary(first) == [("ADDED", "a"), ("ADDED", "b")]
    h.create(config_map(name="c"))
    h.delete("ConfigMap", "default", "a")
    assert summary(take(events, 2)) == [("ADDED", "c"), ("DELETED", "a")]
    stream.cancel()


def test_resume_from_a_resource_version_is_exclusive(h: Handler) -> None:
    a = h.create(config_map(name="a"))
    h.create(config_map(name="b"))
    h.update(config_map(name="a", k="v"))
    stream = h.watch("ConfigMap", "default", resource_version=a.metadata.resource_version)
    evs = take(stream.events(), 2)
    assert summary(evs) == [("ADDED", "b"), ("MODIFIED", "a")]
    assert [e.revision for e in evs] == sorted(e.revision for e in evs)
    obj = codec.decode(evs[1].record)  # type: ignore[arg-type]
    assert obj.data["k"] == "v" and int(obj.metadata.resource_version) == evs[1].revision
    stream.cancel()


def test_label_selector_transitions(h: Handler) -> None:
    h.create(pod(name="p"))
    stream = h.watch("Pod", "default", label_selector="tier=fe")
    events = stream.events()
    cur = h.get("Pod", "default", "p")
    cur.metadata.labels["tier"] = "fe"
    h.update(cur)
    cur = h.get("Pod", "default", "p")
    cur.metadata.annotations["x"] = "1"
    h.update(cur)
    cur = h.get("Pod", "default", "p")
    cur.metadata.labels["tier"] = "be"
    h.update(cur)
    evs = take(events, 3)
    assert [e.type for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    stream.cancel()


def test_field_selector_on_watch(h: Handler) -> None:
    h.create(pod(name="p"))
    stream = h.watch("Pod", "", field_selector="spec.nodeName=n1")
    events = stream.events()
    cur = h.get("Pod", "default", "p")
    cur.spec.node_name = "n1"
    h.update(cur)
    assert summary(take(events, 1)) == [("ADDED", "p")]
    stream.cancel()
    with pytest.raises(Invalid):
        h.watch("Pod", "", field_selector="spec.containers=x")


def test_namespace_cascade_arrives_as_deletions(h: Handler) -> None:
    h.create(pod(name="p"))
    stream = h.watch("Pod", "default", resource_version=str(h.store.revision))
    events = stream.events()
    h.create(config_map())  # another kind: not seen
    h.create(pod(name="q"))
    assert summary(take(events, 1)) == [("ADDED", "q")]
    stream.cancel()


def test_bookmarks_carry_progress(h: Handler) -> None:
    stream = h.watch("Pod", "default", resource_version=str(h.store.revision),
                     allow_bookmarks=True)
    events = stream.events()
    h.create(config_map())  # other kinds move the revision on
    deadline = time.monotonic() + 10
    seen = []
    for ev in events:
        seen.append(ev)
        if ev.type == "BOOKMARK" and ev.revision == h.store.revision:
            break
        assert time.monotonic() < deadline, seen
    assert all(e.type == "BOOKMARK" for e in seen)
    stream.cancel()


def test_too_old_resource_version_is_expired() -> None:
    store = MemoryStore(max_history=5)
    h = Handler(store)
    h.ensure_namespaces()
    for i in range(10):
        h.create(config_map(name=f"c{i}"))
    with pytest.raises(Expired) as info:
        h.watch("ConfigMap", "default", resource_version="1")
    assert "too old" in str(info.value) and "list again" in str(info.value)
    with pytest.raises(Invalid):
        h.watch("ConfigMap", "default", resource_version="abc")


def test_a_watcher_that_falls_behind_gets_expired() -> None:
    store = MemoryStore(max_history=5)
    h = Handler(store)
    h.ensure_namespaces()
    stream = h.watch("ConfigMap", "default", resource_version=str(store.revision))
    events = stream.events()
    for i in range(10):
        h.create(config_map(name=f"c{i}"))
    with pytest.raises(Expired):
        take(events, 10)


def test_closing_ends_every_stream(h: Handler) -> None:
    stream = h.watch("ConfigMap", "default")
    done = threading.Event()
    got: list[ApiEvent] = []

    def consume() -> None:
        got.extend(stream.events())
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.2)
    h.close()
    assert done.wait(5), "a watch stream must end when the server closes"
    t.join()


def test_cancel_ends_the_stream(h: Handler) -> None:
    stream = h.watch("ConfigMap", "default")
    done = threading.Event()

    def consume() -> None:
        list(stream.events())
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.2)
    stream.cancel()
    assert done.wait(5)
    t.join()


def test_set_based_selector_on_watch(h: Handler) -> None:
    stream = h.watch("Pod", "default", label_selector="tier in (fe,be),!canary",
                     resource_version=str(h.store.revision))
    events = stream.events()
    for name, labels in (("a", {"tier": "fe"}), ("b", {"tier": "db"}),
                         ("c", {"tier": "be", "canary": "yes"}), ("d", {"tier": "be"})):
        p = pod(name=name)
        p.metadata.labels.clear()
        p.metadata.labels.update(labels)
        h.create(p)
    assert summary(take(events, 2)) == [("ADDED", "a"), ("ADDED", "d")]
    cur = h.get("Pod", "default", "a")
    cur.metadata.labels["canary"] = "1"
    h.update(cur)
    assert summary(take(events, 1)) == [("DELETED", "a")]
    stream.cancel()


def test_resource_version_from_the_future_is_refused(h: Handler) -> None:
    with pytest.raises(Invalid) as info:
        h.watch("Pod", "default", resource_version=str(h.store.revision + 100))
    assert "newer than the store's revision" in str(info.value)
    h.watch("Pod", "default", resource_version=str(h.store.revision)).cancel()
