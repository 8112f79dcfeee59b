"""Crash-loop back-off per (pod uid, container name), as kubelet's.

Pure and clock-free: every method takes the times it needs. Not thread-safe on
its own; the pod worker owning a pod is the only caller for that pod's keys,
and a lock guards the shared dict.

The sequence matches kubelet: the first crash restarts at once; each later crash
waits base, 2*base, 4*base ... up to max after the container finished; a
container that ran for at least `reset_after` before it crashed starts the
sequence again. Entries idle for 2*max are forgotten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass
class _Entry:
    delay: float
    last_finish: float


class Backoff:
    def __init__(self, base: float, maximum: float, reset_after: float) -> None:
        if base <= 0 or maximum < base:
            raise ValueError("back-off needs 0 < base <= max")
        self.base = base
        self.max = maximum
        self.reset_after = reset_after
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()

    def remaining(self, key: Key, finished_at: float, ran_for: float, now: float) -> float:
        """Seconds to wait before restarting a container that finished at
        `finished_at` after running `ran_for` seconds (0: restart now)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return 0.0
            if ran_for >= self.reset_after or now - entry.last_finish > 2 * self.max:
                del self._entries[key]
                return 0.0
            return max(0.0, finished_at + entry.delay - now)

    def restarted(self, key: Key, finished_at: float) -> None:
        """Record a restart of the container that finished at `finished_at`:
        the next crash waits longer."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(self.base, finished_at)
            elif finished_at != entry.last_finish:
                self._entries[key] = _Entry(min(entry.delay * 2, self.max), finished_at)

    def delay(self, key: Key) -> float:
        """The wait the next crash of `key` would get (0 when none is recorded)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.delay if entry else 0.0

    def reset(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def forget_pod(self, pod_uid: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == pod_uid]:
                del self._entries[key]
