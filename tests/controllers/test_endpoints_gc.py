"""Endpoints, garbage collection, claim binding and event TTL: pure parts."""

from __future__ import annotations

from google.protobuf import struct_pb2

from controlplane.controllers import endpoints, housekeeping
from controlplane.controllers import garbagecollector as gc
from controlplane.controllers.actions import Create, Delete, Update, UpdateStatus
from controlplane.controllers.clock import to_timestamp
from corral.v1 import core_pb2

from .objects import NOW, claim, meta, pod, replicaset


def service(name: str, selector: dict[str, str], ports: list[tuple[str, int, object]],
            *, publish: bool = False) -> core_pb2.Service:
    s = core_pb2.Service(api_version="v1", kind="Service")
    meta(s, name, labels={"svc": name})
    s.spec.selector.update(selector)
    for pname, port, target in ports:
        sp = s.spec.ports.add(name=pname, port=port, protocol="TCP")
        if isinstance(target, int):
            sp.target_port.CopyFrom(struct_pb2.Value(number_value=target))
        elif isinstance(target, str):
            sp.target_port.CopyFrom(struct_pb2.Value(string_value=target))
    s.spec.publish_not_ready_addresses = publish
    return s


def web_pod(name: str, ip: str, *, ready: bool = True, port_name: str = "http",
            port: int = 8080) -> core_pb2.Pod:
    p = pod(name, labels={"app": "web"}, node_name="n1", phase="Running", ready=ready, ip=ip)
    p.spec.containers[0].ports.add(name=port_name, container_port=port)
    return p


def test_ready_and_not_ready_addresses_with_named_ports():
    svc = service("web", {"app": "web"}, [("http", 80, "http")])
    pods = [web_pod("b", "10.244.0.12"), web_pod("a", "10.244.0.3"),
            web_pod("c", "10.244.0.4", ready=False),
            web_pod("other", "10.244.0.9", port_name="web", port=9000)]
    ep = endpoints.desired(svc, pods)
    assert len(ep.subsets) == 1
    subset = ep.subsets[0]
    assert [a.ip for a in subset.addresses] == ["10.244.0.3", "10.244.0.12"]
    assert [a.ip for a in subset.not_ready_addresses] == ["10.244.0.4"]
    assert [(p.name, p.port, p.protocol) for p in subset.ports] == [("http", 8080, "TCP")]
    assert subset.addresses[0].target_ref.name == "a"
    assert ep.metadata.labels["svc"] == "web"


def test_pods_with_different_ports_get_their_own_subsets():
    svc = service("web", {"app": "web"}, [("http", 80, "http")])
    pods = [web_pod("a", "10.244.0.3"), web_pod("b", "10.244.0.4", port=9090)]
    ep = endpoints.desired(svc, pods)
    assert sorted(s.ports[0].port for s in ep.subsets) == [8080, 9090]


def test_numeric_and_default_target_ports_terminal_and_terminating_pods():
    svc = service("web", {"app": "web"}, [("a", 80, 8080), ("b", 81, None)])
    done = web_pod("done", "10.244.0.5")
    done.status.phase = "Succeeded"
    going = web_pod("going", "10.244.0.6")
    going.metadata.deletion_timestamp.seconds = int(NOW)
    no_ip = web_pod("new", "")
    ep = endpoints.desired(svc, [web_pod("x", "10.244.0.7"), done, going, no_ip])
    assert [a.ip for a in ep.subsets[0].addresses] == ["10.244.0.7"]
    assert sorted(p.port for p in ep.subsets[0].ports) == [81, 8080]
    publish = service("web", {"app": "web"}, [("a", 80, 8080)], publish=True)
    ep = endpoints.desired(publish, [web_pod("x", "10.244.0.7", ready=False), going])
    assert sorted(a.ip for a in ep.subsets[0].addresses) == ["10.244.0.6", "10.244.0.7"]


def test_statefulset_pods_get_hostnames_behind_their_headless_service():
    svc = service("db", {"app": "web"}, [("pg", 5432, 5432)])
    svc.spec.cluster_ip = "None"
    p = web_pod("db-0", "10.244.0.3")
    p.spec.hostname, p.spec.subdomain = "db-0", "db"
    q = web_pod("x", "10.244.0.4")
    q.spec.hostname, q.spec.subdomain = "x", "other"
    ep = endpoints.desired(svc, [p, q])
    by_ip = {a.ip: a.hostname for a in ep.subsets[0].addresses}
    assert by_ip == {"10.244.0.3": "db-0", "10.244.0.4": ""}


def test_reconcile_creates_updates_only_on_change_and_deletes():
    svc = service("web", {"app": "web"}, [("http", 80, "http")])
    pods = [web_pod("a", "10.244.0.3")]
    created = endpoints.reconcile(svc, None, pods).of_type(Create)[0].obj
    created.metadata.resource_version = "5"
    assert endpoints.reconcile(svc, created, pods).actions == []
    update = endpoints.reconcile(svc, created, [*pods, web_pod("b", "10.244.0.4")])
    assert update.of_type(Update)[0].obj.metadata.resource_version == "5"
    gone = endpoints.reconcile(None, created, pods)
    assert [d.name for d in gone.of_type(Delete)] == ["web"]
    selectorless = service("ext", {}, [("http", 80, 80)])
    assert endpoints.reconcile(selectorless, None, pods).actions == []


def test_gc_deletes_orphans_only_when_every_owner_is_gone():
    rs = replicaset("web-abc", 1, {"app": "web"})
    p = pod("p", owner=rs)
    assert gc.plan_dependent(p, lambda ref: True).actions == []
    assert gc.plan_dependent(p, lambda ref: None).actions == []
    result = gc.plan_dependent(p, lambda ref: False)
    d = result.of_type(Delete)[0]
    assert (d.name, d.uid) == ("p", p.metadata.uid)
    other = replicaset("other", 1, {"app": "web"})
    p.metadata.owner_references.add(kind="ReplicaSet", name="other", uid=other.metadata.uid)
    result = gc.plan_dependent(p, lambda ref: ref.uid == other.metadata.uid)
    refs = result.of_type(Update)[0].obj.metadata.owner_references
    assert [r.uid for r in refs] == [other.metadata.uid]


def test_gc_orphan_and_foreground_finalizers():
    rs = replicaset("web-abc", 1, {"app": "web"})
    rs.metadata.deletion_timestamp.seconds = int(NOW)
    rs.metadata.finalizers.append("orphan")
    p = pod("p", owner=rs)
    result = gc.plan_owner(rs, [p])
    assert list(result.of_type(Update)[0].obj.metadata.owner_references) == []
    result = gc.plan_owner(rs, [])
    assert list(result.of_type(Update)[0].obj.metadata.finalizers) == []
    rs.metadata.finalizers[:] = ["foregroundDeletion"]
    result = gc.plan_owner(rs, [p])
    assert [(d.name, d.propagation_policy) for d in result.of_type(Delete)] == [
        ("p", "Foreground")]
    assert result.of_type(Update) == []
    p.metadata.deletion_timestamp.seconds = int(NOW)
    assert gc.plan_owner(rs, [p]).actions == []
    result = gc.plan_owner(rs, [])
    assert list(result.of_type(Update)[0].obj.metadata.finalizers) == []


def test_claim_binding_for_hand_bound_pods_and_status():
    c = claim("data")
    c.spec.resources.requests["storage"] = "1Gi"
    p = pod("p", node_name="n3", claims=["data"])
    result = housekeeping.reconcile_claim(c, [p], "/srv/vol")
    new = result.of_type(Update)[0].obj
    assert new.spec.volume_name == f"n3:/srv/vol/default/data-{c.metadata.uid}"
    bound = housekeeping.reconcile_claim(new, [p], "/srv/vol").of_type(UpdateStatus)[0].obj
    assert bound.status.phase == "Bound" and bound.status.capacity["storage"] == "1Gi"
    pending = housekeeping.reconcile_claim(claim("x"), [], "/srv/vol")
    assert pending.of_type(UpdateStatus)[0].obj.status.phase == "Pending"


def test_event_ttl():
    ev = core_pb2.Event(api_version="v1", kind="Event")
    meta(ev, "web.1")
    ev.last_timestamp.CopyFrom(to_timestamp(NOW - 3000))
    result = housekeeping.reconcile_event(ev, NOW, 3600)
    assert result.actions == [] and 600 < result.requeue_after < 602
    ev.last_timestamp.CopyFrom(to_timestamp(NOW - 3700))
    assert housekeeping.reconcile_event(ev, NOW, 3600).of_type(Delete)[0].name == "web.1"
