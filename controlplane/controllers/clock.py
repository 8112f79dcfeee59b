"""Clocks passed into every controller, so the pure parts run on a fake clock in tests.

Two readings, because they answer different questions:
- `time()` is wall-clock seconds since the epoch: it is compared with timestamps
  stored in objects (a condition's lastUpdateTime, a taint's timeAdded), which
  other processes wrote with their own wall clocks.
- `monotonic()` measures what this process observed itself (how long since we
  last saw a node's lease change): immune to wall-clock steps.

Threads model: SystemClock is stateless; FakeClock is guarded by a lock so a test
thread may advance it while controller threads read it.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()


class FakeClock:
    """A clock that moves only when told to (both readings move together)."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._mono += seconds


SYSTEM = SystemClock()


def to_timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    whole = int(seconds)
    ts.seconds = whole
    ts.nanos = round((seconds - whole) * 1e9) % 1_000_000_000
    return ts


def from_timestamp(ts: Timestamp) -> float:
    """Seconds since the epoch; 0.0 for an unset timestamp."""
    return ts.seconds + ts.nanos / 1e9


def is_set(ts: Timestamp) -> bool:
    return ts.seconds != 0 or ts.nanos != 0
