"""The sync loop: tracked changes -> rendered rules -> one restore per sync.

Threads model: `run` is the sync thread's body, the only caller of `sync`; the
change tracker is fed by informer threads. Nothing else touches `AppliedState`.

Each sync is one of:
- full (at start, every `full_sync_period`, and after any failure): render
  every Service, read back what the kernel holds, write only the chains that
  differ; nothing differing means no restore (a restarted proxy finds its
  rules in place and writes nothing);
- partial (otherwise): render only the Services whose state changed and write
  only their chains, editing the shared chains rule by rule; no change, no
  restore.
Syncs are at least `min_sync_period` apart, so a burst of events becomes one
restore. Each sync logs one line and updates the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from netproxy.iptables import Iptables, IptablesError
from netproxy.metrics import Metrics
from netproxy.model import ServiceState
from netproxy.payload import AppliedState, Payload, full_payload
from netproxy.rules import NodeFacts, ServiceRules, render_service
from netproxy.tracker import ChangeTracker, Key

log = logging.getLogger(__name__)

MAX_RETRY = 30.0


@dataclass(frozen=True)
class SyncResult:
    kind: str  # "full" or "partial"
    result: str  # "applied", "unchanged" or "failed"
    services: int  # Services rendered
    payload: Payload
    seconds: float
    error: str = ""


def stale_udp_flows(old: ServiceState | None,
                    new: ServiceState | None) -> list[tuple[str, str]]:
    """(VIP, endpoint IP or "") whose UDP conntrack entries must go after a change.

    An endpoint that left keeps receiving a UDP "connection" its conntrack entry
    pins; a VIP that had no endpoint has entries for flows that met no DNAT.
    kube-proxy clears both; so do we.
    """
    out: set[tuple[str, str]] = set()
    before = {} if old is None else {(p.name, p.protocol): p for p in old.ports}
    after = {} if new is None else {(p.name, p.protocol): p for p in new.ports}
    moved = old is None or new is None or old.cluster_ip != new.cluster_ip
    if new is not None:
        for key, p in after.items():
            was = before.get(key)
            if p.protocol == "udp" and p.endpoints and (moved or was is None or not was.endpoints):
                out.add((new.cluster_ip, ""))
    if old is not None:
        for key, p in before.items():
            now = after.get(key)
            kept = {e.ip for e in now.endpoints} if now is not None and not moved else set()
            if p.protocol == "udp":
                out.update((old.cluster_ip, e.ip) for e in p.endpoints if e.ip not in kept)
    return sorted(out)


class Proxier:
    def __init__(self, tracker: ChangeTracker, iptables: Iptables, node: NodeFacts, *,
                 metrics: Metrics | None = None, min_sync_period: float = 0.1,
                 full_sync_period: float = 60.0, failed_payload_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = tracker
        self.iptables = iptables
        self.node = node
        self.metrics = metrics or Metrics()
        self.min_sync_period = min_sync_period
        self.full_sync_period = full_sync_period
        self.failed_payload_path = failed_payload_path
        self.clock = clock
        self.applied = AppliedState(node)
        self._states: dict[Key, ServiceState] = {}
        self._need_full = True
        self._next_full = 0.0
        self._retry_at = 0.0
        self._retry = 1.0
        self._last_sync = float("-inf")
        self._warned_dns: set[Key] = set()
        self.last: SyncResult | None = None

    @property
    def needs_full(self) -> bool:
        """True until a full sync succeeded, and again after any failure."""
        return self._need_full

    # ---- one sync ---------------------------------------------------------------------
    def _render(self, states: Mapping[Key, ServiceState | None]) -> dict[Key, ServiceRules]:
        out = {}
        for key, s in states.items():
            if s is not None and self.node.dns_ip and s.cluster_ip == self.node.dns_ip:
                # The cluster DNS VIP is this host's DNS server (rules.fixed_head_tail):
                # a Service holding that address must not send it elsewhere or REJECT it.
                if key not in self._warned_dns:
                    self._warned_dns.add(key)
                    log.info("service %s/%s holds the cluster DNS address %s: answered by "
                             "the node's DNS server, no rules of its own", *key, s.cluster_ip)
                s = None
            out[key] = render_service(s, self.node)
        return out

    def sync(self, full: bool) -> SyncResult:
        """One sync; never raises for kernel errors (they make the result "failed")."""
        kind = "full" if full else "partial"
        start = self.clock()
        payload = Payload("", 0, 0, 0)
        states: Mapping[Key, ServiceState | None]
        changed: dict[Key, ServiceState | None]
        try:
            if full:
                states = self.tracker.snapshot()
                rendered = self._render(states)
                desired = self.applied.reset(rendered)
                # reset() rebuilt the applied state optimistically; on failure the
                # next sync is full again and rebuilds it from the kernel.
                self._need_full = True
                current = self.iptables.save()
                payload = full_payload(desired, current)
                if not payload.empty:
                    self.iptables.restore(payload.text)
                changed = {k: s for k, s in states.items() if self._states.get(k) != s}
                changed.update({k: None for k in self._states if k not in states})
            else:
                states = self.tracker.take_changes()
                plan = self.applied.plan(self._render(states))
                payload = plan.payload
                if not payload.empty:
                    self.iptables.restore(payload.text)
                self.applied.commit(plan)
                changed = dict(states)
        except (IptablesError, ValueError, KeyError, IndexError) as err:
            # ValueError/KeyError/IndexError: the applied state no longer matches
            # what a partial payload assumed; a full sync starts over from the kernel.
            self._fail(payload, str(err))
            return self._done(kind, "failed", 0, payload, start, str(err))
        self._need_full = False
        self._retry = 1.0
        if full:
            self._next_full = self.clock() + self.full_sync_period
        for key, new in changed.items():
            for vip, ep in stale_udp_flows(self._states.get(key), new):
                self.iptables.clear_udp_flows(vip, ep)
            if new is None:
                self._states.pop(key, None)
            else:
                self._states[key] = new
        result = "unchanged" if payload.empty else "applied"
        return self._done(kind, result, len(states), payload, start)

    def _fail(self, payload: Payload, error: str) -> None:
        self._need_full = True
        self._retry_at = self.clock() + self._retry
        self._retry = min(self._retry * 2, MAX_RETRY)
        if self.failed_payload_path is not None and payload.text:
            try:
                self.failed_payload_path.write_text(payload.text)
            except OSError as err:
                log.warning("could not keep the failed payload in %s: %s",
                            self.failed_payload_path, err)

    def _done(self, kind: str, result: str, services: int, payload: Payload, start: float,
              error: str = "") -> SyncResult:
        seconds = self.clock() - start
        self._last_sync = self.clock()
        res = SyncResult(kind, result, services, payload, seconds, error)
        self.last = res
        m = self.metrics
        m.sync_duration.labels(kind).observe(seconds)
        m.syncs.labels(kind, result).inc()
        n_services, n_endpoints = self.tracker.counts()
        m.services.set(n_services)
        m.endpoints.set(n_endpoints)
        if result == "applied":
            m.rules_written.labels(kind).inc(payload.rules)
            m.last_sync_rules.set(payload.rules)
        if result != "failed":
            m.last_sync_timestamp.set(time.time())
            log.info("sync %s: %s; %d services rendered, %d rules in %d chains written, "
                     "%d chains deleted, %.3f s", kind, result, services, payload.rules,
                     payload.chains, payload.deleted, seconds)
        else:
            log.warning("sync %s failed after %.3f s: %s; full sync in %.0f s%s", kind,
                        seconds, error, self._retry_at - self.clock(),
                        f" (payload kept in {self.failed_payload_path})"
                        if self.failed_payload_path and payload.text else "")
        return res

    # ---- the loop ---------------------------------------------------------------------
    def run(self, stopped: Callable[[], bool], ready: Callable[[], bool]) -> None:
        """Sync until `stopped()`; nothing is written before `ready()` (informers synced),
        so a proxy that cannot reach the control plane leaves the kernel's rules alone."""
        while not stopped():
            now = self.clock()
            if self._need_full:
                # After a failure, changes wait for the retry too: a kernel that keeps
                # refusing must not meet a full sync per incoming event.
                if now < self._retry_at:
                    self.tracker.wait(min(self._retry_at - now, 1.0))
                    continue
            elif now < self._next_full and not self.tracker.pending():
                self.tracker.wait(min(self._next_full - now, 1.0))
                continue
            if not ready():
                self.tracker.wait(0.1)
                continue
            gap = self._last_sync + self.min_sync_period - now
            if gap > 0:
                time.sleep(gap)
                continue
            self.sync(full=self._need_full or now >= self._next_full)
