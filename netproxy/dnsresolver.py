"""Cluster DNS answers: the Kubernetes DNS specification over a `DnsIndex`.

Threads model: `ClusterResolver.handle` is called concurrently by the DNS
server's worker threads; it keeps no mutable state of its own (the index locks
itself; metrics are thread-safe). Packets are parsed and built with dnslib.

Names served (ZONE is the cluster domain, cluster.local by default):
- SVC.NS.svc.ZONE: A = the ClusterIP; a headless Service: A = each ready
  endpoint's IP; an ExternalName Service: CNAME to its externalName (chased
  when the target can be resolved);
- HOSTNAME.SVC.NS.svc.ZONE (a headless Service's endpoint with a hostname, as
  StatefulSet pods have) and A-B-C-D.SVC.NS.svc.ZONE (any headless endpoint);
- _PORT._PROTO.SVC.NS.svc.ZONE: SRV for named ports (the Service's name as
  target for a ClusterIP, one per endpoint for a headless Service), with the
  A records in the additional section;
- A-B-C-D.NS.pod.ZONE: the pod's IP (in "verified" mode only if a pod of that
  namespace has that IP, as CoreDNS's `pods verified`);
- PTR for ClusterIPs, headless endpoints with hostnames and pod IPs;
- NXDOMAIN for any other name under ZONE, and for reverse names inside the
  cluster and service CIDRs that name nothing; NODATA (NOERROR, no answer)
  when a name exists but has no record of the asked type (AAAA of a Service,
  an empty namespace level), so clients fall through to A correctly;
- every other name is forwarded as is to the upstream resolvers.
Until the informers have synced, cluster names get SERVFAIL (clients retry)
rather than a wrong NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dnslib import CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSError, DNSRecord

from netproxy.dnsindex import HEADLESS, DnsIndex, EndpointRecord, ServiceRecord
from netproxy.metrics import Metrics
from netproxy.model import CLUSTER_IP, EXTERNAL_NAME

log = logging.getLogger(__name__)

MAX_CNAME_CHAIN = 8
# UDP replies larger than this are truncated (TC set) unless EDNS0 offers more.
UDP_DEFAULT_SIZE = 512
UDP_MAX_SIZE = 4096


class Upstream(Protocol):
    def forward(self, packet: bytes, tcp: bool) -> bytes | None:
        """The upstream's raw reply to `packet`, or None if no upstream answered."""
        ...


@dataclass
class Answer:
    rcode: int = RCODE.NOERROR
    answers: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)


def dashed_ip(label: str) -> str | None:
    """"10-244-1-5" -> "10.244.1.5", or None when it is not a dashed IPv4 address."""
    parts = label.split("-")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(parts)))
    except ValueError:
        return None


def reverse_ip(name: str) -> str | None:
    """"5.1.244.10.in-addr.arpa" -> "10.244.1.5", else None."""
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts))))
    except ValueError:
        return None


class ClusterResolver:
    def __init__(self, index: DnsIndex, *, domain: str = "cluster.local", ttl: int = 5,
                 pods: str = "verified", cluster_cidr: str = "10.244.0.0/16",
                 service_cidr: str = "10.96.0.0/12", upstream: Upstream | None = None,
                 ready: Callable[[], bool] = lambda: True,
                 metrics: Metrics | None = None) -> None:
        if pods not in ("verified", "insecure", "disabled"):
            raise ValueError(f"pods: must be verified, insecure or disabled, got {pods!r}")
        self.index = index
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self.pods = pods
        self.networks = [ipaddress.IPv4Network(cluster_cidr), ipaddress.IPv4Network(service_cidr)]
        self.upstream = upstream
        self.ready = ready
        self.metrics = metrics

    # ---- transport-facing ---------------------------------------------------------
    def handle(self, packet: bytes, tcp: bool) -> bytes | None:
        """The reply to one query packet (None: drop it, it was not a DNS query)."""
        start = time.monotonic()
        try:
            request = DNSRecord.parse(packet)
        except (DNSError, ValueError, IndexError):
            return None
        source = "cluster"
        try:
            if request.header.qr or len(request.questions) != 1:
                reply = self._error(request, RCODE.FORMERR)
            elif request.header.opcode != 0:
                reply = self._error(request, RCODE.NOTIMP)
            elif self.serves(str(request.q.qname)):
                reply = self.answer(request)
            else:
                source = "forward"
                raw = self.upstream.forward(packet, tcp) if self.upstream else None
                if raw is not None:
                    self._count(tcp, source, raw, start)
                    return raw if tcp else _fit_udp(raw, request)
                reply = self._error(request, RCODE.SERVFAIL)
        except Exception:
            log.exception("DNS query %s failed", request.q.qname)
            reply = self._error(request, RCODE.SERVFAIL)
        data = reply.pack()
        if not tcp and len(data) > _udp_limit(request):
            data = reply.truncate().pack()
        self._count(tcp, source, data, start)
        return data

    def _count(self, tcp: bool, source: str, data: bytes, start: float) -> None:
        if self.metrics is None:
            return
        rcode = data[3] & 0x0F if len(data) > 3 else RCODE.SERVFAIL
        self.metrics.dns_requests.labels("tcp" if tcp else "udp", source,
                                         RCODE.get(rcode, str(rcode))).inc()
        self.metrics.dns_duration.labels(source).observe(time.monotonic() - start)

    @staticmethod
    def _error(request: DNSRecord, rcode: int) -> DNSRecord:
        reply = request.reply()
        reply.header.rcode = rcode
        return reply

    def serves(self, qname: str) -> bool:
        """True for names this server answers itself (the rest is forwarded)."""
        name = qname.rstrip(".").lower()
        if name == self.domain or name.endswith("." + self.domain):
            return True
        ip = reverse_ip(name)
        return ip is not None and self._inside_cluster(ip)

    def _inside_cluster(self, ip: str) -> bool:
        addr = ipaddress.IPv4Address(ip)
        return any(addr in net for net in self.networks)

    # ---- answers ------------------------------------------------------------------
    def answer(self, request: DNSRecord) -> DNSRecord:
        """The authoritative reply for a name in the cluster zone or cluster CIDRs."""
        reply = request.reply()
        if not self.ready():
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        qname = str(request.q.qname)
        ans = self.lookup(qname, request.q.qtype)
        reply.header.rcode = ans.rcode
        for rr in ans.answers:
            reply.add_answer(rr)
        for rr in ans.additional:
            reply.add_ar(rr)
        if not ans.answers:
            reply.add_auth(self._soa())
        return reply

    def _soa(self) -> RR:
        zone = self.domain + "."
        # The minimum field is the negative-caching TTL (RFC 2308): keep it short,
        # a Service created a moment later must resolve.
        return RR(zone, QTYPE.SOA, ttl=self.ttl, rdata=SOA(
            f"ns.dns.{zone}", f"hostmaster.{zone}",
            (int(time.time()), 7200, 1800, 86400, self.ttl)))

    def lookup(self, qname: str, qtype: int, depth: int = 0) -> Answer:
        name = qname.rstrip(".").lower()
        ip = reverse_ip(name)
        if ip is not None:
            return self._reverse(qname, qtype, ip)
        if name == self.domain:
            if qtype == QTYPE.SOA:
                return Answer(answers=[self._soa()])
            return Answer()
        labels = name[: -len(self.domain) - 1].split(".")
        if labels[-1] == "svc":
            return self._svc(qname, qtype, labels[:-1], depth)
        if labels[-1] == "pod":
            return self._pod(qname, qtype, labels[:-1])
        return Answer(RCODE.NXDOMAIN)

    def _a(self, name: str, ip: str) -> RR:
        return RR(name, QTYPE.A, ttl=self.ttl, rdata=A(ip))

    def _svc(self, qname: str, qtype: int, labels: list[str], depth: int) -> Answer:
        if not labels:
            return Answer()  # "svc.ZONE" exists as a level
        ns = labels[-1]
        if len(labels) == 1:
            return Answer() if self.index.has_service_namespace(ns) else Answer(RCODE.NXDOMAIN)
        svc = self.index.service(ns, labels[-2])
        if svc is None:
            return Answer(RCODE.NXDOMAIN)
        if len(labels) == 2:
            return self._service_name(qname, qtype, svc, depth)
        if len(labels) == 3:
            return self._endpoint_name(qname, qtype, svc, labels[0])
        if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv(qname, qtype, svc, labels[0][1:], labels[1][1:])
        return Answer(RCODE.NXDOMAIN)

    def _service_name(self, qname: str, qtype: int, svc: ServiceRecord, depth: int) -> Answer:
        if svc.kind == EXTERNAL_NAME:
            return self._cname(qname, qtype, svc.external_name, depth)
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return Answer()
        if svc.kind == CLUSTER_IP:
            return Answer(answers=[self._a(qname, svc.cluster_ip)])
        eps = self.index.endpoints(svc.namespace, svc.name)
        return Answer(answers=[self._a(qname, e.ip) for e in eps])

    def _cname(self, qname: str, qtype: int, target: str, depth: int) -> Answer:
        out = Answer(answers=[RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target + "."))])
        if qtype == QTYPE.CNAME or depth >= MAX_CNAME_CHAIN:
            return out
        if self.serves(target):
            chased = self.lookup(target, qtype, depth + 1)
            out.answers.extend(chased.answers)
        elif self.upstream is not None:
            # Chase outside the zone too: a stub resolver handed only the CNAME of a
            # name it asked A for does not always ask again for the target.
            query = DNSRecord.question(target, QTYPE.get(qtype, "A"))
            raw = self.upstream.forward(query.pack(), False)
            if raw is not None:
                try:
                    out.answers.extend(DNSRecord.parse(raw).rr)
                except DNSError:
                    pass
        return out

    def _endpoint_name(self, qname: str, qtype: int, svc: ServiceRecord, label: str) -> Answer:
        if label.startswith("_"):
            # "_tcp.SVC.NS.svc": a level of the SRV names; exists if a port uses it.
            used = any(p.protocol == label[1:] and p.name for p in svc.ports)
            return Answer() if used else Answer(RCODE.NXDOMAIN)
        if svc.kind != HEADLESS:
            return Answer(RCODE.NXDOMAIN)
        eps = self.index.endpoints(svc.namespace, svc.name)
        found = [e for e in eps if e.hostname == label or e.dashed == label]
        if not found:
            return Answer(RCODE.NXDOMAIN)
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return Answer()
        return Answer(answers=[self._a(qname, e.ip) for e in found])

    def _srv(self, qname: str, qtype: int, svc: ServiceRecord, port: str, proto: str) -> Answer:
        ports = [p for p in svc.ports if p.name == port and p.protocol == proto]
        if not ports or svc.kind == EXTERNAL_NAME:
            return Answer(RCODE.NXDOMAIN)
        if qtype not in (QTYPE.SRV, QTYPE.ANY):
            return Answer()
        base = f"{svc.name}.{svc.namespace}.svc.{self.domain}."
        if svc.kind == CLUSTER_IP:
            srv = RR(qname, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, 100, ports[0].port, base))
            return Answer(answers=[srv], additional=[self._a(base, svc.cluster_ip)])
        out = Answer()
        eps = [(e, ep) for e in self.index.endpoints(svc.namespace, svc.name)
               for ep in e.ports if ep.name == port and ep.protocol == proto]
        weight = max(1, 100 // max(1, len(eps)))
        for e, ep in eps:
            target = f"{_endpoint_label(e)}.{base}"
            out.answers.append(RR(qname, QTYPE.SRV, ttl=self.ttl,
                                  rdata=SRV(0, weight, ep.port, target)))
            out.additional.append(self._a(target, e.ip))
        return out

    def _pod(self, qname: str, qtype: int, labels: list[str]) -> Answer:
        if self.pods == "disabled":
            return Answer(RCODE.NXDOMAIN)
        if not labels:
            return Answer()
        ns = labels[-1]
        if len(labels) == 1:
            known = self.pods == "insecure" or self.index.has_pod_namespace(ns)
            return Answer() if known else Answer(RCODE.NXDOMAIN)
        ip = dashed_ip(labels[0]) if len(labels) == 2 else None
        if ip is None or (self.pods == "verified" and not self.index.pod_exists(ns, ip)):
            return Answer(RCODE.NXDOMAIN)
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return Answer()
        return Answer(answers=[self._a(qname, ip)])

    def _reverse(self, qname: str, qtype: int, ip: str) -> Answer:
        names: list[str] = []
        svc = self.index.service_at(ip)
        if svc is not None:
            names.append(f"{svc.name}.{svc.namespace}.svc.{self.domain}.")
        for hostname, hsvc in self.index.headless_names_at(ip):
            names.append(f"{hostname}.{hsvc.name}.{hsvc.namespace}.svc.{self.domain}.")
        if self.pods != "disabled":
            dashed = ip.replace(".", "-")
            names.extend(f"{dashed}.{ns}.pod.{self.domain}."
                         for ns in self.index.pod_namespaces_at(ip))
        if not names:
            return Answer(RCODE.NXDOMAIN)
        if qtype not in (QTYPE.PTR, QTYPE.ANY):
            return Answer()
        return Answer(answers=[RR(qname, QTYPE.PTR, ttl=self.ttl, rdata=PTR(n)) for n in names])


def _endpoint_label(e: EndpointRecord) -> str:
    return e.hostname or e.dashed


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_DEFAULT_SIZE, min(int(rr.rclass), UDP_MAX_SIZE))
    return UDP_DEFAULT_SIZE


def _fit_udp(raw: bytes, request: DNSRecord) -> bytes:
    """An upstream's reply, truncated if it is too large for the client's UDP size."""
    if len(raw) <= _udp_limit(request):
        return raw
    try:
        return DNSRecord.parse(raw).truncate().pack()
    except DNSError:
        return raw
