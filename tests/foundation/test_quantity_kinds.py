from __future__ import annotations

import pytest

from corral import kinds, quantity
from corral.errors import Invalid
from corral.v1 import api_pb2, core_pb2


@pytest.mark.parametrize(
    ("text", "millis"),
    [("500m", 500), ("1", 1000), (2, 2000), ("0.5", 500), ("1.5", 1500), ("100u", 1),
     ("1k", 10**6)],
)
def test_cpu(text: str | int, millis: int) -> None:
    assert quantity.cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "n"),
    [("128Mi", 128 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("100", 100), ("1e3", 1000),
     ("1.5Gi", 3 * 2**29), ("64k", 64000)],
)
def test_bytes(text: str, n: int) -> None:
    assert quantity.bytes_of(text) == n


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Mi", "-1"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(Invalid):
        quantity.bytes_of(text)


def test_formatting() -> None:
    assert quantity.format_cpu(1500) == "1500m"
    assert quantity.format_cpu(2000) == "2"
    assert quantity.format_bytes(128 * 2**20) == "128Mi"
    assert quantity.format_bytes(1000) == "1000"


def test_kind_names_resolve() -> None:
    for name in ("po", "pods", "pod", "Pod", "POD"):
        assert kinds.resolve(name).kind == "Pod"
    assert kinds.resolve("deploy").kind == "Deployment"
    assert kinds.resolve("deployments.apps").kind == "Deployment"
    assert kinds.resolve("sts").api_version == "apps/v1"
    assert kinds.resolve("ns").namespaced is False
    with pytest.raises(Invalid):
        kinds.resolve("widgets")


def test_wrap_unwrap_round_trip() -> None:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = "web"
    pod.metadata.namespace = "default"
    obj = kinds.wrap(pod)
    assert isinstance(obj, api_pb2.Object) and obj.WhichOneof("kind") == "pod"
    info, back = kinds.unwrap(obj)
    assert info.kind == "Pod" and back == pod
    assert kinds.key_of(pod) == ("Pod", "default", "web")
    assert kinds.describe(pod) == "Pod default/web"
    with pytest.raises(Invalid):
        kinds.unwrap(api_pb2.Object())


def test_every_kind_has_an_object_field() -> None:
    fields = {f.name for f in api_pb2.Object.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert fields == {k.field for k in kinds.KINDS}
    for k in kinds.KINDS:
        msg = k.new()
        assert msg.kind == k.kind and msg.api_version == k.api_version
