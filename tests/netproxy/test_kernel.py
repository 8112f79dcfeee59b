"""The proxy against the real kernel (iptables 1.8.9, nf_tables) in network
namespaces of the test's own; no cluster: the change tracker is fed API
messages directly, exactly as the informers feed it.

- every rule shape reads back from iptables-save exactly as rendered, so a
  second full sync writes nothing;
- partial syncs leave the kernel exactly as a full render;
- a restarted proxy (fresh state) writes nothing and iptables-save is identical;
- a failed restore changes nothing and the next sync is a full one that repairs;
- other components' chains and rules are never touched (also by --cleanup);
- traffic: VIP from the host and from a pod to endpoints on the bridge, spread
  over all endpoints; hairpin; ClientIP affinity; NodePort from outside;
  REJECT without endpoints; UDP; a removed endpoint stops getting traffic
  within 1 s through the running sync loop.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from netproxy.iptables import Iptables, parse_save
from netproxy.payload import AppliedState
from netproxy.proxier import Proxier
from netproxy.proxy import cleanup
from netproxy.rules import NodeFacts, is_own_chain, render_service
from netproxy.tracker import ChangeTracker
from tests.netproxy.netns import Node, sh
from tests.netproxy.objects import endpoints, port, svc

FACTS = NodeFacts(cluster_cidr="10.244.0.0/16", dns_ip="10.96.0.10",
                  dns_target="10.250.0.11:53")
PODS = ["10.244.1.10", "10.244.1.11", "10.244.1.12"]


@pytest.fixture
def node():
    with Node() as n:
        yield n


def proxier_for(node: Node, tmp_path: Path | None = None) -> tuple[Proxier, ChangeTracker]:
    tracker = ChangeTracker()
    ipt = Iptables(prefix=["ip", "netns", "exec", node.host])
    failed = tmp_path / "failed-payload.txt" if tmp_path else None
    return Proxier(tracker, ipt, FACTS, min_sync_period=0,
                   failed_payload_path=failed), tracker


def own_chains(node: Node) -> dict:
    saved = Iptables(prefix=["ip", "netns", "exec", node.host]).save()
    return {k: v for k, v in saved.items() if is_own_chain(*k)}


def desired(tracker: ChangeTracker) -> dict:
    return AppliedState(FACTS).reset(
        {k: render_service(s, FACTS) for k, s in tracker.snapshot().items()})


def every_shape(tracker: ChangeTracker) -> None:
    objs = [
        (svc("web", "10.96.0.20"), endpoints("web", ready=PODS, not_ready=["10.244.1.99"])),
        (svc("np", "10.96.0.21", type="NodePort",
             ports=[port("http", 80, target=8080, node_port=30080)]),
         endpoints("np", ready=PODS[:2])),
        (svc("sticky", "10.96.0.22", affinity=300), endpoints("sticky", ready=PODS)),
        (svc("multi", "10.96.0.23", ports=[port("dns", 53, protocol="UDP", target="dns"),
                                           port("http", 80, target=8080)]),
         endpoints("multi", ready=PODS[:1], ports=[("dns", 5353, "UDP"), ("http", 8080)])),
        (svc("empty", "10.96.0.24", type="NodePort", ports=[port("http", 80, node_port=30081)]),
         endpoints("empty", not_ready=PODS[:1])),
        (svc("headless", "None"), endpoints("headless", ready=PODS)),
    ]
    for s, e in objs:
        tracker.service_updated(s)
        tracker.endpoints_updated(e)


def test_every_shape_reads_back_as_rendered(node, tmp_path):
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    want = desired(tracker)
    first = proxier.sync(full=True)
    assert first.result == "applied", first.error
    assert own_chains(node) == want
    again = proxier.sync(full=True)
    assert again.result == "unchanged" and again.payload.empty


def test_partial_syncs_leave_the_kernel_as_a_full_render(node, tmp_path):
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    assert proxier.sync(full=True).result == "applied"
    changes = [
        lambda: tracker.endpoints_updated(endpoints("web", ready=PODS[1:])),
        lambda: tracker.service_updated(svc("new", "10.96.0.5", type="NodePort",
                                            ports=[port("http", 80, node_port=30090)])),
        lambda: tracker.endpoints_updated(endpoints("new", ready=PODS[:1])),
        lambda: tracker.service_deleted(svc("sticky", "10.96.0.22")),
        lambda: tracker.endpoints_updated(endpoints("empty", ready=PODS[:2])),
        lambda: tracker.endpoints_updated(endpoints("np", ready=[])),
    ]
    for change in changes:
        change()
        res = proxier.sync(full=False)
        assert (res.kind, res.result) == ("partial", "applied"), res.error
        assert own_chains(node) == desired(tracker)
    assert proxier.sync(full=False).result == "unchanged"  # nothing pending
    assert proxier.sync(full=True).result == "unchanged"  # and nothing differs


def test_restart_writes_nothing_and_leaves_iptables_save_identical(node, tmp_path):
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    proxier.sync(full=True)
    tracker.endpoints_updated(endpoints("web", ready=PODS[:2]))  # state reached by a partial
    proxier.sync(full=False)
    before = node.save()
    fresh, tracker2 = proxier_for(node, tmp_path)
    every_shape(tracker2)
    tracker2.endpoints_updated(endpoints("web", ready=PODS[:2]))
    res = fresh.sync(full=True)
    assert res.result == "unchanged" and res.payload.empty
    assert node.save() == before


def test_failed_restore_changes_nothing_and_next_sync_is_full(node, tmp_path):
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    proxier.sync(full=True)
    # Someone removes one of our jumps behind our back: the partial payload that
    # deletes that Service's jump by its text is refused as a whole.
    web_jump = next(line for line in own_chains(node)[("nat", "CORRAL-SERVICES")]
                    if "default/web:http cluster IP" in line)
    sh("ip", "netns", "exec", node.host, "iptables", "-t", "nat", "-D",
       *shlex.split(web_jump)[1:])
    tampered = own_chains(node)
    tracker.service_deleted(svc("web", "10.96.0.20"))
    tracker.endpoints_updated(endpoints("np", ready=PODS))
    res = proxier.sync(full=False)
    assert res.result == "failed" and "iptables-restore" in res.error
    assert own_chains(node) == tampered  # nothing of the refused payload landed
    assert proxier.needs_full
    assert (tmp_path / "failed-payload.txt").read_text() == res.payload.text
    repair = proxier.sync(full=proxier.needs_full)
    assert (repair.kind, repair.result) == ("full", "applied")
    assert own_chains(node) == desired(tracker)


def test_other_components_rules_are_never_touched(node, tmp_path):
    ns = ["ip", "netns", "exec", node.host, "iptables"]
    sh(*ns, "-t", "nat", "-N", "CORRAL-AGENT-MASQ")
    sh(*ns, "-t", "nat", "-A", "CORRAL-AGENT-MASQ", "-s", "10.244.0.0/16", "!", "-d",
       "10.244.0.0/16", "-j", "MASQUERADE")
    sh(*ns, "-t", "nat", "-A", "POSTROUTING", "-j", "CORRAL-AGENT-MASQ")
    sh(*ns, "-t", "nat", "-N", "KUBE-SVC-AAAAAAAAAAAAAAAA")
    sh(*ns, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    sh(*ns, "-t", "nat", "-N", "CORRAL-SEP-AAAAAAAAAAAAAAAA")  # stale of ours: goes
    others = {k: v for k, v in parse_save(
        sh("ip", "netns", "exec", node.host, "iptables-save").stdout).items()
        if not is_own_chain(*k)}
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    assert proxier.sync(full=True).payload.deleted == 1

    def foreign_now() -> dict:
        saved = parse_save(sh("ip", "netns", "exec", node.host, "iptables-save").stdout)
        return {k: tuple(r for r in v if "corral service" not in r and "corral postrouting"
                         not in r and "corral externally" not in r)
                for k, v in saved.items() if not is_own_chain(*k)}

    assert foreign_now() == others
    removed = cleanup(Iptables(prefix=["ip", "netns", "exec", node.host]))
    assert removed > 5
    assert own_chains(node) == {}
    saved = parse_save(sh("ip", "netns", "exec", node.host, "iptables-save").stdout)
    assert {k: v for k, v in saved.items() if not is_own_chain(*k)} == others


@pytest.mark.slow
def test_traffic_through_vips_node_ports_hairpin_affinity_reject_and_udp(node, tmp_path):
    names = {}
    for i, ip in enumerate(PODS):
        ns = node.add_pod(ip)
        names[ip] = f"p{i + 1}"
        node.start_http(ns, names[ip])
        node.start_udp_echo(ns, names[ip])
    client = node.add_pod("10.244.1.20")
    proxier, tracker = proxier_for(node, tmp_path)
    every_shape(tracker)
    tracker.service_updated(svc("self", "10.96.0.30"))
    tracker.endpoints_updated(endpoints("self", ready=PODS[:1]))
    stop = threading.Event()
    loop = threading.Thread(target=proxier.run, args=(stop.is_set, lambda: True), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while proxier.last is None or proxier.last.result == "failed":
            assert time.monotonic() < deadline, proxier.last
            time.sleep(0.05)

        # From a pod and from the host itself: all three endpoints answer over 60 calls.
        for where in (client, node.host):
            seen = Counter(node.get(where, "http://10.96.0.20/")[1] for _ in range(60))
            assert set(seen) == {"p1", "p2", "p3"}, (where, seen)

        # Hairpin: a pod reaching its own Service through the VIP.
        assert node.get(node.pods[PODS[0]], "http://10.96.0.30/") == (True, "p1")

        # ClientIP affinity: every call from one client lands on one endpoint.
        sticky = {node.get(client, "http://10.96.0.22/")[1] for _ in range(15)}
        assert len(sticky) == 1 and sticky <= {"p1", "p2", "p3"}

        # NodePort on the host's address, from a machine outside the cluster network.
        seen = {node.get(node.outside, f"http://{node.host_ip}:30080/")[1] for _ in range(20)}
        assert seen == {"p1", "p2"}

        # No ready endpoint: refused at once (REJECT), not a timeout.
        start = time.monotonic()
        ok, err = node.get(client, "http://10.96.0.24/")
        assert not ok and "refused" in err.lower() and time.monotonic() - start < 2
        ok, err = node.get(node.outside, f"http://{node.host_ip}:30081/")
        assert not ok and "refused" in err.lower()

        # UDP through a VIP, the answer carries the endpoint's name.
        assert node.udp(client, "10.96.0.23", 53).startswith("p1 ")

        # An endpoint leaves: the running loop rewrites the rules, within 1 s no call
        # reaches it.
        tracker.endpoints_updated(endpoints("web", ready=PODS[1:]))
        start = time.monotonic()
        while own_chains(node) != desired(tracker):
            assert time.monotonic() - start < 1.0, "rules not rewritten within 1 s"
            time.sleep(0.02)
        seen = Counter(node.get(client, "http://10.96.0.20/")[1] for _ in range(30))
        assert set(seen) == {"p2", "p3"}, seen
    finally:
        stop.set()
        tracker.kick()
        loop.join(timeout=10)
