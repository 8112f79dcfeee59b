"""A keyed work queue, as client-go's: a key queued many times is handled once,
and never by two workers at once (a key added while it is being handled is
handled again afterwards).

Threads model: `workers` threads call `handler(key)`; any thread may `add`.
`add_after` uses one timer thread. A handler that raises is logged and retried
after `retry_delay`.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(self, name: str, handler: Callable[[Hashable], None], *, workers: int = 4,
                 retry_delay: float = 1.0) -> None:
        self.name = name
        self._handler = handler
        self._workers = workers
        self.retry_delay = retry_delay
        # Workers and the timer thread wait on this one condition, so every wake-up is
        # notify_all: a plain notify could wake the timer instead of a worker.
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._timers: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._stop = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._timer_loop, name=f"{self.name}-timer", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def add(self, key: Hashable) -> None:
        with self._cond:
            if key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._queue.append(key)
                self._cond.notify_all()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, key))
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._processing

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                key = self._queue.popleft()
                self._dirty.discard(key)
                self._processing.add(key)
            failed = False
            try:
                self._handler(key)
            except Exception:
                log.exception("%s: handling %s failed; retrying in %.1fs", self.name, key,
                              self.retry_delay)
                failed = True
            with self._cond:
                self._processing.discard(key)
                if key in self._dirty:
                    self._queue.append(key)
                    self._cond.notify_all()
            if failed:
                self.add_after(key, self.retry_delay)

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, key = heapq.heappop(self._timers)
                    if key not in self._dirty:
                        self._dirty.add(key)
                        if key not in self._processing:
                            self._queue.append(key)
                            self._cond.notify_all()
                wait = self._timers[0][0] - now if self._timers else None
                self._cond.wait(timeout=wait)
