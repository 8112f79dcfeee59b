"""Full and partial payloads, without the kernel.

`FakeKernel` interprets the restore language the way iptables-restore
--noflush does (declare = create or flush, -A, -I N, -D by spec, -X only of an
empty, unreferenced chain; a chain declared twice in one payload is an error,
as CHAIN_DEL busy is on nf_tables), so a random run of changes pushed through
partial payloads can be checked against a full render after every step.
test_kernel.py repeats the important cases against the real kernel.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from netproxy.model import service_state
from netproxy.payload import AppliedState, cleanup_payload, full_payload
from netproxy.rules import JUMPS, NodeFacts, is_own_chain, render_service
from tests.netproxy.objects import endpoints, port, svc

NODE = NodeFacts(cluster_cidr="10.244.0.0/16", dns_ip="10.96.0.10",
                 dns_target="10.250.0.11:53")
BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
           "filter": ("INPUT", "FORWARD", "OUTPUT")}


class RestoreError(Exception):
    pass


class FakeKernel:
    def __init__(self) -> None:
        self.chains: dict[tuple[str, str], list[str]] = {
            (t, c): [] for t, cs in BUILTIN.items() for c in cs}

    def restore(self, text: str) -> None:
        chains = {k: list(v) for k, v in self.chains.items()}  # atomic: all or nothing
        table = ""
        declared: set[tuple[str, str]] = set()
        for line in text.splitlines():
            if line.startswith("*"):
                table, declared = line[1:], set()
            elif line == "COMMIT":
                self._check_targets(chains, table)
            elif line.startswith(":"):
                cid = (table, line[1:].split()[0])
                if cid in declared:
                    raise RestoreError(f"{cid} declared twice")
                declared.add(cid)
                chains[cid] = []
            else:
                op, chain, *rest = line.split(" ", 2)
                cid = (table, chain)
                if cid not in chains:
                    raise RestoreError(f"{line}: no chain {cid}")
                spec = rest[0] if rest else ""
                if op == "-A":
                    chains[cid].append(f"-A {chain} {spec}")
                elif op == "-I":
                    pos, spec = spec.split(" ", 1)
                    if not 1 <= int(pos) <= len(chains[cid]) + 1:
                        raise RestoreError(f"{line}: bad position")
                    chains[cid].insert(int(pos) - 1, f"-A {chain} {spec}")
                elif op == "-D":
                    chains[cid].remove(f"-A {chain} {spec}")  # ValueError if absent
                elif op == "-X":
                    refs = [r for (t, _), rs in chains.items() if t == table for r in rs
                            if r.endswith(f"-j {chain}")]
                    if chains[cid] or refs:
                        raise RestoreError(f"{line}: CHAIN_DEL busy")
                    del chains[cid]
                else:
                    raise RestoreError(f"unknown line {line}")
        self.chains = chains

    @staticmethod
    def _check_targets(chains: dict[tuple[str, str], list[str]], table: str) -> None:
        for (t, _), rules in chains.items():
            for r in rules:
                m = re.search(r"-j (CORRAL-\S+)", r)
                if t == table and m and (table, m.group(1)) not in chains:
                    raise RestoreError(f"{r}: target chain missing")

    def own(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.chains.items() if is_own_chain(*k)}

    def saved(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.chains.items()}


def rendered(states):
    return {k: render_service(s, NODE) for k, s in states.items()}


def make_state(name, ip, ready, node_port=0, affinity=None, udp=False, namespace="default"):
    ports = [port("http", 80, node_port=node_port, protocol="UDP" if udp else "TCP")]
    kind = "NodePort" if node_port else "ClusterIP"
    return service_state(
        svc(name, ip, ports=ports, type=kind, affinity=affinity, namespace=namespace),
        endpoints(name, ready=ready, ports=[("http", 8080, "UDP" if udp else "TCP")],
                  namespace=namespace))


def full_sync(kernel: FakeKernel, applied: AppliedState, states) -> None:
    desired = applied.reset(rendered(states))
    payload = full_payload(desired, kernel.saved())
    if not payload.empty:
        kernel.restore(payload.text)


def test_full_payload_from_nothing_then_nothing_to_do():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states = {("default", "a"): make_state("a", "10.96.0.20", ["10.244.1.5", "10.244.2.5"])}
    desired = applied.reset(rendered(states))
    first = full_payload(desired, kernel.saved())
    assert first.rules > 0 and first.deleted == 0
    for j in JUMPS:
        assert f"-I {j.chain} 1 {j.rule}" in first.text
    kernel.restore(first.text)
    assert kernel.own() == desired
    assert full_payload(desired, kernel.saved()).empty


def test_full_payload_writes_only_what_differs_and_deletes_only_our_stale_chains():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states = {("default", "a"): make_state("a", "10.96.0.20", ["10.244.1.5"]),
              ("default", "b"): make_state("b", "10.96.0.21", ["10.244.2.5"])}
    full_sync(kernel, applied, states)
    foreign = {("nat", "CORRAL-AGENT-MASQ"): ["-A CORRAL-AGENT-MASQ -j MASQUERADE"],
               ("nat", "KUBE-SVC-AAAAAAAAAAAAAAAA"): [],
               ("nat", "CORRAL-SVC-lowercase"): [],
               ("filter", "CORRAL-SVC-AAAAAAAAAAAAAAAA"): []}
    for cid, rules in foreign.items():
        kernel.chains[cid] = list(rules)
    stale = ("nat", "CORRAL-SEP-AAAAAAAAAAAAAAAA")
    kernel.chains[stale] = ["-A CORRAL-SEP-AAAAAAAAAAAAAAAA -j DNAT --to-destination 1.2.3.4"]
    states[("default", "b")] = make_state("b", "10.96.0.21", ["10.244.2.6"])
    desired = applied.reset(rendered(states))
    payload = full_payload(desired, kernel.saved())
    declared = {line[1:].split()[0] for line in payload.text.splitlines()
                if line.startswith(":")}
    # b's service chain and its new endpoint chain, b's old endpoint chain and the stale one.
    assert len(declared) == 4 and "CORRAL-SERVICES" not in declared
    assert payload.deleted == 2
    kernel.restore(payload.text)
    assert kernel.own() == desired
    for cid, rules in foreign.items():
        assert kernel.chains[cid] == rules


def test_partial_endpoint_change_touches_one_service_only():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states = {(f"ns{i}", "s"): make_state("s", f"10.96.0.{20 + i}", ["10.244.1.5", "10.244.2.5"],
                                          namespace=f"ns{i}")
              for i in range(5)}
    full_sync(kernel, applied, states)
    key = ("ns2", "s")
    states[key] = make_state("s", "10.96.0.22", ["10.244.1.5", "10.244.3.5"], namespace="ns2")
    plan = applied.plan(rendered({key: states[key]}))
    text = plan.payload.text
    assert "CORRAL-SERVICES" not in text  # the VIP's jump is unchanged
    assert all("ns2/s" in line for line in text.splitlines() if line.startswith("-A"))
    # Declared: the SVC chain and the new SEP chain (rewritten), the old SEP (deleted).
    assert text.count("\n:") == 3
    assert plan.payload.chains == 2 and plan.payload.deleted == 1
    lines = text.splitlines()
    assert max(i for i, x in enumerate(lines) if x.startswith("-A")) < \
        min(i for i, x in enumerate(lines) if x.startswith("-X"))
    kernel.restore(text)
    applied.commit(plan)
    assert kernel.own() == applied.reset(rendered(states))


def test_partial_with_nothing_changed_is_empty():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states = {("default", "a"): make_state("a", "10.96.0.20", ["10.244.1.5"])}
    full_sync(kernel, applied, states)
    assert applied.plan(rendered(states)).payload.empty


def test_partial_inserts_new_service_at_its_sorted_position():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states = {("default", n): make_state(n, ip, ["10.244.1.5"])
              for n, ip in (("a", "10.96.0.20"), ("c", "10.96.0.40"))}
    full_sync(kernel, applied, states)
    states[("default", "b")] = make_state("b", "10.96.0.30", ["10.244.1.6"], node_port=30001)
    plan = applied.plan(rendered({("default", "b"): states[("default", "b")]}))
    # After the two DNS rules and a's jump: position 4.
    assert "-I CORRAL-SERVICES 4 -d 10.96.0.30/32" in plan.payload.text
    assert "-I CORRAL-NODEPORTS 1 " in plan.payload.text
    kernel.restore(plan.payload.text)
    applied.commit(plan)
    assert kernel.own() == applied.reset(rendered(states))


def test_cleanup_removes_ours_only():
    kernel, applied = FakeKernel(), AppliedState(NODE)
    full_sync(kernel, applied, {("d", "a"): make_state("a", "10.96.0.20", ["10.244.1.5"])})
    kernel.chains[("nat", "CORRAL-AGENT-MASQ")] = ["-A CORRAL-AGENT-MASQ -j MASQUERADE"]
    kernel.chains[("nat", "POSTROUTING")].append("-A POSTROUTING -j CORRAL-AGENT-MASQ")
    kernel.restore(cleanup_payload(kernel.saved()).text)
    assert set(kernel.own()) == set()
    assert kernel.chains[("nat", "POSTROUTING")] == ["-A POSTROUTING -j CORRAL-AGENT-MASQ"]
    assert ("nat", "CORRAL-AGENT-MASQ") in kernel.chains


IPS = [f"10.244.{n}.{h}" for n in (1, 2) for h in (5, 6, 7)]
service_strategy = st.fixed_dictionaries({
    "ready": st.lists(st.sampled_from(IPS), unique=True, max_size=4),
    "node_port": st.sampled_from([0, 30001]),
    "affinity": st.sampled_from([None, 60]),
    "udp": st.booleans(),
})
step = st.tuples(st.integers(0, 5), st.one_of(st.none(), service_strategy))


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=25), st.integers(1, 6))
def test_partial_payloads_always_converge_to_the_full_render(steps, full_every):
    """Random Service and endpoint changes, applied as partial payloads (with a full
    sync now and then): after every step the kernel holds exactly the full render."""
    kernel, applied = FakeKernel(), AppliedState(NODE)
    states: dict = {}
    full_sync(kernel, applied, states)
    for n, (i, spec) in enumerate(steps):
        key = ("default", f"s{i}")
        if spec is None:
            states.pop(key, None)
            change = {key: None}
        else:
            states[key] = make_state(f"s{i}", f"10.96.1.{i + 1}", **spec)
            change = {key: states[key]}
        if n % full_every == 0:
            full_sync(kernel, applied, states)
        else:
            plan = applied.plan(rendered(change))
            if not plan.payload.empty:
                kernel.restore(plan.payload.text)
            applied.commit(plan)
        expected = AppliedState(NODE).reset(rendered(states))
        assert kernel.own() == expected
