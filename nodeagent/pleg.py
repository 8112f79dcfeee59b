"""What runs: the pod lifecycle event generator (kubelet's PLEG), Podman-driven.

Podman's event stream is the fast path: a container that dies, starts or is
removed (also from outside: `podman kill`) triggers a relist at once. A periodic
relist every `relist_period` is the safety net for missed events (a stream cut
while the service restarts). A relist is one list call; `generate_events` (pure)
diffs it against the previous one and the pods whose containers changed are
handed to `on_pod_changed`.

Threads model: one thread reads the event stream; one thread runs relists
(periodic, or requested by an event or by a pod worker). `snapshot_after(t)`
gives a worker a view taken after time t, waiting for (or running) a relist,
so a worker that just started a container sees it (kubelet's
GetNewerThan). Relists coalesce: many requests during one relist cost one more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from nodeagent.records import EXITED, ContainerRecord
from nodeagent.runtime import Runtime, RuntimeFailure

log = logging.getLogger(__name__)

RELIST_ON = {"died", "start", "remove", "oom", "restart", "pause", "unpause", "create"}


def pid_alive(pid: int) -> bool:
    """Is the process there (the agent sees the host's PIDs, as Podman reports them)?"""
    return os.path.exists(f"/proc/{pid}")


def generate_events(old: Mapping[str, ContainerRecord], new: Mapping[str, ContainerRecord]
                    ) -> set[str]:
    """Pod uids whose containers appeared, disappeared or changed state between two relists."""
    changed: set[str] = set()
    for cid, rec in new.items():
        before = old.get(cid)
        if before is None or before.fingerprint() != rec.fingerprint():
            changed.add(rec.pod_uid)
    for cid, rec in old.items():
        if cid not in new:
            changed.add(rec.pod_uid)
    return changed


class Pleg:
    def __init__(self, runtime: Runtime, *, relist_period: float,
                 on_pod_changed: Callable[[str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._runtime = runtime
        self.relist_period = relist_period
        self._on_pod_changed = on_pod_changed
        self._clock = clock
        self._cond = threading.Condition()
        self._records: dict[str, ContainerRecord] = {}
        # container id -> when we found it dead behind Podman's back
        self._dead: dict[str, float] = {}
        self._snapshot_at = 0.0  # start time of the relist that made _records
        self._relisting = False
        self._requested = False
        self.last_success = 0.0
        self.relists = 0
        self.events_seen = 0
        self._stop = threading.Event()
        self._close_stream: Callable[[], None] | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self.relist()
        for target, name in ((self._relist_loop, "pleg-relist"), (self._event_loop, "pleg-events")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        close = self._close_stream
        if close is not None:
            try:
                close()
            except Exception:
                pass
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=3)

    def healthy(self) -> bool:
        return self._clock() - self.last_success < 3 * self.relist_period + 10

    # ---- reads ------------------------------------------------------------------------
    def records(self) -> list[ContainerRecord]:
        with self._cond:
            return list(self._records.values())

    def pod_records(self, uid: str) -> list[ContainerRecord]:
        with self._cond:
            return [r for r in self._records.values() if r.pod_uid == uid]

    def snapshot_after(self, t: float, timeout: float = 60.0) -> Sequence[ContainerRecord]:
        """All records, from a relist that started at or after `t`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._snapshot_at >= t:
                    return list(self._records.values())
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise RuntimeFailure("no fresh container list from podman")
                if not self._relisting:
                    break
                self._cond.wait(timeout=1.0)
        self.relist()
        with self._cond:
            return list(self._records.values())

    def request_relist(self) -> None:
        with self._cond:
            self._requested = True
            self._cond.notify_all()

    # ---- relist -------------------------------------------------------------------------
    def _confirm(self, rec: ContainerRecord) -> ContainerRecord:
        """A container Podman calls running whose process and conmon are both gone died
        with its conmon (a power loss, a kill of every process of the host): nobody
        will ever report its exit, and Podman 4.3 keeps it "running" even with
        `ps --sync`. Report it exited (137, as SIGKILL) from the moment we noticed."""
        if not (rec.running and rec.pid):
            return rec
        dead_at = self._dead.get(rec.id)
        if dead_at is None:
            if pid_alive(rec.pid):
                return rec
            try:
                state = self._runtime.inspect(rec.id).get("State", {})
            except RuntimeFailure:
                return rec
            conmon = int(state.get("ConmonPid") or 0)
            if str(state.get("Status", "")).lower() != "running" or \
                    (conmon and pid_alive(conmon)):
                return rec  # conmon is alive and will report the exit itself
            dead_at = self._clock()
            self._dead[rec.id] = dead_at
            log.warning("container %s of pod %s/%s died with its conmon; reporting it exited",
                        rec.podman_name, rec.pod_namespace, rec.pod_name)
        return replace(rec, state=EXITED, exit_code=137, finished_at=dead_at, pid=0)

    def relist(self) -> None:
        with self._cond:
            while self._relisting:
                self._cond.wait(timeout=1.0)
            self._relisting = True
            self._requested = False
        started = self._clock()
        changed: set[str] = set()
        try:
            fresh = {r.id: self._confirm(r) for r in self._runtime.list_containers()}
        except RuntimeFailure as err:
            log.warning("relist failed: %s", err)
            with self._cond:
                self._relisting = False
                self._cond.notify_all()
            raise
        with self._cond:
            changed = generate_events(self._records, fresh)
            self._records = fresh
            self._dead = {cid: t for cid, t in self._dead.items() if cid in fresh}
            self._snapshot_at = started
            self._relisting = False
            self.last_success = self._clock()
            self.relists += 1
            self._cond.notify_all()
        for uid in changed:
            try:
                self._on_pod_changed(uid)
            except Exception:
                log.exception("pod change handler failed for %s", uid)

    def _relist_loop(self) -> None:
        next_periodic = self._clock() + self.relist_period
        while not self._stop.is_set():
            with self._cond:
                if not self._requested:
                    self._cond.wait(timeout=max(0.0, next_periodic - self._clock()))
                if self._stop.is_set():
                    return
                due = self._requested or self._clock() >= next_periodic
            if not due:
                continue
            try:
                self.relist()
            except RuntimeFailure:
                self._stop.wait(1.0)
            next_periodic = self._clock() + self.relist_period

    def _event_loop(self) -> None:
        since: float | None = None
        while not self._stop.is_set():
            try:
                items, close = self._runtime.events(since)
            except RuntimeFailure as err:
                log.debug("event stream: %s", err)
                self._stop.wait(1.0)
                continue
            self._close_stream = close
            try:
                for ev in items:
                    if self._stop.is_set():
                        break
                    self.events_seen += 1
                    since = float(ev.get("time") or self._clock()) - 1
                    if ev.get("Type", ev.get("type")) != "container":
                        continue
                    status = ev.get("status") or ev.get("Action") or ""
                    if status in RELIST_ON:
                        self.request_relist()
            except Exception as err:  # the stream broke: reconnect, relist covers the gap
                if not self._stop.is_set():
                    log.debug("event stream ended: %s", err)
            finally:
                self._close_stream = None
                try:
                    close()
                except Exception:
                    pass
            if not self._stop.is_set():
                self.request_relist()
                self._stop.wait(0.5)
