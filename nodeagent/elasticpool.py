"""A thread pool whose idle threads end: for calls that come in bursts.

concurrent.futures.ThreadPoolExecutor starts a thread per submit while none is
idle, up to max_workers, and keeps every thread until shutdown. The agent's pool
for Podman calls grows to its 32 threads in a burst of pod starts and then sits
mostly idle (a few calls every 10 s), each idle thread still holding its stack
pages, its frame stack and its malloc cache (lean.py, BENCHMARKS.md section 3).
Here a thread that found no work for `idle_exit` seconds ends; the next burst
starts threads again. Otherwise it behaves like ThreadPoolExecutor: a call runs
at once on an idle thread or a new one while fewer than `max_workers` run, and
waits in FIFO order beyond that; `submit` returns a concurrent.futures.Future.

Threads model: any thread may submit; one lock guards the queue, the idle stack
and the counts; calls run outside it. Threads are daemons (a call blocked on Podman does
not hold up the agent's exit; the agent survives being killed anyway).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class _Slot:
    """An idle thread waiting for a call handed to it."""

    __slots__ = ("event", "item")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.item: tuple[Future[Any], Callable[[], Any]] | None = None


class ElasticPool:
    def __init__(self, max_workers: int, *, idle_exit: float = 60.0,
                 name: str = "pool") -> None:
        if max_workers < 1:
            raise ValueError(f"ElasticPool {name}: max_workers must be >= 1, got {max_workers}")
        if idle_exit <= 0:
            raise ValueError(f"ElasticPool {name}: idle_exit must be > 0, got {idle_exit}")
        self.max_workers = max_workers
        self.idle_exit = idle_exit
        self.name = name
        self._lock = threading.Lock()
        self._work: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        # Most recently idle last: a call goes to the thread that went idle last, so
        # the others stay idle and end (with a FIFO hand-out, as Condition.notify
        # does, a call every few seconds would keep every thread alive).
        self._idle: list[_Slot] = []
        self._threads = 0
        self._started = 0
        self._shutdown = False

    @property
    def threads(self) -> int:
        with self._lock:
            return self._threads

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self.name}: cannot schedule new calls after shutdown")
            if self._idle:
                slot = self._idle.pop()
                slot.item = (fut, fn)
                slot.event.set()
            elif self._threads < self.max_workers:
                self._threads += 1
                self._started += 1
                threading.Thread(target=self._run, args=((fut, fn),),
                                 name=f"{self.name}_{self._started}", daemon=True).start()
            else:
                self._work.append((fut, fn))
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; queued ones still run unless `cancel_futures`; idle threads
        end. `wait` is accepted for ThreadPoolExecutor's signature; threads are never
        joined."""
        del wait
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for fut, _ in self._work:
                    fut.cancel()
                self._work.clear()
            for slot in self._idle:
                slot.event.set()  # item None: end
            self._idle.clear()

    def _run(self, first: tuple[Future[Any], Callable[[], Any]]) -> None:
        item: tuple[Future[Any], Callable[[], Any]] | None = first
        slot = _Slot()
        while True:
            if item is not None:
                self._call(*item)
                item = None
            with self._lock:
                if self._work:
                    item = self._work.popleft()
                    continue
                if self._shutdown:
                    self._threads -= 1
                    return
                slot.event.clear()
                slot.item = None
                self._idle.append(slot)
            slot.event.wait(self.idle_exit)
            with self._lock:
                # A call handed over between the timeout and this lock still runs.
                item, slot.item = slot.item, None
                if item is None:
                    if slot in self._idle:
                        self._idle.remove(slot)
                    self._threads -= 1
                    return

    @staticmethod
    def _call(fut: Future[Any], fn: Callable[[], Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except BaseException as err:  # handed to the caller, as ThreadPoolExecutor does
            fut.set_exception(err)
        else:
            fut.set_result(result)
