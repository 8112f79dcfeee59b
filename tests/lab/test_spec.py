"""The lab's pure parts: naming, addressing, paths, configs, readiness decisions,
mountinfo parsing, lab.json, preflight messages. No root, no machine changes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from corral.lab import configs, health, mounts, preflight
from corral.lab import state as labstate
from corral.lab.errors import LabError
from corral.lab.spec import (
    AGENT,
    CONTROLPLANE,
    NETPROXY,
    LabSpec,
    check_name,
    host_mac,
    owner_host,
    plan,
)
from corral.v1 import api_pb2, core_pb2, meta_pb2

ALL = (CONTROLPLANE, AGENT, NETPROXY)


def test_plan_names_addresses_and_paths() -> None:
    p = plan(LabSpec(name="demo", hosts=4, control_plane=3, components=ALL), Path("/r"))
    assert p.switch_ns == "corral-demo-sw"
    assert [h.netns for h in p.hosts] == [f"corral-demo-h{k}" for k in range(1, 5)]
    assert [h.ip for h in p.hosts] == ["10.250.0.11", "10.250.0.12", "10.250.0.13",
                                       "10.250.0.14"]
    h1 = p.host("h1")
    assert h1.socket == Path("/r/demo/h1/api.sock")
    assert h1.raft_address == "10.250.0.11:7000" and h1.api_address == "10.250.0.11:6443"
    assert h1.cgroup == "/corral-lab-demo/h1" and h1.pod_cgroup == "/corral-lab-demo/h1/pods"
    assert h1.netns_prefix == "corral-demo-h1-"
    assert [pr.component for pr in h1.processes] == list(ALL)
    assert [pr.component for pr in p.host("h4").processes] == [AGENT, NETPROXY]
    assert [h.name for h in p.control_plane_hosts] == ["h1", "h2", "h3"]
    assert p.sockets() == [f"unix:/r/demo/h{k}/api.sock" for k in (1, 2, 3)]
    assert h1.process(AGENT).argv(Path("/v/bin")) == [
        "/v/bin/corral-agent", "--config", "/r/demo/h1/etc/agent.yaml"]
    with pytest.raises(LabError, match=r"no host 'h7'.*h1, h2, h3, h4"):
        p.host("h7")
    with pytest.raises(LabError, match="runs no controlplane"):
        p.host("h4").process(CONTROLPLANE)


def test_macs_are_stable_unicast_and_distinct() -> None:
    macs = {host_mac("demo", k) for k in range(1, 65)}
    assert len(macs) == 64
    assert host_mac("demo", 1) == host_mac("demo", 1) != host_mac("other", 1)
    first = int(host_mac("demo", 3).split(":")[0], 16)
    assert first & 1 == 0 and first & 2 == 2  # unicast, locally administered


@pytest.mark.parametrize("name,why", [
    ("", "must not be empty"),
    ("Lab", "lower-case"),
    ("1lab", "starting with a letter"),
    ("lab-", "ending with a letter or digit"),
    ("a-h1", "looks like a host name"),
    ("h2", "looks like a host name"),
    ("x" * 21, "at most 20"),
])
def test_bad_lab_names_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(LabError, match=why):
        check_name(name)


def test_names_of_two_labs_never_claim_each_others_namespaces() -> None:
    check_name("a-h1x")
    check_name("lab-sw")
    a = plan(LabSpec(name="a", hosts=2, control_plane=1), Path("/r"))
    b = plan(LabSpec(name="a-b", hosts=2, control_plane=1), Path("/r"))
    for ns in [*b.namespaces, "corral-a-b-h1-pod1"]:
        assert not a.owns_netns(ns), ns
    assert a.owns_netns("corral-a-h2-default-web-0")
    assert owner_host("a", "corral-a-h2-x") == "h2"
    assert owner_host("a", "corral-a-sw") is None
    assert owner_host("a", "corral-ab-h1") is None


@pytest.mark.parametrize("kwargs,why", [
    ({"hosts": 0}, "--hosts: must be between 1 and 64"),
    ({"hosts": 65}, "--hosts"),
    ({"control_plane": 4}, "--control-plane: must be between 1 and the number of hosts"),
    ({"control_plane": 0}, "--control-plane"),
    ({"components": ("agent",)}, "must include controlplane"),
    ({"components": ("controlplane", "kubelet")}, "unknown kubelet"),
    ({"components": ("controlplane", "controlplane")}, "listed twice"),
    ({"subnet": "10.244.3.0/24"}, "overlaps the cluster CIDR"),
    ({"subnet": "10.100.0.0/24"}, "overlaps the service CIDR"),
    ({"subnet": "10.250.0.1/24"}, "not an IPv4 network"),
    ({"subnet": "fd00::/64"}, "only IPv4"),
    ({"subnet": "10.250.0.0/28", "hosts": 5}, "too small for 5 hosts"),
    ({"log_level": "loud"}, "log level"),
])
def test_bad_specs_are_refused_naming_the_setting(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(LabError, match=why):
        plan(LabSpec(**kwargs), Path("/r"))  # type: ignore[arg-type]


def test_paths_too_long_for_unix_sockets_or_podman_are_refused() -> None:
    with pytest.raises(LabError, match="over the 107 a unix socket allows"):
        plan(LabSpec(), Path("/" + "x" * 100))
    with pytest.raises(LabError, match="over the 50 Podman accepts"):
        plan(LabSpec(), Path("/r"), run_root=Path("/" + "x" * 40))
    # The longest name on the default roots fits both limits.
    longest = plan(LabSpec(name="x" * 20, hosts=64, control_plane=3), Path("/var/lib/corral-lab"))
    assert len(str(longest.hosts[-1].podman_runroot)) <= 50


def test_spec_round_trips_through_lab_json(tmp_path: Path) -> None:
    spec = LabSpec(name="demo", hosts=5, control_plane=3, components=ALL, subnet="10.251.0.0/24")
    st = labstate.LabState(spec=spec, commands={"controlplane": ["/bin/x"]})
    st.host("h1").processes["controlplane"] = labstate.ProcRecord(
        "controlplane", 42, 1234.5, ["/bin/x", "--config", "c"], "/l")
    st.note("namespaces", "corral-demo-sw")
    st.note("namespaces", "corral-demo-sw")
    labstate.save(tmp_path / "lab.json", st)
    back = labstate.load(tmp_path / "lab.json")
    assert back.spec == spec
    assert back.to_dict() == st.to_dict()
    assert back.made == {"namespaces": ["corral-demo-sw"]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LabError, match="unreadable lab record"):
        labstate.load(tmp_path / "bad.json")
    with pytest.raises(LabError, match="no lab record"):
        labstate.load(tmp_path / "missing.json")


def test_controlplane_config_has_the_keys_of_docs_api() -> None:
    p = plan(LabSpec(name="demo", hosts=3, control_plane=3), Path("/r"))
    cfg = yaml.safe_load(configs.render_component(p, p.host("h2"), CONTROLPLANE))
    assert cfg == {
        "name": "h2",
        "raft_address": "10.250.0.12:7000",
        "peers": {"h1": "10.250.0.11:7000", "h2": "10.250.0.12:7000", "h3": "10.250.0.13:7000"},
        "listen": "10.250.0.12:6443",
        "socket": "/r/demo/h2/api.sock",
        "data_dir": "/r/demo/h2/controlplane",
        "raft_password_file": "/r/demo/raft-password",
        "cluster_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "node_port_range": "30000-32767",
        "log_level": "info",
        "controllers": {"volume_root": "/r/demo/volumes"},
    }


def test_agent_and_netproxy_configs_point_at_the_replicas_over_the_lab_network() -> None:
    p = plan(LabSpec(name="demo", hosts=4, control_plane=3, components=ALL), Path("/r"))
    agent = yaml.safe_load(configs.render_component(p, p.host("h4"), AGENT))
    assert agent["node_name"] == "h4" and agent["node_ip"] == "10.250.0.14"
    assert agent["servers"] == ["10.250.0.11:6443", "10.250.0.12:6443", "10.250.0.13:6443"]
    assert agent["netns_prefix"] == "corral-demo-h4-"
    assert agent["podman"]["cgroup_parent"] == "/corral-lab-demo/h4/pods"
    assert agent["podman"]["additional_image_stores"] == ["/r/demo/images"]
    assert agent["podman"]["containers_conf"] == "/r/demo/h4/etc/containers.conf"
    proxy = yaml.safe_load(configs.render_component(p, p.host("h1"), NETPROXY))
    assert proxy["servers"] == agent["servers"] and proxy["cluster_dns"] == "10.96.0.10"


def test_podman_files_carry_the_three_settings_and_the_shared_store() -> None:
    p = plan(LabSpec(name="demo"), Path("/r"))
    cc = configs.containers_conf(p.host("h1"))
    for line in ('runtime = "runc"', 'cgroup_manager = "cgroupfs"',
                 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
                 'tmp_dir = "/run/corral-lab/demo/h1/libpod"'):
        assert line in cc
    sc = configs.storage_conf(p, p.host("h1"))
    assert 'graphroot = "/r/demo/h1/storage"' in sc
    assert 'runroot = "/run/corral-lab/demo/h1/storage"' in sc
    assert 'additionalimagestores = ["/r/demo/images"]' in sc


def test_client_config_lists_the_sockets_and_says_which_lab_wrote_it() -> None:
    p = plan(LabSpec(name="demo", hosts=4, control_plane=3), Path("/r"))
    text = configs.client_config(p)
    assert yaml.safe_load(text) == {"servers": p.sockets()}
    assert configs.written_by(text) == "/r/demo"
    assert configs.written_by("servers: [x]\n") is None
    assert configs.written_by("") is None


def member(name: str, leader: str) -> api_pb2.MemberStatus:
    return api_pb2.MemberStatus(name=name, leader=leader, state="leader" if leader == name
                                else "follower")


def test_raft_verdict_wants_one_leader_all_agree_on() -> None:
    V = health.ReplicaView
    ok, why = health.raft_verdict([V("h1", member("h1", "h1")), V("h2", member("h2", "h1"))])
    assert ok and why == "leader h1"
    ok, why = health.raft_verdict([V("h1", member("h1", "")), V("h2", member("h2", ""))])
    assert not ok and "no Raft leader" in why
    ok, why = health.raft_verdict([V("h1", member("h1", "h1")), V("h2", member("h2", "h2"))])
    assert not ok and "do not agree" in why
    ok, why = health.raft_verdict([V("h1", member("h1", "h1")), V("h2", None, "UNAVAILABLE")])
    assert not ok and why.startswith("h2: not answering (UNAVAILABLE")
    ok, why = health.raft_verdict([V("h1", member("h1", "h1"), serving=False)])
    assert not ok and "not SERVING" in why
    assert health.raft_verdict([V("h1", member("h1", "h1"), serving=None)])[0]
    assert not health.raft_verdict([])[0]


def node(name: str, ready: str | None, beat: int = 1000) -> core_pb2.Node:
    n = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))
    if ready is not None:
        cond = n.status.conditions.add(type="Ready", status=ready)
        cond.last_heartbeat_time.seconds = beat
    return n


def test_nodes_verdict_wants_every_host_registered_and_ready() -> None:
    ok, why = health.nodes_verdict([node("h1", "True"), node("h2", "True")], ["h1", "h2"])
    assert ok and why == "2 nodes Ready"
    ok, why = health.nodes_verdict([node("h1", "True")], ["h1", "h2"])
    assert not ok and why == "nodes not registered yet: h2"
    ok, why = health.nodes_verdict([node("h1", "False"), node("h2", None)], ["h1", "h2"])
    assert not ok and why == "nodes not Ready yet: h1, h2"


def test_mountinfo_parsing_and_what_is_under_a_folder() -> None:
    text = (
        "36 35 98:0 / /mnt/lab rw,noatime master:1 - ext4 /dev/root rw\n"
        "37 36 0:5 / /mnt/lab/h1/storage/overlay rw - ext4 /dev/vda rw\n"
        "38 37 0:6 / /mnt/lab/h1/storage/overlay/abc/merged rw - overlay overlay rw\n"
        r"39 36 0:7 / /mnt/lab/h1/with\040space rw - tmpfs shm rw" "\n"
        "40 35 0:8 / /mnt/labx rw - tmpfs x rw\n"
        "garbage line\n"
    )
    table = mounts.parse_mountinfo(text)
    assert table[3].mount_point == "/mnt/lab/h1/with space"
    assert table[2].fstype == "overlay"
    under = mounts.under(Path("/mnt/lab/h1"), table)
    # Deepest first: a mount is dropped before the one it sits on.
    assert under == ["/mnt/lab/h1/storage/overlay/abc/merged", "/mnt/lab/h1/storage/overlay",
                     "/mnt/lab/h1/with space"]
    assert "/mnt/labx" not in mounts.under(Path("/mnt/lab"), table)


def test_preflight_names_what_is_missing_and_how_to_install_it() -> None:
    present = {"nsenter", "podman", "runc"}
    gone = preflight.missing([CONTROLPLANE, NETPROXY], lambda p: p if p in present else None)
    assert gone == {"conmon": "conmon", "iptables": "iptables", "iptables-restore": "iptables",
                    "conntrack": "conntrack"}
    msg = preflight.missing_message(gone)
    assert msg.endswith("apt-get install -y conmon conntrack iptables")
    assert preflight.missing([CONTROLPLANE], lambda p: "/x") == {}
    with pytest.raises(LabError, match="needs root"):
        preflight.check([CONTROLPLANE], euid=1000)


def test_default_subnet_does_not_overlap_the_cluster_ranges() -> None:
    s = ipaddress.ip_network(LabSpec().subnet)
    for other in (LabSpec().cluster_cidr, LabSpec().service_cidr):
        assert not s.overlaps(ipaddress.ip_network(other))


def test_a_node_ready_only_from_before_a_restart_is_not_ready_yet() -> None:
    stale, fresh = node("h1", "True", beat=1000), node("h2", "True", beat=2000)
    assert health.node_ready(stale) and health.node_ready(stale, since=1000.0)
    assert not health.node_ready(stale, since=1500.0)
    ok, why = health.nodes_verdict([stale, fresh], ["h1", "h2"], since=1500.0)
    assert not ok and why == "nodes not Ready yet: h1"
