"""Rendering: Services and their endpoints -> iptables rules, in kube-proxy's shape.

Pure: functions of `ServiceState`s and `NodeFacts`, returning text; no threads,
nothing touches the kernel (iptables.py applies, payload.py diffs).

Every line is written exactly as `iptables-save` (1.8.9, nf_tables) prints it
back, so what is in the kernel can be compared with what should be, line by
line, and an unchanged ruleset costs no restore (tests/netproxy/test_kernel.py
checks the round trip for every rule shape).

The shape (nat table unless said):

    PREROUTING, OUTPUT -> CORRAL-SERVICES
        cluster DNS VIP:53 -> DNAT to this node's DNS server        (first)
        one jump per VIP:port -> CORRAL-SVC-<hash>
        ! -d 127/8, dst-type LOCAL -> CORRAL-NODEPORTS              (last)
    CORRAL-NODEPORTS: one jump per node port -> CORRAL-EXT-<hash>
    CORRAL-EXT-<hash>: mark for masquerade, -> CORRAL-SVC-<hash>
    CORRAL-SVC-<hash>: mark for masquerade when the source is outside the
        cluster CIDR; [ClientIP affinity: -m recent --rcheck per endpoint];
        one jump per ready endpoint, chosen by -m statistic --probability
        1/(n-i), the last unconditional
    CORRAL-SEP-<hash>: mark for masquerade when the source is the endpoint
        itself (hairpin); [-m recent --set]; DNAT to the endpoint
    POSTROUTING -> CORRAL-POSTROUTING: MASQUERADE what was marked
    filter: FORWARD/OUTPUT -> CORRAL-SERVICES, INPUT/FORWARD ->
        CORRAL-EXTERNAL-SERVICES: REJECT a VIP:port / node port with no ready
        endpoint (conntrack NEW only)

Chain names are stable hashes of the service port name (and endpoint), as
kube-proxy's: base32(sha256(...))[:16], so a restart computes the same names.
Only chains matching `OWN_HASHED_CHAIN` or named in `FIXED_CHAINS` are ever
written or deleted: other components' chains (the agent's CORRAL-AGENT-MASQ,
Podman's, the operator's) are never touched.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netproxy.model import ServicePort, ServiceState, port_display_name

NAT = "nat"
FILTER = "filter"
TABLES = (NAT, FILTER)

SERVICES = "CORRAL-SERVICES"  # in nat and in filter
NODEPORTS = "CORRAL-NODEPORTS"
EXTERNAL_SERVICES = "CORRAL-EXTERNAL-SERVICES"
MARK_MASQ = "CORRAL-MARK-MASQ"
POSTROUTING = "CORRAL-POSTROUTING"
SVC_PREFIX = "CORRAL-SVC-"
SEP_PREFIX = "CORRAL-SEP-"
EXT_PREFIX = "CORRAL-EXT-"

ChainId = tuple[str, str]  # (table, chain)

FIXED_CHAINS: tuple[ChainId, ...] = (
    (NAT, SERVICES), (NAT, NODEPORTS), (NAT, MARK_MASQ), (NAT, POSTROUTING),
    (FILTER, SERVICES), (FILTER, EXTERNAL_SERVICES),
)
# Chains that Services contribute rules to, kept sorted between a fixed head and tail.
SHARED_CHAINS: tuple[ChainId, ...] = (
    (NAT, SERVICES), (NAT, NODEPORTS), (FILTER, SERVICES), (FILTER, EXTERNAL_SERVICES),
)
OWN_HASHED_CHAIN = re.compile(r"^CORRAL-(SVC|SEP|EXT)-[A-Z2-7]{16}$")


def is_own_chain(table: str, chain: str) -> bool:
    return (table, chain) in FIXED_CHAINS or (table == NAT
                                               and OWN_HASHED_CHAIN.match(chain) is not None)


@dataclass(frozen=True)
class NodeFacts:
    """What about this host the rules depend on."""

    cluster_cidr: str
    masquerade_bit: int = 14
    # The cluster DNS VIP and the "ip:port" this host's DNS server answers on;
    # either empty: no DNS rules.
    dns_ip: str = ""
    dns_target: str = ""

    @property
    def mark(self) -> str:
        return f"{1 << self.masquerade_bit:#x}"


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic into ours (added once, checked)."""

    table: str
    chain: str
    rule: str  # without "-A CHAIN "

    @property
    def line(self) -> str:
        return f"-A {self.chain} {self.rule}"


JUMPS: tuple[Jump, ...] = (
    Jump(NAT, "PREROUTING", f'-m comment --comment "corral service portals" -j {SERVICES}'),
    Jump(NAT, "OUTPUT", f'-m comment --comment "corral service portals" -j {SERVICES}'),
    Jump(NAT, "POSTROUTING",
         f'-m comment --comment "corral postrouting rules" -j {POSTROUTING}'),
    Jump(FILTER, "INPUT", "-m conntrack --ctstate NEW -m comment --comment "
         f'"corral externally-visible service portals" -j {EXTERNAL_SERVICES}'),
    Jump(FILTER, "FORWARD", "-m conntrack --ctstate NEW -m comment --comment "
         f'"corral externally-visible service portals" -j {EXTERNAL_SERVICES}'),
    Jump(FILTER, "FORWARD",
         f'-m conntrack --ctstate NEW -m comment --comment "corral service portals" -j {SERVICES}'),
    Jump(FILTER, "OUTPUT",
         f'-m conntrack --ctstate NEW -m comment --comment "corral service portals" -j {SERVICES}'),
)


@dataclass(frozen=True)
class ServiceRules:
    """Everything one Service puts in the kernel.

    `chains`: the nat chains only this Service uses, name -> lines.
    `shared`: its lines in the shared chains, as (table, chain, line).
    """

    chains: Mapping[str, tuple[str, ...]]
    shared: frozenset[tuple[str, str, str]]

    @property
    def rule_count(self) -> int:
        return sum(len(v) for v in self.chains.values()) + len(self.shared)


EMPTY = ServiceRules({}, frozenset())


def _hash(text: str) -> str:
    # 10 bytes are exactly 16 base32 characters: the same name as kube-proxy's
    # base32(sha256)[:16], without encoding the 22 bytes it throws away.
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def svc_chain(spn: str, protocol: str) -> str:
    return SVC_PREFIX + _hash(spn + protocol)


def ext_chain(spn: str, protocol: str) -> str:
    return EXT_PREFIX + _hash(spn + protocol)


def sep_chain(spn: str, protocol: str, endpoint: str) -> str:
    return SEP_PREFIX + _hash(spn + protocol + endpoint)


def probability(remaining: int) -> str:
    """1/remaining, as xt_statistic stores it (lround(2^31 p)) and iptables-save prints it."""
    fixed = math.floor(0x80000000 * (1.0 / remaining) + 0.5)
    return f"{fixed / 0x80000000:.11f}"


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _reject(chain: str, match: str, spn: str, proto: str, port: int) -> str:
    return (f"-A {chain} {match}-p {proto} {_comment(spn + ' has no endpoints')} "
            f"{'-m addrtype --dst-type LOCAL ' if chain == EXTERNAL_SERVICES else ''}"
            f"-m {proto} --dport {port} -j REJECT --reject-with icmp-port-unreachable")


def _port_rules(s: ServiceState, sp: ServicePort, node: NodeFacts,
                chains: dict[str, tuple[str, ...]], shared: set[tuple[str, str, str]]) -> None:
    spn = port_display_name(s.namespace, s.name, sp.name)
    proto = sp.protocol
    vip = f"-d {s.cluster_ip}/32 "
    if not sp.endpoints:
        shared.add((FILTER, SERVICES, _reject(SERVICES, vip, spn, proto, sp.port)))
        if sp.node_port:
            shared.add((FILTER, EXTERNAL_SERVICES,
                        _reject(EXTERNAL_SERVICES, "", spn, proto, sp.node_port)))
        return
    svc = svc_chain(spn, proto)
    portal = f"{vip}-p {proto} {_comment(spn + ' cluster IP')} -m {proto} --dport {sp.port}"
    shared.add((NAT, SERVICES, f"-A {SERVICES} {portal} -j {svc}"))
    if sp.node_port:
        ext = ext_chain(spn, proto)
        shared.add((NAT, NODEPORTS, f"-A {NODEPORTS} -p {proto} {_comment(spn)} "
                                    f"-m {proto} --dport {sp.node_port} -j {ext}"))
        chains[ext] = (
            f"-A {ext} {_comment(f'masquerade traffic for {spn} external destinations')} "
            f"-j {MARK_MASQ}",
            f"-A {ext} -j {svc}",
        )
    lines = [f"-A {svc} ! -s {node.cluster_cidr} {portal} -j {MARK_MASQ}"]
    seps = [(ep, sep_chain(spn, proto, str(ep))) for ep in sp.endpoints]
    recent = "--mask 255.255.255.255 --rsource"
    if s.affinity_timeout:
        for ep, sep in seps:
            lines.append(f"-A {svc} {_comment(f'{spn} -> {ep}')} -m recent --rcheck "
                         f"--seconds {s.affinity_timeout} --reap --name {sep} {recent} -j {sep}")
    n = len(seps)
    for i, (ep, sep) in enumerate(seps):
        pick = ("" if i == n - 1
                else f" -m statistic --mode random --probability {probability(n - i)}")
        lines.append(f"-A {svc} {_comment(f'{spn} -> {ep}')}{pick} -j {sep}")
    chains[svc] = tuple(lines)
    for ep, sep in seps:
        remember = f" -m recent --set --name {sep} {recent}" if s.affinity_timeout else ""
        chains[sep] = (
            f"-A {sep} -s {ep.ip}/32 {_comment(spn)} -j {MARK_MASQ}",
            f"-A {sep} -p {proto} {_comment(spn)}{remember} -m {proto} "
            f"-j DNAT --to-destination {ep}",
        )


def render_service(s: ServiceState | None, node: NodeFacts) -> ServiceRules:
    """The rules of one Service (EMPTY when it has none: gone, headless, ExternalName)."""
    if s is None:
        return EMPTY
    chains: dict[str, tuple[str, ...]] = {}
    shared: set[tuple[str, str, str]] = set()
    for sp in s.ports:
        _port_rules(s, sp, node, chains, shared)
    return ServiceRules(chains, frozenset(shared))


def fixed_head_tail(node: NodeFacts) -> dict[ChainId, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per fixed chain, the lines before and after the Services' sorted contributions."""
    mark = node.mark
    dns: tuple[str, ...] = ()
    if node.dns_ip and node.dns_target:
        dns = tuple(
            f"-A {SERVICES} -d {node.dns_ip}/32 -p {p} {_comment('corral cluster DNS')} "
            f"-m {p} --dport 53 -j DNAT --to-destination {node.dns_target}"
            for p in ("udp", "tcp")
        )
    return {
        (NAT, SERVICES): (dns, (
            f"-A {SERVICES} ! -d 127.0.0.0/8 "
            f"{_comment('corral service nodeports; must be the last rule of this chain')} "
            f"-m addrtype --dst-type LOCAL -j {NODEPORTS}",
        )),
        (NAT, NODEPORTS): ((), ()),
        (NAT, MARK_MASQ): ((f"-A {MARK_MASQ} -j MARK --set-xmark {mark}/{mark}",), ()),
        (NAT, POSTROUTING): ((
            f"-A {POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
            f"-A {POSTROUTING} -j MARK --set-xmark {mark}/0x0",
            f"-A {POSTROUTING} {_comment('corral service traffic requiring SNAT')} "
            "-j MASQUERADE --random-fully",
        ), ()),
        (FILTER, SERVICES): ((), ()),
        (FILTER, EXTERNAL_SERVICES): ((), ()),
    }


def assemble(rules: Iterable[ServiceRules], node: NodeFacts) -> dict[ChainId, tuple[str, ...]]:
    """The whole desired ruleset: every chain we own -> its lines, in order."""
    out: dict[ChainId, tuple[str, ...]] = {}
    bodies: dict[ChainId, list[str]] = {c: [] for c in FIXED_CHAINS}
    for r in rules:
        for chain, lines in r.chains.items():
            out[(NAT, chain)] = lines
        for table, chain, line in r.shared:
            bodies[(table, chain)].append(line)
    for cid, (head, tail) in fixed_head_tail(node).items():
        out[cid] = head + tuple(sorted(bodies[cid])) + tail
    return out
