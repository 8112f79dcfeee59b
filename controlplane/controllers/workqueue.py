"""A work queue of object keys with client-go's guarantees.

- A key waiting in the queue is held once, however often it is added (events
  on one object collapse into one sync).
- A key being processed is never handed to a second worker; adding it meanwhile
  marks it dirty, and it is queued again when the first worker is `done`.
- `add_after` queues a key later (minReadySeconds, deadlines); `retry` queues it
  after a per-key exponential back-off, `forget` resets that back-off.

Threads model: every method is safe from any thread; one daemon timer thread
moves delayed keys into the queue. `get` blocks until a key is ready or the
queue shuts down (then it returns None).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Hashable

from .clock import SYSTEM, Clock


class WorkQueue:
    def __init__(self, name: str, *, clock: Clock = SYSTEM, base_delay: float = 0.005,
                 max_delay: float = 30.0) -> None:
        self.name = name
        self._clock = clock
        lock = threading.Lock()
        # Workers wait on _cond, the timer thread on _timer_cond: one lock, so a
        # notify meant for a worker can never be swallowed by the timer thread.
        self._cond = threading.Condition(lock)
        self._timer_cond = threading.Condition(lock)
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._base = base_delay
        self._max = max_delay
        self._shutdown = False
        self._timer = threading.Thread(target=self._timer_loop, name=f"wq-{name}", daemon=True)
        self._timer.start()

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            heapq.heappush(self._delayed, (self._clock.monotonic() + delay, next(self._seq), key))
            self._timer_cond.notify()

    def retry(self, key: Hashable) -> float:
        """Queue again after this key's back-off; returns the delay chosen."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self._base * (2**n), self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self, timeout: float | None = None) -> Hashable | None:
        with self._cond:
            while not self._queue and not self._shutdown:
                if not self._cond.wait(timeout):
                    return None
            if self._shutdown:
                return None
            key = self._queue.popleft()
            self._processing.add(key)
            self._dirty.discard(key)
            return key

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
            self._timer_cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def pending(self) -> int:
        """Keys queued, delayed or being processed (tests use it to wait for quiet)."""
        with self._cond:
            return len(self._queue) + len(self._processing) + len(self._delayed)

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._shutdown:
                now = self._clock.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    if key not in self._dirty:
                        self._dirty.add(key)
                        if key not in self._processing:
                            self._queue.append(key)
                            self._cond.notify()
                wait = self._delayed[0][0] - now if self._delayed else None
                # A FakeClock does not wake us: poll now and then while keys wait.
                self._timer_cond.wait(min(wait, 0.05) if wait is not None else None)
