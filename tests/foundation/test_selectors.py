from __future__ import annotations

import pytest

from corral.errors import Invalid
from corral.selectors import (
    from_match_labels,
    from_proto,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from corral.v1 import meta_pb2

WEB = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", WEB, True),
        ("app==web", WEB, True),
        ("app=db", WEB, False),
        ("app!=db", WEB, True),
        ("missing!=x", WEB, True),  # != matches objects without the key
        ("tier in (front,back)", WEB, True),
        ("tier in (back)", WEB, False),
        ("tier notin (back)", WEB, True),
        ("missing notin (x)", WEB, True),
        ("app", WEB, True),
        ("!app", WEB, False),
        ("!canary", WEB, True),
        ("version>2", WEB, True),
        ("version<2", WEB, False),
        ("app=web,tier in (front),!canary", WEB, True),
        ("app=web,canary", WEB, False),
        ("", WEB, True),
        ("app.kubernetes.io/name=x", {"app.kubernetes.io/name": "x"}, True),
    ],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    "text", ["a in ()", "a b", "=x", "a,", "a in (x", "version>x", "-bad=x", "a=b c"]
)
def test_bad_label_selectors_are_refused(text: str) -> None:
    with pytest.raises(Invalid) as err:
        parse_label_selector(text)
    assert "labelSelector" in str(err.value)


def test_selector_round_trips_through_str() -> None:
    sel = parse_label_selector("app=web,tier in (a,b),!canary,x")
    assert parse_label_selector(str(sel)) == sel


def test_label_selector_message() -> None:
    msg = meta_pb2.LabelSelector(
        match_labels={"app": "web"},
        match_expressions=[meta_pb2.LabelSelectorRequirement(key="tier", operator="In",
                                                              values=["front"])],
    )
    sel = from_proto(msg)
    assert sel.matches(WEB)
    assert not sel.matches({"app": "web", "tier": "back"})
    bad = meta_pb2.LabelSelector(
        match_expressions=[meta_pb2.LabelSelectorRequirement(key="a", operator="Has")]
    )
    with pytest.raises(Invalid) as err:
        from_proto(bad, "spec.selector")
    assert err.value.field == "spec.selector.matchExpressions[0].operator"
    empty_in = meta_pb2.LabelSelector(
        match_expressions=[meta_pb2.LabelSelectorRequirement(key="a", operator="In")]
    )
    with pytest.raises(Invalid):
        from_proto(empty_in)


def test_map_selectors() -> None:
    assert from_match_labels({"app": "web"}).matches(WEB)
    assert labels_match({"app": "web"}, WEB)
    assert not labels_match({"app": "web", "x": "y"}, WEB)


def test_field_selectors() -> None:
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Running")
    assert sel.matches({"spec.nodeName": "n1", "status.phase": "Pending"})
    assert not sel.matches({"spec.nodeName": "n1", "status.phase": "Running"})
    assert not sel.matches({"spec.nodeName": "n2"})
    assert parse_field_selector("spec.nodeName=").matches({})
    with pytest.raises(Invalid):
        parse_field_selector("spec.nodeName")
