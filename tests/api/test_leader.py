"""The leader-only services hook: started on gaining leadership (after the system
namespaces exist), stopped on losing it, and a flap collapses to the last state."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controlplane import leader as leadermod
from controlplane.api.handler import Handler
from controlplane.leader import LeaderContext, LeaderSupervisor
from controlplane.store.memory import MemoryStore


class FakeService:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Any:
    store = MemoryStore()
    handler = Handler(store)
    log: list[str] = []
    built = threading.Event()

    def services(ctx: LeaderContext) -> list[FakeService]:
        # The namespaces exist before any leader-only service starts.
        assert ctx.store.get(("Namespace", "", "corral-system")) is not None
        built.set()
        return [FakeService("scheduler", log), FakeService("controllers", log)]

    monkeypatch.setattr(leadermod, "leader_services", services)
    ctx = LeaderContext(config=None, handler=handler, store=store,  # type: ignore[arg-type]
                        endpoints=())
    sup = LeaderSupervisor(handler, lambda: ctx)
    sup.start()
    yield sup, log, store
    sup.stop()
    store.close()


def test_start_on_gain_stop_on_loss(setup: Any) -> None:
    sup, log, _ = setup
    sup.on_change(True)
    wait_for(lambda: len(log) == 2)
    assert log == ["start scheduler", "start controllers"]
    sup.on_change(False)
    wait_for(lambda: len(log) == 4)
    assert log[2:] == ["stop controllers", "stop scheduler"]


def test_stop_of_the_replica_stops_services(setup: Any) -> None:
    sup, log, _ = setup
    sup.on_change(True)
    wait_for(lambda: len(log) == 2)
    sup.stop()
    assert log[2:] == ["stop controllers", "stop scheduler"]
