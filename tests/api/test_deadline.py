"""A write never outlives its caller's deadline (the partition case of issue 3:
a write retried after the client gave up landed once the partition healed)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from controlplane.api.deadline import caller_deadline, write_timeout
from controlplane.api.handler import Handler
from controlplane.store.memory import MemoryStore
from corral.errors import Timeout
from tests.api.conftest import config_map


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers the timeout of every put."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float] = []

    def put(self, change: Any, **kw: Any) -> Any:
        self.timeouts.append(kw.get("timeout", 0.0))
        return super().put(change, **kw)


def test_store_writes_are_bounded_by_the_callers_deadline() -> None:
    store = RecordingStore()
    handler = Handler(store)
    try:
        handler.ensure_namespaces()
        store.timeouts.clear()
        with caller_deadline(0.8):
            handler.create(config_map("a"))
        assert store.timeouts and max(store.timeouts) <= 0.8
        store.timeouts.clear()
        handler.create(config_map("b"))  # no caller deadline: the configured timeout
        assert store.timeouts == [handler.settings.write_timeout]
    finally:
        handler.close()
        store.close()


def test_a_spent_deadline_writes_nothing() -> None:
    store = RecordingStore()
    handler = Handler(store)
    try:
        handler.ensure_namespaces()
        before = store.revision
        with caller_deadline(0.01):
            time.sleep(0.02)
            with pytest.raises(Timeout, match="nothing was written"):
                handler.create(config_map("late"))
        assert store.revision == before
        assert store.get(("ConfigMap", "default", "late")) is None
    finally:
        handler.close()
        store.close()


def test_without_a_deadline_the_configured_timeout_applies() -> None:
    assert write_timeout(7.0) == 7.0
    with caller_deadline(None):
        assert write_timeout(7.0) == 7.0
    with caller_deadline(100.0):
        assert write_timeout(7.0) == 7.0
