"""ClusterIPs, NodePorts and pod CIDRs: unique, requested values honoured, taken or
out-of-range values refused naming the field, kept on update; unique across two
handlers (two replicas) writing to one store at once."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from controlplane.api.handler import Handler
from controlplane.api.settings import ApiSettings
from controlplane.store.memory import MemoryStore
from corral.errors import Invalid
from tests.api.conftest import obj, service


def node(name: str, cidr: str = "") -> object:
    spec = {"podCIDR": cidr} if cidr else {}
    return obj({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec})


def test_cluster_ips_are_unique_and_in_range(h: Handler) -> None:
    ips = {h.create(service(name=f"s{i}")).spec.cluster_ip for i in range(40)}
    assert len(ips) == 40
    net = ipaddress.IPv4Network("10.96.0.0/12")
    assert all(ipaddress.IPv4Address(ip) in net for ip in ips)
    assert "10.96.0.10" not in ips


def test_requested_cluster_ip(h: Handler) -> None:
    out = h.create(service(clusterIP="10.96.5.5"))
    assert out.spec.cluster_ip == "10.96.5.5" and list(out.spec.cluster_ips) == ["10.96.5.5"]
    before = h.store.revision
    with pytest.raises(Invalid) as info:
        h.create(service(name="other", clusterIP="10.96.5.5"))
    assert info.value.field == "spec.clusterIP"
    assert "already allocated" in str(info.value)
    assert h.store.revision == before


def test_dns_address_is_reserved(h: Handler) -> None:
    with pytest.raises(Invalid) as info:
        h.create(service(name="impostor", clusterIP="10.96.0.10"))
    assert "reserved for the cluster DNS Service corral-system/dns" in str(info.value)
    dns = h.create(service(name="dns", ns="corral-system",
                           ports=[{"port": 53, "protocol": "UDP"}]))
    assert dns.spec.cluster_ip == "10.96.0.10"


def test_headless_and_external_name_get_no_address(h: Handler) -> None:
    assert h.create(service(name="hl", clusterIP="None")).spec.cluster_ip == "None"
    ext = h.create(service(name="ext", type="ExternalName", externalName="example.com",
                           ports=[]))
    assert ext.spec.cluster_ip == ""
    assert not ext.spec.cluster_ips


def test_cluster_ip_is_immutable_and_kept(h: Handler) -> None:
    ip = h.create(service()).spec.cluster_ip
    # Re-sent without clusterIP (a manifest): kept.
    assert h.update(service()).spec.cluster_ip == ip
    with pytest.raises(Exception) as info:
        h.update(service(clusterIP="10.96.9.9"))
    assert "spec.clusterIP" in str(info.value)


def test_node_ports(h: Handler) -> None:
    a = h.create(service(name="a", type="NodePort", ports=[
        {"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]))
    ports = [p.node_port for p in a.spec.ports]
    assert all(30000 <= p <= 32767 for p in ports)
    b = h.create(service(name="b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert b.spec.ports[0].node_port == 30080
    with pytest.raises(Invalid) as info:
        h.create(service(name="c", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert info.value.field == "spec.ports[0].nodePort"
    # The same number on the other protocol is a different port.
    h.create(service(name="d", type="NodePort",
                     ports=[{"port": 53, "protocol": "UDP", "nodePort": 30080}]))
    # Kept on update when left empty; released when the type no longer needs it.
    again = h.update(service(name="a", type="NodePort", ports=[
        {"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]))
    assert [p.node_port for p in again.spec.ports] == ports
    plain = h.update(service(name="a", ports=[{"name": "http", "port": 80}]))
    assert plain.spec.ports[0].node_port == 0
    taken = {t for r in h.store.list("Service")[0] for t in r.unique}
    assert f"nodePort/TCP/{ports[0]}" not in taken


def test_pod_cidrs(h: Handler) -> None:
    n1 = h.create(node("n1"))
    n2 = h.create(node("n2"))
    assert (n1.spec.pod_cidr, n2.spec.pod_cidr) == ("10.244.0.0/24", "10.244.1.0/24")
    assert list(n1.spec.pod_cidrs) == ["10.244.0.0/24"]
    # An agent restart re-registers without a CIDR: the node keeps its own.
    assert h.update(node("n1")).spec.pod_cidr == "10.244.0.0/24"
    assert h.apply(node("n1"))[1] == "unchanged"
    with pytest.raises(Invalid) as info:
        h.create(node("n3", "10.244.1.0/24"))
    assert info.value.field == "spec.podCIDR"
    assert h.create(node("n4", "10.244.9.0/24")).spec.pod_cidr == "10.244.9.0/24"
    h.delete("Node", "", "n1")
    assert h.create(node("n5")).spec.pod_cidr == "10.244.0.0/24"


def test_small_ranges_run_out_clearly() -> None:
    store = MemoryStore()
    settings = ApiSettings(service_cidr=ipaddress.IPv4Network("10.100.0.0/28"))
    h = Handler(store, settings)
    h.ensure_namespaces()
    for i in range(13):  # 16 - network - broadcast - the DNS address
        h.create(service(name=f"s{i}"))
    with pytest.raises(Exception) as info:
        h.create(service(name="s99"))
    assert "no free ClusterIP left in the service CIDR 10.100.0.0/28" in str(info.value)


def test_two_replicas_allocating_at_once_never_share(store: MemoryStore) -> None:
    """Two handlers over one store act as two replicas: each picks from its own view,
    the store's unique tokens decide, the loser re-picks."""
    settings = ApiSettings(service_cidr=ipaddress.IPv4Network("10.100.0.0/27"))
    a, b = Handler(store, settings), Handler(store, settings)
    a.ensure_namespaces()
    errors: list[Exception] = []

    def run(h: Handler, prefix: str) -> None:
        for i in range(13):
            try:
                h.create(service(name=f"{prefix}{i}", type="NodePort"))
            except Exception as err:
                errors.append(err)

    threads = [threading.Thread(target=run, args=(h, p)) for h, p in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    services = a.list("Service")[0]
    assert len(services) == 26
    assert len({s.spec.cluster_ip for s in services}) == 26
    assert len({s.spec.ports[0].node_port for s in services}) == 26


def test_collision_from_a_stale_view_is_re_picked(store: MemoryStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica b has not yet applied replica a's allocation and picks the same
    address: the store refuses the shared token and b picks another."""
    import random

    settings = ApiSettings()
    a, b = Handler(store, settings), Handler(store, settings)
    a.ensure_namespaces()
    a.allocator._rand = random.Random(7)
    b.allocator._rand = random.Random(7)
    monkeypatch.setattr(b.allocator, "_taken", lambda kind, exclude: set())
    first = a.create(service(name="first", type="NodePort"))
    second = b.create(service(name="second", type="NodePort"))
    assert second.spec.cluster_ip != first.spec.cluster_ip
    assert second.spec.ports[0].node_port != first.spec.ports[0].node_port


class StaleNodeViewStore(MemoryStore):
    """A replica whose view of Nodes is always empty: every pick it makes collides
    with what the store holds, as when many nodes register at the same moment."""

    def list(self, kind: str, namespace: str | None = None, *,
             linearizable: bool = True) -> tuple[list, int]:  # type: ignore[type-arg]
        records, rev = super().list(kind, namespace, linearizable=linearizable)
        return ([] if kind == "Node" else records), rev


def test_pod_cidr_retries_spread_instead_of_racing_for_the_next_lowest() -> None:
    store = StaleNodeViewStore()
    h = Handler(store)
    try:
        h.ensure_namespaces()
        cidrs = {h.create(node(f"n{i}")).spec.pod_cidr for i in range(12)}
        assert len(cidrs) == 12
    finally:
        h.close()
        store.close()
