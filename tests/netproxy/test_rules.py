"""Rendering, without the kernel: golden rulesets per Service shape, and the
properties each shape promises (only ready endpoints, one jump per VIP:port,
stable chain names, uniform endpoint choice, REJECT without endpoints).

Golden files live in tests/netproxy/golden/; after a deliberate change of the
rule shape, regenerate them with NETPROXY_UPDATE_GOLDEN=1 and read the diff.
test_kernel.py checks that every shape here is what iptables-save prints back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from netproxy.model import ServiceState, service_state
from netproxy.rules import (
    FILTER,
    NAT,
    OWN_HASHED_CHAIN,
    NodeFacts,
    assemble,
    probability,
    render_service,
    sep_chain,
    svc_chain,
)
from tests.netproxy.objects import endpoints, port, svc

GOLDEN = Path(__file__).parent / "golden"
NODE = NodeFacts(cluster_cidr="10.244.0.0/16", dns_ip="10.96.0.10",
                 dns_target="10.250.0.11:53")


def state(service, eps=None) -> ServiceState:
    s = service_state(service, eps)
    assert s is not None
    return s


def ruleset_text(*states: ServiceState, node: NodeFacts = NODE) -> str:
    chains = assemble([render_service(s, node) for s in states], node)
    out = []
    for (table, chain), lines in sorted(chains.items()):
        out.append(f"# {table} {chain}")
        out.extend(lines)
    return "\n".join(out) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("NETPROXY_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with NETPROXY_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"rules differ from {path}"


def web(**kw):
    return svc("web", "10.96.0.20", **kw)


THREE = ["10.244.1.5", "10.244.2.5", "10.244.3.5"]


def test_cluster_ip_golden_and_only_ready_endpoints():
    s = state(web(), endpoints("web", ready=THREE, not_ready=["10.244.9.9"]))
    text = ruleset_text(s)
    check_golden("cluster_ip", text)
    assert "10.244.9.9" not in text
    # One jump per VIP:port, one SEP chain per ready endpoint, DNAT to each.
    assert text.count("-j CORRAL-SVC-") == 1
    for ip in THREE:
        assert f"-j DNAT --to-destination {ip}:8080" in text
        assert f"-s {ip}/32" in text  # hairpin: masquerade when a pod reaches itself


def test_node_port_golden():
    s = state(web(type="NodePort", ports=[port("http", 80, target=8080, node_port=30080)]),
              endpoints("web", ready=THREE[:2]))
    text = ruleset_text(s)
    check_golden("node_port", text)
    assert "--dport 30080 -j CORRAL-EXT-" in text
    assert "-m addrtype --dst-type LOCAL -j CORRAL-NODEPORTS" in text


def test_load_balancer_renders_as_node_port():
    ports = [port("http", 80, target=8080, node_port=30080)]
    eps = endpoints("web", ready=THREE[:2])
    lb = ruleset_text(state(web(type="LoadBalancer", ports=ports), eps))
    np = ruleset_text(state(web(type="NodePort", ports=ports), eps))
    assert lb == np


def test_session_affinity_golden():
    s = state(web(affinity=600), endpoints("web", ready=THREE[:2]))
    text = ruleset_text(s)
    check_golden("affinity", text)
    assert text.count("-m recent --rcheck --seconds 600 --reap") == 2
    assert text.count("-m recent --set") == 2
    default = ruleset_text(state(web(affinity=0), endpoints("web", ready=THREE[:2])))
    assert "--seconds 10800" in default  # Kubernetes' default timeout


def test_several_ports_udp_and_named_ports_golden():
    service = svc("dns", "10.96.0.53", namespace="kube", ports=[
        port("dns", 53, protocol="UDP", target="dns"),
        port("dns-tcp", 53, protocol="TCP", target="dns-tcp"),
        port("metrics", 9153, target=9153),
    ])
    eps = endpoints("dns", namespace="kube", ready=THREE[:2],
                    ports=[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP"), ("metrics", 9153)])
    text = ruleset_text(state(service, eps))
    check_golden("multi_port", text)
    assert "-p udp -m comment --comment \"kube/dns:dns cluster IP\" -m udp --dport 53" in text
    assert "-p tcp -m comment --comment \"kube/dns:dns-tcp cluster IP\" -m tcp --dport 53" in text
    assert "-j DNAT --to-destination 10.244.1.5:5353" in text  # named targetPort resolved
    assert "-j DNAT --to-destination 10.244.1.5:9153" in text
    assert text.count("-j CORRAL-SVC-") == 3


def test_no_endpoints_golden_rejects_in_filter():
    s = state(web(type="NodePort", ports=[port("http", 80, node_port=30080)]),
              endpoints("web", not_ready=["10.244.1.5"]))
    text = ruleset_text(s)
    check_golden("no_endpoints", text)
    rules = render_service(s, NODE)
    assert rules.chains == {}  # no nat chain of its own
    assert {(t, c) for t, c, _ in rules.shared} == {
        (FILTER, "CORRAL-SERVICES"), (FILTER, "CORRAL-EXTERNAL-SERVICES")}
    assert all("-j REJECT" in line for _, _, line in rules.shared)


def test_endpoints_match_service_ports_by_name_and_protocol():
    service = web(ports=[port("http", 80), port("admin", 81)])
    eps = endpoints("web", ready=["10.244.1.5"], ports=[("http", 8080), ("other", 9999)])
    s = state(service, eps)
    by_name = {p.name: p for p in s.ports}
    assert [str(e) for e in by_name["http"].endpoints] == ["10.244.1.5:8080"]
    assert by_name["admin"].endpoints == ()  # no endpoint port named admin
    udp_only = endpoints("web", ready=["10.244.1.5"], ports=[("http", 8080, "UDP")])
    assert state(web(), udp_only).ports[0].endpoints == ()


def test_services_without_rules():
    headless = svc("db", "None")
    external = svc("ext", "", type="ExternalName", external_name="example.org")
    unallocated = svc("new", "")
    for s in (headless, external, unallocated):
        assert service_state(s, endpoints(s.metadata.name, ready=THREE)) is None
    assert render_service(None, NODE).rule_count == 0


def test_state_ignores_what_does_not_change_rules():
    a = web()
    b = web()
    b.metadata.labels["x"] = "y"
    b.metadata.resource_version = "99"
    b.spec.selector["other"] = "z"
    eps = endpoints("web", ready=THREE)
    assert service_state(a, eps) == service_state(b, eps)
    reordered = endpoints("web", ready=list(reversed(THREE)))
    assert service_state(a, eps) == service_state(a, reordered)


def test_chain_names_are_stable_distinct_and_fit_iptables():
    names = {svc_chain("default/web:http", "tcp"), svc_chain("default/web:http", "udp"),
             svc_chain("default/web", "tcp"), svc_chain("other/web:http", "tcp"),
             sep_chain("default/web:http", "tcp", "10.244.1.5:8080"),
             sep_chain("default/web:http", "tcp", "10.244.1.6:8080")}
    assert len(names) == 6
    assert svc_chain("default/web:http", "tcp") == svc_chain("default/web:http", "tcp")
    for n in names:
        assert len(n) <= 28  # iptables' chain name limit
        assert OWN_HASHED_CHAIN.match(n)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100])
def test_endpoint_choice_is_uniform(n):
    """Rule i is taken with probability 1/(n-i) of what reaches it: each endpoint 1/n."""
    reach = 1.0
    shares = []
    for i in range(n):
        p = 1.0 if i == n - 1 else float(probability(n - i))
        shares.append(reach * p)
        reach *= 1 - p
    assert all(abs(s - 1 / n) < 1e-6 for s in shares)


def test_probability_prints_as_iptables_save_does():
    # xt_statistic keeps lround(2^31 p); iptables-save prints it with 11 decimals.
    assert probability(2) == "0.50000000000"
    assert probability(3) == "0.33333333349"
    assert probability(10) == "0.10000000009"


def test_dns_rules_and_fixed_chains():
    text = ruleset_text()
    assert ('-A CORRAL-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "corral cluster '
            'DNS" -m udp --dport 53 -j DNAT --to-destination 10.250.0.11:53') in text
    no_dns = ruleset_text(node=NodeFacts(cluster_cidr="10.244.0.0/16"))
    assert "cluster DNS" not in no_dns
    assert "--set-xmark 0x4000/0x4000" in text
    other_bit = ruleset_text(node=NodeFacts(cluster_cidr="10.244.0.0/16", masquerade_bit=5))
    assert "--set-xmark 0x20/0x20" in other_bit


def test_shared_chain_order_is_head_sorted_body_tail():
    states = [state(svc(f"s{i}", f"10.96.0.{100 - i}"), endpoints(f"s{i}", ready=THREE[:1]))
              for i in range(5)]
    chains = assemble([render_service(s, NODE) for s in states], NODE)
    lines = chains[(NAT, "CORRAL-SERVICES")]
    assert "cluster DNS" in lines[0] and "cluster DNS" in lines[1]
    assert "CORRAL-NODEPORTS" in lines[-1]
    body = lines[2:-1]
    assert list(body) == sorted(body) and len(body) == 5
    assert all(re.search(r"-j CORRAL-SVC-", line) for line in body)
