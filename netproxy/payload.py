"""What to hand `iptables-restore --noflush`: full and per-Service partial payloads.

Pure: text in, text out; no threads, no kernel (iptables.py runs the restore).

A full payload compares the whole desired ruleset with what `iptables-save`
read back and writes only the chains that differ (declaring a chain in a
--noflush restore flushes it, so each written chain is declared once and
refilled), deletes our stale hashed chains and re-adds a missing jump from a
built-in chain. Nothing differing: an empty payload, and no restore at all.

A partial payload rewrites only the own chains of the Services that changed and
edits the shared chains (CORRAL-SERVICES, CORRAL-NODEPORTS and the filter
chains) rule by rule: `-D` by rule text, `-I` at the position the rule has in
the sorted order a full render gives, so partial and full syncs leave exactly
the same chains. `AppliedState` remembers what the kernel holds to compute
those positions; after any failure the caller does a full sync, which rebuilds
it from what was read back.

No chain is declared twice in one payload (a chain declared twice and deleted
fails on nf_tables with CHAIN_DEL busy), and every `-X` comes after the `-D`
and flushes that drop its references.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from netproxy.model import ServiceKey
from netproxy.rules import (
    EMPTY,
    JUMPS,
    SHARED_CHAINS,
    TABLES,
    ChainId,
    NodeFacts,
    ServiceRules,
    assemble,
    fixed_head_tail,
    is_own_chain,
)


@dataclass
class _Builder:
    """Collects one payload's lines per table, in the order restore needs them."""

    declare: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    delete_rules: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    insert_rules: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    append_rules: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    delete_chains: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})

    def write_chain(self, table: str, chain: str, lines: tuple[str, ...]) -> None:
        self.declare[table].append(f":{chain} - [0:0]")
        self.append_rules[table].extend(lines)

    def remove_chain(self, table: str, chain: str) -> None:
        self.declare[table].append(f":{chain} - [0:0]")
        self.delete_chains[table].append(f"-X {chain}")

    def payload(self) -> Payload:
        out: list[str] = []
        rules = chains = deleted = 0
        for t in TABLES:
            body = (self.declare[t] + self.delete_rules[t] + self.insert_rules[t]
                    + self.append_rules[t] + self.delete_chains[t])
            if not body:
                continue
            out.append(f"*{t}")
            out.extend(body)
            out.append("COMMIT")
            rules += len(self.insert_rules[t]) + len(self.append_rules[t])
            deleted += len(self.delete_chains[t])
            chains += len(self.declare[t]) - len(self.delete_chains[t])
        return Payload("\n".join(out) + "\n" if out else "", rules, chains, deleted)


@dataclass(frozen=True)
class Payload:
    text: str  # "" when the kernel already holds what should be there
    rules: int  # rule lines written (-A and -I)
    chains: int  # chains (re)written
    deleted: int  # chains deleted

    @property
    def empty(self) -> bool:
        return not self.text


def full_payload(desired: Mapping[ChainId, tuple[str, ...]],
                 current: Mapping[ChainId, tuple[str, ...]]) -> Payload:
    """Bring `current` (every chain read back, ours and others') to `desired`."""
    b = _Builder()
    for (table, chain), lines in sorted(desired.items()):
        if current.get((table, chain)) != lines:
            b.write_chain(table, chain, lines)
    for table, chain in sorted(current):
        if is_own_chain(table, chain) and (table, chain) not in desired:
            b.remove_chain(table, chain)
    for j in JUMPS:
        if j.line not in current.get((j.table, j.chain), ()):
            # First in the built-in chain, as kube-proxy: other rules there
            # (another component's accept or masquerade) must not shadow ours.
            b.insert_rules[j.table].append(f"-I {j.chain} 1 {j.rule}")
    return b.payload()


def cleanup_payload(current: Mapping[ChainId, tuple[str, ...]]) -> Payload:
    """Remove every rule and chain of ours (`corral-netproxy --cleanup`)."""
    b = _Builder()
    for j in JUMPS:
        for line in current.get((j.table, j.chain), ()):
            if line == j.line:
                b.delete_rules[j.table].append(f"-D {j.chain} {j.rule}")
    for table, chain in sorted(current):
        if is_own_chain(table, chain):
            b.remove_chain(table, chain)
    return b.payload()


@dataclass(frozen=True)
class Plan:
    """A partial payload and the state the kernel holds once it is applied."""

    payload: Payload
    services: Mapping[ServiceKey, ServiceRules]
    bodies: Mapping[ChainId, list[str]]


class AppliedState:
    """What our chains hold in the kernel, per Service; the base of partial payloads.

    Not thread-safe: owned by the sync thread.
    """

    def __init__(self, node: NodeFacts) -> None:
        self.node = node
        self._head = {cid: len(head) for cid, (head, _) in fixed_head_tail(node).items()}
        self.services: dict[ServiceKey, ServiceRules] = {}
        self.bodies: dict[ChainId, list[str]] = {cid: [] for cid in SHARED_CHAINS}

    def reset(self, services: Mapping[ServiceKey, ServiceRules]) -> dict[ChainId, tuple[str, ...]]:
        """After a full sync: remember `services`; returns the whole desired ruleset."""
        self.services = {k: r for k, r in services.items() if r.rule_count}
        self.bodies = {cid: [] for cid in SHARED_CHAINS}
        for r in self.services.values():
            for table, chain, line in r.shared:
                self.bodies[(table, chain)].append(line)
        for body in self.bodies.values():
            body.sort()
        return assemble(self.services.values(), self.node)

    def plan(self, changes: Mapping[ServiceKey, ServiceRules]) -> Plan:
        """The payload that turns the applied rules of `changes`' keys into the new ones."""
        b = _Builder()
        removed: set[tuple[str, str, str]] = set()
        added: set[tuple[str, str, str]] = set()
        services = dict(self.services)
        for key, new in changes.items():
            old = self.services.get(key, EMPTY)
            for chain, lines in sorted(new.chains.items()):
                if old.chains.get(chain) != lines:
                    b.write_chain("nat", chain, lines)
            for chain in sorted(old.chains):
                if chain not in new.chains:
                    b.remove_chain("nat", chain)
            removed |= old.shared - new.shared
            added |= new.shared - old.shared
            if new.rule_count:
                services[key] = new
            else:
                services.pop(key, None)
        bodies = {cid: list(body) for cid, body in self.bodies.items()}
        for table, chain, line in sorted(removed):
            body = bodies[(table, chain)]
            del body[bisect.bisect_left(body, line)]
            b.delete_rules[table].append(f"-D {chain} {_rule(chain, line)}")
        for table, chain, line in sorted(added):
            body = bodies[(table, chain)]
            i = bisect.bisect_left(body, line)
            body.insert(i, line)
            position = self._head[(table, chain)] + i + 1
            b.insert_rules[table].append(f"-I {chain} {position} {_rule(chain, line)}")
        return Plan(b.payload(), services, bodies)

    def commit(self, plan: Plan) -> None:
        self.services = dict(plan.services)
        self.bodies = {cid: list(body) for cid, body in plan.bodies.items()}


def _rule(chain: str, line: str) -> str:
    """The rule spec of an "-A CHAIN spec" line."""
    prefix = f"-A {chain} "
    if not line.startswith(prefix):
        raise ValueError(f"rule {line!r} is not a rule of chain {chain}")
    return line[len(prefix):]
