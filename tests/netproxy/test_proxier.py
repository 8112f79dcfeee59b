"""The sync loop without the kernel: an iptables stand-in backed by the restore
interpreter of test_payload.py. What is decided here: when to restore (never
for nothing), full vs partial, rate limiting, waiting for the informers, retry
after a failure, UDP conntrack cleanup, metrics. test_kernel.py runs the same
loop against the real kernel.
"""

from __future__ import annotations

import threading
import time

from netproxy.iptables import IptablesError
from netproxy.metrics import Metrics
from netproxy.model import service_state
from netproxy.proxier import Proxier, stale_udp_flows
from netproxy.rules import NodeFacts
from netproxy.tracker import ChangeTracker
from tests.netproxy.objects import endpoints, port, svc
from tests.netproxy.test_payload import FakeKernel

FACTS = NodeFacts(cluster_cidr="10.244.0.0/16", dns_ip="10.96.0.10",
                  dns_target="10.250.0.11:53")


class FakeIptables:
    def __init__(self) -> None:
        self.kernel = FakeKernel()
        self.restores: list[str] = []
        self.saves = 0
        self.fail_next = False
        self.fail_always = False
        self.attempts = 0
        self.cleared: list[tuple[str, str]] = []

    def save(self):
        self.saves += 1
        return self.kernel.saved()

    def restore(self, payload: str) -> None:
        self.attempts += 1
        if self.fail_always:
            raise IptablesError("iptables-restore --noflush: broken for good")
        if self.fail_next:
            self.fail_next = False
            raise IptablesError("iptables-restore --noflush: line 3 failed")
        self.kernel.restore(payload)
        self.restores.append(payload)

    def clear_udp_flows(self, orig_dst: str, dst_nat: str = "") -> None:
        self.cleared.append((orig_dst, dst_nat))


def make(min_sync: float = 0.0):
    tracker = ChangeTracker()
    ipt = FakeIptables()
    metrics = Metrics()
    return Proxier(tracker, ipt, FACTS, metrics=metrics,  # type: ignore[arg-type]
                   min_sync_period=min_sync), tracker, ipt, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_no_restore_when_nothing_changed():
    proxier, tracker, ipt, metrics = make()
    tracker.service_updated(svc("web", "10.96.0.20"))
    tracker.endpoints_updated(endpoints("web", ready=["10.244.1.5"]))
    assert proxier.sync(full=True).result == "applied"
    assert len(ipt.restores) == 1
    assert proxier.sync(full=False).result == "unchanged"
    assert proxier.sync(full=True).result == "unchanged"
    # Changes that do not change rules (labels, not-ready churn) cost no restore.
    s = svc("web", "10.96.0.20")
    s.metadata.labels["tier"] = "front"
    tracker.service_updated(s)
    tracker.endpoints_updated(endpoints("web", ready=["10.244.1.5"], not_ready=["10.244.1.9"]))
    assert not tracker.pending()
    assert proxier.sync(full=False).result == "unchanged"
    assert len(ipt.restores) == 1
    assert sample(metrics, "corral_netproxy_syncs_total", kind="full", result="unchanged") == 1
    assert sample(metrics, "corral_netproxy_syncs_total", kind="full", result="applied") == 1
    assert sample(metrics, "corral_netproxy_sync_duration_seconds_count", kind="partial") == 2
    assert sample(metrics, "corral_netproxy_services") == 1
    assert sample(metrics, "corral_netproxy_endpoints") == 1


def test_partial_sync_writes_only_the_changed_service():
    proxier, tracker, ipt, metrics = make()
    for i in range(3):
        tracker.service_updated(svc(f"s{i}", f"10.96.0.{20 + i}"))
        tracker.endpoints_updated(endpoints(f"s{i}", ready=["10.244.1.5"]))
    proxier.sync(full=True)
    tracker.endpoints_updated(endpoints("s1", ready=["10.244.1.6"]))
    res = proxier.sync(full=False)
    assert (res.kind, res.result, res.services) == ("partial", "applied", 1)
    assert "default/s0" not in ipt.restores[-1] and "default/s2" not in ipt.restores[-1]
    assert sample(metrics, "corral_netproxy_rules_written_total", kind="partial") == \
        res.payload.rules > 0
    assert sample(metrics, "corral_netproxy_last_sync_rules") == res.payload.rules


def test_a_service_holding_the_dns_address_gets_no_rules():
    proxier, tracker, ipt, _ = make()
    tracker.service_updated(svc("dns", "10.96.0.10", namespace="corral-system",
                                ports=[port("dns", 53, protocol="UDP")]))
    proxier.sync(full=True)
    text = ipt.restores[-1]
    assert "corral-system/dns" not in text
    assert "-d 10.96.0.10/32 -p udp -m comment --comment \"corral cluster DNS\"" in text


def test_failure_makes_the_next_sync_full_and_it_repairs():
    proxier, tracker, ipt, metrics = make()
    tracker.service_updated(svc("web", "10.96.0.20"))
    tracker.endpoints_updated(endpoints("web", ready=["10.244.1.5"]))
    proxier.sync(full=True)
    assert not proxier.needs_full
    tracker.endpoints_updated(endpoints("web", ready=["10.244.1.6"]))
    ipt.fail_next = True
    res = proxier.sync(full=False)
    assert res.result == "failed" and "line 3" in res.error
    assert proxier.needs_full
    assert sample(metrics, "corral_netproxy_syncs_total", kind="partial", result="failed") == 1
    saves = ipt.saves
    res = proxier.sync(full=proxier.needs_full)
    assert (res.kind, res.result) == ("full", "applied") and ipt.saves == saves + 1
    assert "10.244.1.6:8080" in ipt.restores[-1]


def test_udp_conntrack_cleanup_after_changes():
    udp = [port("dns", 53, protocol="UDP")]
    proxier, tracker, ipt, _ = make()
    tracker.service_updated(svc("d", "10.96.0.53", ports=udp))
    tracker.endpoints_updated(endpoints("d", ports=[("dns", 5353, "UDP")]))
    proxier.sync(full=True)
    assert ipt.cleared == []  # no endpoints yet: nothing to forget
    tracker.endpoints_updated(endpoints("d", ready=["10.244.1.5", "10.244.1.6"],
                                        ports=[("dns", 5353, "UDP")]))
    proxier.sync(full=False)
    assert ipt.cleared == [("10.96.0.53", "")]  # flows that met the REJECT
    tracker.endpoints_updated(endpoints("d", ready=["10.244.1.6"], ports=[("dns", 5353, "UDP")]))
    proxier.sync(full=False)
    assert ipt.cleared[-1] == ("10.96.0.53", "10.244.1.5")


def test_stale_udp_flows_cases():
    def st(ip, ready, proto="UDP"):
        return service_state(svc("d", ip, ports=[port("dns", 53, protocol=proto)]),
                             endpoints("d", ready=ready, ports=[("dns", 5353, proto)]))

    a = st("10.96.0.53", ["10.244.1.5"])
    assert stale_udp_flows(None, a) == [("10.96.0.53", "")]
    assert stale_udp_flows(a, None) == [("10.96.0.53", "10.244.1.5")]
    assert stale_udp_flows(a, a) == []
    moved = st("10.96.0.54", ["10.244.1.5"])
    assert stale_udp_flows(a, moved) == [("10.96.0.53", "10.244.1.5"), ("10.96.0.54", "")]
    assert stale_udp_flows(st("10.96.0.53", ["10.244.1.5"], "TCP"), None) == []


def test_loop_waits_for_informers_rate_limits_and_retries():
    proxier, tracker, ipt, _ = make(min_sync=0.2)
    ready = threading.Event()
    stop = threading.Event()
    loop = threading.Thread(target=proxier.run, args=(stop.is_set, ready.is_set), daemon=True)
    loop.start()
    try:
        tracker.service_updated(svc("web", "10.96.0.20"))
        time.sleep(0.3)
        assert ipt.restores == [] and ipt.saves == 0  # not synced yet: kernel untouched
        ready.set()
        deadline = time.monotonic() + 5
        while not ipt.restores:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = len(ipt.restores)
        # A burst of 20 endpoint changes within ~0.1 s becomes very few restores.
        for i in range(20):
            tracker.endpoints_updated(endpoints("web", ready=[f"10.244.1.{i + 1}"]))
            time.sleep(0.005)
        time.sleep(0.6)
        assert 1 <= len(ipt.restores) - first <= 3
        assert "10.244.1.20:8080" in ipt.restores[-1]
        # A failed restore is retried (as a full sync) without any new event.
        ipt.fail_next = True
        tracker.endpoints_updated(endpoints("web", ready=["10.244.9.9"]))
        deadline = time.monotonic() + 5
        while "10.244.9.9:8080" not in (ipt.restores[-1] if ipt.restores else ""):
            assert time.monotonic() < deadline, "no retry after a failure"
            time.sleep(0.02)
        assert proxier.last is not None and proxier.last.kind == "full"
    finally:
        stop.set()
        tracker.kick()
        loop.join(timeout=5)
    assert not loop.is_alive()


def test_a_kernel_that_keeps_refusing_is_retried_with_back_off():
    proxier, tracker, ipt, _ = make(min_sync=0.0)
    ipt.fail_always = True
    stop = threading.Event()
    loop = threading.Thread(target=proxier.run, args=(stop.is_set, lambda: True), daemon=True)
    loop.start()
    try:
        tracker.service_updated(svc("web", "10.96.0.20"))
        end = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < end:  # a steady stream of changes
            i += 1
            tracker.endpoints_updated(endpoints("web", ready=[f"10.244.1.{i % 200 + 1}"]))
            time.sleep(0.02)
        # Attempts at 0 s, ~1 s, ~3 s (back-off 1 s, 2 s, ...), not one per change.
        assert 1 <= ipt.attempts <= 3, ipt.attempts
        assert proxier.needs_full
    finally:
        stop.set()
        tracker.kick()
        loop.join(timeout=5)
