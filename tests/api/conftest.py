"""Fixtures for the API layer's unit tests: a MemoryStore and a Handler over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from controlplane.api.handler import Handler
from controlplane.api.settings import ApiSettings
from controlplane.store.memory import MemoryStore
from corral import kinds


def obj(manifest: dict[str, Any]) -> Any:
    """A kind message from a Kubernetes-style dict (as a manifest reads)."""
    info = kinds.by_kind(manifest["kind"])
    msg = info.message()
    json_format.ParseDict(manifest, msg)
    return msg


def pod(name: str = "web", ns: str = "default", **spec: Any) -> Any:
    body = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    body.update(spec)
    return obj({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
                "spec": body})


def deployment(name: str = "web", ns: str = "default", **spec: Any) -> Any:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
    }
    body.update(spec)
    return obj({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns}, "spec": body})


def service(name: str = "web", ns: str = "default", **spec: Any) -> Any:
    body: dict[str, Any] = {"selector": {"app": name}, "ports": [{"port": 80}]}
    body.update(spec)
    return obj({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns}, "spec": body})


def config_map(name: str = "cfg", ns: str = "default", **data: str) -> Any:
    return obj({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns}, "data": data})


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    s = MemoryStore()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(bookmark_interval=0.2)


@pytest.fixture
def h(store: MemoryStore, settings: ApiSettings) -> Handler:
    handler = Handler(store, settings)
    handler.ensure_namespaces()
    return handler
