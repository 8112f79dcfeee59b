"""Cluster DNS: answers from an index filled by hand, then over real UDP and TCP
sockets on loopback (the server, truncation, several queries per TCP
connection, forwarding to an upstream that is itself a DnsServer on loopback).
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from netproxy.dnsindex import DnsIndex
from netproxy.dnsresolver import ClusterResolver, dashed_ip, reverse_ip
from netproxy.dnsserver import DnsServer, UpstreamForwarder, resolv_conf_nameservers
from netproxy.metrics import Metrics
from tests.netproxy.objects import endpoints, pod, port, svc

Z = "cluster.local"


def filled_index() -> DnsIndex:
    idx = DnsIndex()
    idx.service_updated(svc("web", "10.96.0.20", ports=[port("http", 80), port("", 81)]))
    idx.endpoints_updated(endpoints("web", ready=["10.244.1.5"], ports=[("http", 8080)]))
    idx.service_updated(svc("db", "None", namespace="data",
                            ports=[port("pg", 5432), port("dns", 53, protocol="UDP")]))
    idx.endpoints_updated(endpoints(
        "db", namespace="data", ready=["10.244.2.7", "10.244.1.6"], not_ready=["10.244.3.9"],
        ports=[("pg", 5432), ("dns", 5353, "UDP")],
        hostnames={"10.244.1.6": "db-0", "10.244.2.7": "db-1"}))
    idx.service_updated(svc("ext", "", type="ExternalName",
                            external_name="web.default.svc.cluster.local"))
    idx.service_updated(svc("far", "", type="ExternalName", external_name="example.org."))
    idx.pod_updated(pod("client", "10.244.1.9"))
    idx.pod_updated(pod("done", "10.244.1.10", phase="Succeeded"))
    return idx


class FakeUpstream:
    def __init__(self, ip: str = "93.184.216.34") -> None:
        self.ip = ip
        self.asked: list[str] = []

    def forward(self, packet: bytes, tcp: bool) -> bytes | None:
        q = DNSRecord.parse(packet)
        self.asked.append(str(q.q.qname))
        reply = q.reply()
        reply.add_answer(RR(q.q.qname, QTYPE.A, ttl=30, rdata=A(self.ip)))
        return reply.pack()


@pytest.fixture
def resolver() -> ClusterResolver:
    return ClusterResolver(filled_index(), upstream=FakeUpstream())


def ask(r: ClusterResolver, name: str, qtype: str = "A") -> DNSRecord:
    raw = r.handle(DNSRecord.question(name, qtype).pack(), False)
    assert raw is not None
    return DNSRecord.parse(raw)


def rdata(reply: DNSRecord, qtype: str | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr
                  if qtype is None or QTYPE[rr.rtype] == qtype)


def test_service_names(resolver):
    for name in (f"web.default.svc.{Z}", f"WEB.Default.svc.{Z}."):
        reply = ask(resolver, name)
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
        assert rdata(reply) == ["10.96.0.20"]
        assert str(reply.rr[0].rname).lower() == f"web.default.svc.{Z}."
        assert reply.rr[0].ttl == 5
    # A name that exists has no AAAA: NODATA with the SOA, never NXDOMAIN.
    aaaa = ask(resolver, f"web.default.svc.{Z}", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
    assert QTYPE[aaaa.auth[0].rtype] == "SOA"


def test_headless_returns_ready_endpoints_and_statefulset_names(resolver):
    reply = ask(resolver, f"db.data.svc.{Z}")
    assert rdata(reply) == ["10.244.1.6", "10.244.2.7"]  # not the not-ready 10.244.3.9
    assert rdata(ask(resolver, f"db-0.db.data.svc.{Z}")) == ["10.244.1.6"]
    assert rdata(ask(resolver, f"db-1.db.data.svc.{Z}")) == ["10.244.2.7"]
    assert rdata(ask(resolver, f"10-244-2-7.db.data.svc.{Z}")) == ["10.244.2.7"]
    assert ask(resolver, f"db-2.db.data.svc.{Z}").header.rcode == RCODE.NXDOMAIN
    # Only headless Services have per-endpoint names.
    assert ask(resolver, f"x.web.default.svc.{Z}").header.rcode == RCODE.NXDOMAIN


def test_srv_for_named_ports(resolver):
    reply = ask(resolver, f"_http._tcp.web.default.svc.{Z}", "SRV")
    assert rdata(reply) == [f"0 100 80 web.default.svc.{Z}."]
    assert [str(rr.rdata) for rr in reply.ar] == ["10.96.0.20"]
    headless = ask(resolver, f"_pg._tcp.db.data.svc.{Z}", "SRV")
    assert rdata(headless) == [f"0 50 5432 db-0.db.data.svc.{Z}.",
                               f"0 50 5432 db-1.db.data.svc.{Z}."]
    assert sorted(str(rr.rdata) for rr in headless.ar) == ["10.244.1.6", "10.244.2.7"]
    udp = ask(resolver, f"_dns._udp.db.data.svc.{Z}", "SRV")
    assert {str(rr.rdata).split()[2] for rr in udp.rr} == {"5353"}
    assert ask(resolver, f"_dns._tcp.db.data.svc.{Z}", "SRV").header.rcode == RCODE.NXDOMAIN
    assert ask(resolver, f"_nope._tcp.web.default.svc.{Z}", "SRV").header.rcode == RCODE.NXDOMAIN
    level = ask(resolver, f"_tcp.web.default.svc.{Z}", "SRV")
    assert level.header.rcode == RCODE.NOERROR and not level.rr


def test_external_name_is_a_cname_chased_when_possible(resolver):
    inside = ask(resolver, f"ext.default.svc.{Z}")
    assert rdata(inside, "CNAME") == [f"web.default.svc.{Z}."]
    assert rdata(inside, "A") == ["10.96.0.20"]
    outside = ask(resolver, f"far.default.svc.{Z}")
    assert rdata(outside, "CNAME") == ["example.org."]
    assert rdata(outside, "A") == ["93.184.216.34"]
    only = ask(resolver, f"far.default.svc.{Z}", "CNAME")
    assert rdata(only) == ["example.org."]


def test_pod_names_verified_insecure_disabled():
    idx = filled_index()
    verified = ClusterResolver(idx)
    assert rdata(ask(verified, f"10-244-1-9.default.pod.{Z}")) == ["10.244.1.9"]
    assert ask(verified, f"10-244-1-8.default.pod.{Z}").header.rcode == RCODE.NXDOMAIN
    assert ask(verified, f"10-244-1-9.other.pod.{Z}").header.rcode == RCODE.NXDOMAIN
    assert ask(verified, f"10-244-1-10.default.pod.{Z}").header.rcode == RCODE.NXDOMAIN
    insecure = ClusterResolver(idx, pods="insecure")
    assert rdata(ask(insecure, f"10-244-1-8.other.pod.{Z}")) == ["10.244.1.8"]
    assert ask(insecure, f"10-244-1.other.pod.{Z}").header.rcode == RCODE.NXDOMAIN
    disabled = ClusterResolver(idx, pods="disabled")
    assert ask(disabled, f"10-244-1-9.default.pod.{Z}").header.rcode == RCODE.NXDOMAIN
    with pytest.raises(ValueError, match="pods"):
        ClusterResolver(idx, pods="maybe")


def test_names_that_do_not_exist_are_nxdomain(resolver):
    for name in (f"nope.default.svc.{Z}", f"web.nope.svc.{Z}", f"nope.svc.{Z}",
                 f"a.b.c.web.default.svc.{Z}", f"web.default.{Z}", f"example.com.default.svc.{Z}",
                 f"x.{Z}"):
        reply = ask(resolver, name)
        assert reply.header.rcode == RCODE.NXDOMAIN, name
        assert QTYPE[reply.auth[0].rtype] == "SOA"
    # Levels that exist (zone apex, svc, a namespace with Services) are NODATA.
    for name in (Z, f"svc.{Z}", f"default.svc.{Z}", f"pod.{Z}", f"default.pod.{Z}"):
        reply = ask(resolver, name)
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr, name
    soa = ask(resolver, Z, "SOA")
    assert QTYPE[soa.rr[0].rtype] == "SOA"


def test_reverse_lookups(resolver):
    assert rdata(ask(resolver, "20.0.96.10.in-addr.arpa", "PTR")) == [f"web.default.svc.{Z}."]
    assert rdata(ask(resolver, "6.1.244.10.in-addr.arpa", "PTR")) == [f"db-0.db.data.svc.{Z}."]
    assert rdata(ask(resolver, "9.1.244.10.in-addr.arpa", "PTR")) == [
        f"10-244-1-9.default.pod.{Z}."]
    assert ask(resolver, "99.0.96.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    # Outside the cluster's ranges: forwarded.
    up = resolver.upstream
    ask(resolver, "1.1.168.192.in-addr.arpa", "PTR")
    assert up.asked[-1] == "1.1.168.192.in-addr.arpa."


def test_other_names_are_forwarded_and_failures_are_servfail():
    up = FakeUpstream()
    r = ClusterResolver(filled_index(), upstream=up)
    reply = ask(r, "example.com")
    assert rdata(reply) == ["93.184.216.34"] and up.asked == ["example.com."]
    lonely = ClusterResolver(filled_index(), upstream=None)
    assert ask(lonely, "example.com").header.rcode == RCODE.SERVFAIL


def test_servfail_until_synced_and_index_follows_changes():
    idx = filled_index()
    synced = False
    r = ClusterResolver(idx, ready=lambda: synced)
    assert ask(r, f"web.default.svc.{Z}").header.rcode == RCODE.SERVFAIL
    synced = True
    assert rdata(ask(r, f"web.default.svc.{Z}")) == ["10.96.0.20"]
    idx.service_deleted(svc("web", "10.96.0.20"))
    assert ask(r, f"web.default.svc.{Z}").header.rcode == RCODE.NXDOMAIN
    assert ask(r, f"default.svc.{Z}").header.rcode == RCODE.NOERROR  # ext, far remain
    for name in ("ext", "far"):
        idx.service_deleted(svc(name, ""))
    assert ask(r, f"default.svc.{Z}").header.rcode == RCODE.NXDOMAIN  # last Service gone
    idx.endpoints_updated(endpoints("db", namespace="data", ready=["10.244.5.5"]))
    assert rdata(ask(r, f"db.data.svc.{Z}")) == ["10.244.5.5"]
    idx.pod_deleted(pod("client", "10.244.1.9"))
    assert ask(r, f"10-244-1-9.default.pod.{Z}").header.rcode == RCODE.NXDOMAIN


def test_malformed_and_unsupported_queries(resolver):
    assert resolver.handle(b"\x00\x01garbage", False) is None
    notify = DNSRecord.question(f"web.default.svc.{Z}")
    notify.header.opcode = 4
    assert DNSRecord.parse(resolver.handle(notify.pack(), False)).header.rcode == RCODE.NOTIMP


def test_helpers():
    assert dashed_ip("10-244-1-5") == "10.244.1.5"
    assert dashed_ip("10-244-1") is None and dashed_ip("a-b-c-d") is None
    assert reverse_ip("5.1.244.10.in-addr.arpa") == "10.244.1.5"
    assert reverse_ip("1.10.in-addr.arpa") is None


def test_resolv_conf_nameservers(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("search x\nnameserver 10.96.0.10\nnameserver 192.0.2.1\n# c\nnameserver 1.1.1.1\n")
    assert resolv_conf_nameservers(f, exclude=["10.96.0.10"]) == ["192.0.2.1", "1.1.1.1"]
    assert resolv_conf_nameservers(tmp_path / "missing") == []


# ---- over real sockets ---------------------------------------------------------------


@pytest.fixture
def upstream_server():
    fake = FakeUpstream("192.0.2.44")
    server = DnsServer(lambda data, tcp: fake.forward(data, tcp), "127.0.0.1", 0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(upstream_server):
    idx = filled_index()
    many = endpoints("big", namespace="data", ready=[f"10.244.9.{i}" for i in range(1, 61)])
    idx.service_updated(svc("big", "None", namespace="data"))
    idx.endpoints_updated(many)
    metrics = Metrics()
    r = ClusterResolver(idx, upstream=UpstreamForwarder([f"127.0.0.1:{upstream_server.port}"],
                                                        timeout=1.0), metrics=metrics)
    s = DnsServer(r.handle, "127.0.0.1", 0).start()
    s.metrics = metrics  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.stop()


def udp_query(port: int, name: str, qtype: str = "A") -> DNSRecord:
    raw = DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=3)
    return DNSRecord.parse(raw)


def test_udp_and_tcp_on_loopback(server):
    assert rdata(udp_query(server.port, f"web.default.svc.{Z}")) == ["10.96.0.20"]
    raw = DNSRecord.question(f"db.data.svc.{Z}").send("127.0.0.1", server.port, tcp=True,
                                                        timeout=3)
    assert rdata(DNSRecord.parse(raw)) == ["10.244.1.6", "10.244.2.7"]


def test_several_queries_on_one_tcp_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        for name, want in ((f"web.default.svc.{Z}", ["10.96.0.20"]),
                           (f"db-0.db.data.svc.{Z}", ["10.244.1.6"])):
            q = DNSRecord.question(name).pack()
            s.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", s.recv(2))[0]
            data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
            assert rdata(DNSRecord.parse(data)) == want


def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(server):
    udp = udp_query(server.port, f"big.data.svc.{Z}")
    assert udp.header.tc == 1 and len(udp.rr) < 60
    raw = DNSRecord.question(f"big.data.svc.{Z}").send("127.0.0.1", server.port, tcp=True,
                                                        timeout=3)
    assert len(DNSRecord.parse(raw).rr) == 60


def test_forwarding_through_a_real_upstream(server, upstream_server):
    reply = udp_query(server.port, "example.com")
    assert rdata(reply) == ["192.0.2.44"]
    forwarded = server.metrics.dns_requests.labels("udp", "forward", "NOERROR")._value.get()
    assert forwarded == 1


def test_dead_upstream_gives_servfail_in_bounded_time():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))  # receives, never answers
        r = ClusterResolver(filled_index(), upstream=UpstreamForwarder(
            [f"127.0.0.1:{hole.getsockname()[1]}"], timeout=0.3))
        s = DnsServer(r.handle, "127.0.0.1", 0).start()
        try:
            start = time.monotonic()
            reply = udp_query(s.port, "example.com")
            assert reply.header.rcode == RCODE.SERVFAIL
            assert time.monotonic() - start < 2.5
            # Cluster names still answer while an upstream hangs.
            assert rdata(udp_query(s.port, f"web.default.svc.{Z}")) == ["10.96.0.20"]
        finally:
            s.stop()


def test_garbage_does_not_stop_the_server(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\xff" * 7, ("127.0.0.1", server.port))
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as c:
        c.sendall(b"\x00\x05abcde")
    assert rdata(udp_query(server.port, f"web.default.svc.{Z}")) == ["10.96.0.20"]
