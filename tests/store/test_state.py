"""The state machine's semantics: revisions, expect, unique tokens, cascade,
dedup, history bounds, snapshot round trip, digest."""

from __future__ import annotations

import pickle

import pytest

from controlplane.store.base import (
    ANY,
    MUST_EXIST,
    MUST_NOT_EXIST,
    Change,
    MemberInfo,
    UniqueViolation,
)
from controlplane.store.state import StoreState
from corral.errors import AlreadyExists, Conflict, Expired, Invalid, NotFound


def ns(name: str) -> Change:
    return Change("Namespace", "", name, data=name.encode())


def pod(name: str, namespace: str = "default", data: bytes = b"p", **kw: object) -> Change:
    return Change("Pod", namespace, name, data=data, **kw)  # type: ignore[arg-type]


@pytest.fixture
def st() -> StoreState:
    s = StoreState()
    s.put(ns("default"))
    return s


def test_revision_grows_by_one_per_write_and_records_carry_it(st: StoreState) -> None:
    assert st.revision == 1
    a = st.put(pod("a"))
    assert (a.revision, a.create_revision, st.revision) == (2, 2, 2)
    a2 = st.put(pod("a", data=b"v2"))
    assert (a2.revision, a2.create_revision) == (3, 2)
    gone = st.delete(("Pod", "default", "a"))
    assert gone.revision == 4 and gone.data == b"v2" and st.revision == 4
    assert st.get(("Pod", "default", "a")) is None


def test_failed_writes_change_nothing(st: StoreState) -> None:
    st.put(pod("a"))
    before = (st.revision, st.digest(), st.history_size())
    with pytest.raises(AlreadyExists, match="Pod default/a already exists"):
        st.put(pod("a"), MUST_NOT_EXIST)
    with pytest.raises(NotFound, match="Pod default/b not found"):
        st.put(pod("b"), MUST_EXIST)
    with pytest.raises(Conflict, match="resourceVersion 2, the request expected 1"):
        st.put(pod("a"), 1)
    with pytest.raises(NotFound, match='namespace "nope" not found'):
        st.put(pod("x", "nope"), require_namespace="nope")
    with pytest.raises(NotFound):
        st.delete(("Pod", "default", "zzz"))
    with pytest.raises(Conflict):
        st.delete(("Pod", "default", "a"), expect=99)
    assert (st.revision, st.digest(), st.history_size()) == before


@pytest.mark.parametrize(
    ("expect", "exists", "error"),
    [
        (ANY, False, None),
        (ANY, True, None),
        (MUST_NOT_EXIST, False, None),
        (MUST_NOT_EXIST, True, AlreadyExists),
        (MUST_EXIST, False, NotFound),
        (MUST_EXIST, True, None),
        ("current", True, None),
        (1234, True, Conflict),
        (1234, False, NotFound),
    ],
)
def test_expect_values(st: StoreState, expect: object, exists: bool, error: type | None) -> None:
    if exists:
        cur = st.put(pod("a"))
    if expect == "current":
        expect = cur.revision
    if error is None:
        rec = st.put(pod("a", data=b"new"), expect)  # type: ignore[arg-type]
        assert rec.data == b"new" and rec.revision == st.revision
    else:
        with pytest.raises(error):
            st.put(pod("a", data=b"new"), expect)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-2, True, "1", 1.0])
def test_bad_expect_is_invalid_and_names_the_argument(st: StoreState, bad: object) -> None:
    with pytest.raises(Invalid, match=r"^expect: "):
        st.put(pod("a"), bad)  # type: ignore[arg-type]
    assert st.revision == 1


def test_bad_change_is_invalid(st: StoreState) -> None:
    with pytest.raises(Invalid, match=r"change.name"):
        st.put(Change("Pod", "default", ""))
    with pytest.raises(Invalid, match=r"change.labels"):
        st.put(Change("Pod", "default", "a", labels=[("a", "b")]))  # type: ignore[arg-type]
    with pytest.raises(Invalid, match=r"change.data"):
        st.put(Change("Pod", "default", "a", data="text"))  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="delete cannot expect"):
        st.delete(("Namespace", "", "default"), MUST_NOT_EXIST)
    assert st.revision == 1


def test_unique_tokens_are_held_by_one_key(st: StoreState) -> None:
    st.put(Change("Service", "default", "a", unique=("clusterIP/10.96.0.5",)))
    taken = r"clusterIP/10\.96\.0\.5 is already taken by Service default/a"
    with pytest.raises(UniqueViolation, match=taken):
        st.put(Change("Service", "default", "b", unique=("clusterIP/10.96.0.5",)))
    assert st.get(("Service", "default", "b")) is None
    # The holder may keep or re-put its own token.
    st.put(Change("Service", "default", "a", data=b"2", unique=("clusterIP/10.96.0.5",)))
    # Changing the token releases the old one.
    st.put(Change("Service", "default", "a", unique=("clusterIP/10.96.0.6",)))
    assert st.unique_holder("clusterIP/10.96.0.5") is None
    st.put(Change("Service", "default", "b", unique=("clusterIP/10.96.0.5",)))
    # Deleting releases too.
    st.delete(("Service", "default", "a"))
    st.put(Change("Service", "default", "c", unique=("clusterIP/10.96.0.6",)))
    assert st.unique_holder("clusterIP/10.96.0.6") == ("Service", "default", "c")


def test_namespace_cascade_is_one_revision(st: StoreState) -> None:
    st.put(ns("team"))
    st.put(pod("a", "team"))
    st.put(pod("b", "team"))
    st.put(Change("ConfigMap", "team", "cm", unique=("tok",)))
    st.put(pod("keep"))
    rev = st.revision
    deleted = st.delete_namespace("team")
    assert st.revision == rev + 1
    assert [(r.kind, r.name) for r in deleted] == [
        ("ConfigMap", "cm"), ("Pod", "a"), ("Pod", "b"), ("Namespace", "team"),
    ]
    assert all(r.revision == rev + 1 for r in deleted)
    assert st.list("Pod", "team") == ()
    assert [r.name for r in st.list("Pod")] == ["keep"]
    assert st.unique_holder("tok") is None
    events, _ = st.events_after(rev)
    assert [(e.type, e.record.name, e.revision) for e in events] == [
        ("DELETED", "cm", rev + 1), ("DELETED", "a", rev + 1),
        ("DELETED", "b", rev + 1), ("DELETED", "team", rev + 1),
    ]
    with pytest.raises(NotFound, match='namespace "team" not found'):
        st.delete_namespace("team")


def test_plain_delete_of_a_namespace_cascades(st: StoreState) -> None:
    st.put(ns("t"))
    st.put(pod("a", "t"))
    gone = st.delete(("Namespace", "", "t"))
    assert gone.kind == "Namespace" and gone.name == "t"
    assert st.list("Pod", "t") == ()


def test_delete_namespace_honours_expect(st: StoreState) -> None:
    cur = st.put(ns("t"))
    with pytest.raises(Conflict):
        st.delete_namespace("t", expect=cur.revision + 5)
    st.delete_namespace("t", expect=cur.revision)


def test_request_id_returns_first_result(st: StoreState) -> None:
    first = st.put(pod("a"), request_id="r1")
    st.put(pod("a", data=b"other"))
    again = st.put(pod("a", data=b"third"), request_id="r1")
    assert again == first and st.revision == 3
    assert st.get(("Pod", "default", "a")).data == b"other"  # type: ignore[union-attr]


def test_request_id_reraises_first_error(st: StoreState) -> None:
    st.put(pod("a"))
    with pytest.raises(AlreadyExists):
        st.put(pod("a"), MUST_NOT_EXIST, request_id="r")
    st.delete(("Pod", "default", "a"))
    # The key is gone now, but the id's outcome was decided: same error again.
    with pytest.raises(AlreadyExists):
        st.put(pod("a"), MUST_NOT_EXIST, request_id="r")
    assert st.get(("Pod", "default", "a")) is None
    st.put(Change("Service", "default", "s", unique=("t",)))
    with pytest.raises(UniqueViolation) as e1:
        st.put(Change("Service", "default", "s2", unique=("t",)), request_id="u")
    with pytest.raises(UniqueViolation) as e2:
        st.put(Change("Service", "default", "s2", unique=("t",)), request_id="u")
    assert (e1.value.token, e1.value.holder) == (e2.value.token, e2.value.holder)


def test_dedup_table_is_bounded_and_insertion_ordered() -> None:
    s = StoreState(max_dedup=3)
    s.put(ns("default"))
    for i in range(5):
        s.put(pod(f"p{i}"), request_id=f"id{i}")
    assert s.dedup_size() == 3
    assert s.outcome("id0") is None and s.outcome("id1") is None
    assert s.outcome("id4") is not None
    # A forgotten id applies again.
    rev = s.revision
    s.put(pod("p0"), request_id="id0")
    assert s.revision == rev + 1


def test_delete_namespace_dedup(st: StoreState) -> None:
    st.put(ns("t"))
    first = st.delete_namespace("t", request_id="d")
    assert st.delete_namespace("t", request_id="d") == first


def test_list_is_sorted_and_immutable(st: StoreState) -> None:
    st.put(ns("b-ns"))
    for n, name in [("default", "z"), ("b-ns", "y"), ("default", "a")]:
        st.put(pod(name, n))
    assert [(r.namespace, r.name) for r in st.list("Pod")] == [
        ("b-ns", "y"), ("default", "a"), ("default", "z"),
    ]
    snapshot_of_list = st.list("Pod", "default")
    st.put(pod("m"))
    assert [r.name for r in snapshot_of_list] == ["a", "z"]  # unchanged tuple
    assert [r.name for r in st.list("Pod", "default")] == ["a", "m", "z"]
    assert st.list("Nothing") == ()


def test_history_keeps_whole_revisions_and_expires() -> None:
    s = StoreState(max_history=4)
    s.put(ns("default"))  # rev 1
    s.put(ns("t"))  # rev 2
    for i in range(4):
        s.put(pod(f"p{i}", "t"))  # rev 3..6
    assert s.history_size() == 4 and s.history_start == 2
    with pytest.raises(Expired, match="revision 1 is too old"):
        s.events_after(1)
    s.delete_namespace("t")  # rev 7, five events in one revision
    # The newest revision is always kept whole, even over the bound.
    assert s.history_size() == 5 and s.history_start == 6
    events, scanned = s.events_after(6)
    assert len(events) == 5 and scanned == 7
    assert s.events_after(7) == ([], 7)
    assert s.events_after(50) == ([], 50)


def test_events_after_filters_by_kind_and_limits_whole_revisions(st: StoreState) -> None:
    st.put(ns("t"))
    for i in range(5):
        st.put(pod(f"p{i}", "t"))
    st.put(Change("ConfigMap", "t", "c"))
    events, scanned = st.events_after(0, "Pod", limit=2)
    assert [e.record.name for e in events] == ["p0", "p1"] and scanned == 4
    events, scanned = st.events_after(0, "ConfigMap")
    assert [e.record.name for e in events] == ["c"] and scanned == st.revision
    st.delete_namespace("t")
    events, scanned = st.events_after(st.revision - 1, limit=1)
    assert len(events) == 7 and scanned == st.revision  # a revision is never split


def test_snapshot_round_trip_through_pickle(st: StoreState) -> None:
    st.put(ns("t"))
    st.put(pod("a", "t", labels=(("app", "web"),), unique=("tok",)), request_id="r1")
    st.put(pod("b"))
    st.delete(("Pod", "default", "b"))
    with pytest.raises(AlreadyExists):
        st.put(pod("a", "t"), MUST_NOT_EXIST, request_id="r2")
    st.set_member(MemberInfo("cp1", "127.0.0.1:1", "127.0.0.1:2"))
    blob = pickle.dumps(st.snapshot())
    other = StoreState()
    other.put(ns("junk"))
    other.restore(pickle.loads(blob))
    assert other.digest() == st.digest()
    assert other.revision == st.revision
    assert other.list("Pod") == st.list("Pod")
    assert other.events_after(0) == st.events_after(0)
    assert other.members() == st.members()
    assert other.unique_holder("tok") == ("Pod", "t", "a")
    assert other.get(("Namespace", "", "junk")) is None
    # Dedup survives the snapshot: results and errors.
    assert other.put(pod("zzz"), request_id="r1").name == "a"
    with pytest.raises(AlreadyExists):
        other.put(pod("a", "t"), MUST_NOT_EXIST, request_id="r2")
    # Both go on identically.
    for s in (st, other):
        s.put(pod("c"))
    assert other.digest() == st.digest()


def test_restore_refuses_unknown_versions() -> None:
    with pytest.raises(Invalid, match="unsupported store snapshot version 99"):
        StoreState().restore({"version": 99})


def test_digest_depends_on_content_and_not_on_history() -> None:
    a, b = StoreState(), StoreState()
    for s in (a, b):
        s.put(ns("default"))
    a.put(pod("x", data=b"1"))
    b.put(pod("x", data=b"2"))
    assert a.digest()[0] == b.digest()[0] and a.digest()[1] != b.digest()[1]
    c, d = StoreState(max_history=1), StoreState()
    for s in (c, d):
        s.put(ns("default"))
        s.put(pod("x"))
    assert c.digest() == d.digest()
