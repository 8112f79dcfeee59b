"""Fencing: a node cut off from the control plane stops its identity pods on its own.

The control plane force-deletes a silent node's pods `node_monitor_grace_period`
+ `pod_eviction_timeout` (10 + 20 = 30 s by default) after it last saw a
heartbeat of the node, and a StatefulSet then creates the pod of the same
identity (`db-0`) elsewhere. The old one must be stopped by then, or two pods of
one identity run at once; nobody can tell a partitioned node to stop it, so the
node does it itself (DESIGN: "fence first, then force-delete").

The clock: `last_heartbeat()` is the time (monotonic) at which the last
heartbeat write that succeeded (a Lease renewal or a Node status write) was
*sent*. The control plane can only have seen it later (it is seen when it
commits, after it was sent), so silence measured here is never shorter than
the control plane's. `after` seconds of it (default 20) fence the node: every
pod that carries an identity (owned by a StatefulSet) has its containers
stopped, with SIGKILL at most `grace` seconds (default 5) after SIGTERM, and
nothing of them is started while fenced. Other pods keep running: their
replacements elsewhere do not clash with them, and when the node is back the
agent removes whatever the store no longer binds to it.

The time budget, from the last heartbeat the control plane saw:

    after (20 s) + check period (0.5 s) + grace (5 s) + Podman's stop (< 1 s)
        < node_monitor_grace_period + pod_eviction_timeout (30 s)

Unfencing needs more than one heartbeat: the control plane may be about to
evict on a silence it measured before that heartbeat reached it. So once
heartbeats succeed again, `confirm()` (a linearizable read of the Node) must
show that the node lifecycle controller has heard of the node again (no
node.kubernetes.io/unreachable taint); and each identity pod's worker then reads
its pod again before starting anything (a pod force-deleted meanwhile is
cleaned up instead). `generation` counts fences, so a worker knows whether it
must read its pod again.

An agent that starts while cut off cannot register: it counts silence from its
own start (the last heartbeat was earlier still) and fences the identity
containers it finds on the host by their labels.

Pure: `carries_identity`, `Fence.check`. Threads model: one thread runs the
check every `period`; `on_change` (wake the workers) runs on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from corral.v1 import core_pb2

log = logging.getLogger(__name__)

IDENTITY_OWNERS = ("StatefulSet",)
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def carries_identity(pod: core_pb2.Pod) -> bool:
    """Pods of which two must never run at once: those of a StatefulSet."""
    return any(ref.kind in IDENTITY_OWNERS for ref in pod.metadata.owner_references)


def heard_of(node: core_pb2.Node) -> tuple[bool, str]:
    """Has the node lifecycle controller heard from this node since it went silent?"""
    if any(t.key == UNREACHABLE_TAINT for t in node.spec.taints):
        return False, f"node still carries the {UNREACHABLE_TAINT} taint"
    return True, ""


class Fence:
    def __init__(self, *, after: float, grace: float, enabled: bool,
                 last_heartbeat: Callable[[], float],
                 confirm: Callable[[], tuple[bool, str]],
                 on_change: Callable[[bool], None],
                 clock: Callable[[], float] = time.monotonic, period: float = 0.5) -> None:
        self.after = after
        self.grace = grace
        self.enabled = enabled
        self._last_heartbeat = last_heartbeat
        self._confirm = confirm
        self._on_change = on_change
        self._clock = clock
        self.period = period
        self._lock = threading.Lock()
        self._fenced = False
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiting_since = 0.0

    def state(self) -> tuple[bool, int]:
        """(fenced now, how many times the node was fenced so far)."""
        with self._lock:
            return self._fenced, self._generation

    @property
    def fenced(self) -> bool:
        return self.state()[0]

    def check(self) -> str:
        """One look; returns what changed (for the log), "" when nothing did."""
        if not self.enabled:
            return ""
        silent = self._clock() - self._last_heartbeat()
        with self._lock:
            fenced = self._fenced
        if not fenced:
            if silent < self.after:
                return ""
            with self._lock:
                self._fenced = True
                self._generation += 1
            self._waiting_since = 0.0
            return (f"fenced: no heartbeat acknowledged for {silent:.1f}s (fencing.after "
                    f"{self.after:g}s): stopping the pods that carry an identity")
        if silent >= self.after:
            return ""
        ok, why = self._confirm()
        if not ok:
            if not self._waiting_since:
                self._waiting_since = self._clock()
                log.info("heartbeats acknowledged again, still fenced: %s", why)
            return ""
        with self._lock:
            self._fenced = False
        return "unfenced: the control plane hears this node again"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                change = self.check()
            except Exception:
                log.exception("fence check failed")
                continue
            if change:
                (log.warning if self.fenced else log.info)("%s", change)
                try:
                    self._on_change(self.fenced)
                except Exception:
                    log.exception("fence: waking the pods failed")
