"""Unit tests (no cluster, no Podman) of the agent's pure parts: config, IPAM, env,
DNS files, projected files, container rendering, probes, PLEG diff, routes, usage."""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from corral.v1 import core_pb2
from nodeagent import (
    atomicwriter,
    containerspec,
    dnsfiles,
    envvars,
    hostnet,
    lean,
    pleg,
    probes,
    usage,
)
from nodeagent.config import ConfigError, load, parse
from nodeagent.ipam import Ipam, IpamError, next_free
from nodeagent.records import RUNNING, ContainerRecord, from_podman

BASE = {"node_name": "n1", "node_ip": "10.0.0.5", "servers": ["127.0.0.1:6443"]}


# ---- config ----------------------------------------------------------------------------------
def test_config_defaults_and_derived_paths() -> None:
    cfg = parse(dict(BASE, state_dir="/var/lib/a"))
    assert cfg.agent_port == 10250 and cfg.cluster_cidr == "10.244.0.0/16"
    assert cfg.lease_period == 2.0 and cfg.status_period == 10.0
    assert cfg.bridge == "corral0" and cfg.cluster_dns == "10.96.0.10"
    assert cfg.podman_socket == Path("/var/lib/a/podman.sock")
    assert cfg.storage_root == "/var/lib/a/storage"
    assert cfg.cgroup_parent == "/corral-n1"


@pytest.mark.parametrize(("change", "key"), [
    ({"node_ip": "nope"}, "node_ip"),
    ({"node_ip": "10.244.1.1"}, "node_ip"),
    ({"servers": []}, "servers"),
    ({"agent_port": 70000}, "agent_port"),
    ({"lease_period": 0}, "lease_period"),
    ({"lease_duration": 1}, "lease_duration"),
    ({"bridge": "a-much-too-long-name"}, "bridge"),
    ({"cluster_cidr": "10.244.0.1/16"}, "cluster_cidr"),
    ({"service_cidr": "10.244.0.0/12"}, "service_cidr"),
    ({"reserved": {"cpu": "lots"}}, "reserved.cpu"),
    ({"reserved": {"disk": "1Gi"}}, "reserved.disk"),
    ({"taints": ["dedicated=gpu:Sometimes"]}, "taints[0]"),
    ({"labels": {"bad key!": "x"}}, "labels.bad key!"),
    ({"podman": {"call_timeout": "soon"}}, "podman.call_timeout"),
    ({"podman": {"cgroup_parent": "relative"}}, "podman.cgroup_parent"),
    ({"podman": {"containers_conf": "/no/such/file"}}, "podman.containers_conf"),
    ({"podman": {"nonsense": 1}}, "podman.nonsense"),
    ({"backoff": {"base": 10, "max": 1}}, "backoff.max"),
    ({"surprise": True}, "surprise"),
])
def test_bad_config_names_the_key(change: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(dict(BASE, **change))
    assert str(err.value).startswith(f"{key}: "), str(err.value)


def test_config_file_and_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("node_name: from-file\nnode_ip: 10.0.0.9\nservers: [a:1]\n"
                    "taints: ['dedicated=gpu:NoSchedule']\nreserved: {cpu: 500m, memory: 1Gi}\n")
    cfg = load(str(path), {"node_name": "from-flag", "servers": None})
    assert cfg.node_name == "from-flag" and cfg.servers == ("a:1",)
    assert cfg.taints[0].effect == "NoSchedule" and cfg.taints[0].value == "gpu"
    assert cfg.reserved_cpu_millis == 500 and cfg.reserved_memory_bytes == 2**30
    path.write_text("[not, a, mapping]\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        load(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.yaml"))


# ---- IPAM ------------------------------------------------------------------------------------
def test_next_free_skips_gateway_and_wraps_round_robin() -> None:
    net = ipaddress.IPv4Network("10.244.3.0/29")  # .1 gateway, .2-.6 pods
    assert str(next_free(net, [])) == "10.244.3.2"
    assert str(next_free(net, ["10.244.3.2"], last="10.244.3.2")) == "10.244.3.3"
    assert str(next_free(net, ["10.244.3.3"], last="10.244.3.6")) == "10.244.3.2"
    with pytest.raises(IpamError, match="full"):
        next_free(net, [f"10.244.3.{i}" for i in range(2, 7)])


def test_ipam_persists_and_never_reuses_a_live_address(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    ipam = Ipam(path)
    ipam.set_cidr("10.244.7.0/24")
    a = ipam.allocate("pod-a")
    b = ipam.allocate("pod-b")
    assert (a, b) == ("10.244.7.2", "10.244.7.3")
    assert ipam.allocate("pod-a") == a  # idempotent
    again = Ipam(path)  # a restarted agent
    assert again.lookup("pod-b") == b
    assert again.allocate("pod-c") == "10.244.7.4"
    again.release("pod-a")
    # Round-robin: the just-released address is not the next one handed out.
    assert again.allocate("pod-d") == "10.244.7.5"
    assert json.loads(path.read_text())["allocations"] == {
        "10.244.7.3": "pod-b", "10.244.7.4": "pod-c", "10.244.7.5": "pod-d"}


def test_ipam_concurrent_allocations_are_unique(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path / "ipam.json")
    ipam.set_cidr("10.244.9.0/24")
    got: list[str] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        ip = ipam.allocate(f"pod-{i}")
        with lock:
            got.append(ip)
    threads = [threading.Thread(target=take, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 40


# ---- env -------------------------------------------------------------------------------------
def _pod() -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = "web-1"
    p.metadata.namespace = "shop"
    p.metadata.uid = "u-1"
    p.metadata.labels["app"] = "web"
    p.spec.node_name = "n1"
    return p


def test_env_expansion_rules() -> None:
    env = {"A": "x", "B": "y"}
    assert envvars.expand("$(A)-$(B)", env) == "x-y"
    assert envvars.expand("$$(A)", env) == "$(A)"
    assert envvars.expand("$(MISSING) $(A", env) == "$(MISSING) $(A"


def test_env_resolution_sources_and_errors() -> None:
    cm = core_pb2.ConfigMap(data={"k": "v", "bad-name": "skip", "OK_NAME": "o"})
    sec = core_pb2.Secret(data={"pw": b"hunter2"})
    c = core_pb2.Container(name="c")
    c.env_from.add(config_map_ref=core_pb2.NameOptional(name="cm"), prefix="P_")
    c.env.add(name="FROM_CM", value_from=core_pb2.EnvVarSource(
        config_map_key_ref=core_pb2.KeySelector(name="cm", key="k")))
    c.env.add(name="PW", value_from=core_pb2.EnvVarSource(
        secret_key_ref=core_pb2.KeySelector(name="sec", key="pw")))
    c.env.add(name="IP", value_from=core_pb2.EnvVarSource(
        field_ref=core_pb2.ObjectFieldSelector(field_path="status.podIP")))
    c.env.add(name="APP", value_from=core_pb2.EnvVarSource(
        field_ref=core_pb2.ObjectFieldSelector(field_path="metadata.labels['app']")))
    c.env.add(name="BOTH", value="$(FROM_CM)/$(PW)")
    env = envvars.resolve(_pod(), c, pod_ip="10.244.0.9", host_ip="10.0.0.5",
                          get_configmap=lambda ns, n: cm if (ns, n) == ("shop", "cm") else None,
                          get_secret=lambda ns, n: sec if n == "sec" else None)
    assert env == {"P_k": "v", "P_bad-name": "skip", "P_OK_NAME": "o", "FROM_CM": "v",
                   "PW": "hunter2", "IP": "10.244.0.9", "APP": "web", "BOTH": "v/hunter2"}

    missing = core_pb2.Container(name="c")
    missing.env.add(name="X", value_from=core_pb2.EnvVarSource(
        secret_key_ref=core_pb2.KeySelector(name="sec", key="nope")))
    with pytest.raises(envvars.ContainerConfigError,
                       match="couldn't find key nope in Secret shop/sec"):
        envvars.resolve(_pod(), missing, pod_ip="", host_ip="", get_configmap=lambda *_: None,
                        get_secret=lambda ns, n: sec)
    optional = core_pb2.Container(name="c")
    optional.env.add(name="X", value_from=core_pb2.EnvVarSource(
        config_map_key_ref=core_pb2.KeySelector(name="none", key="k", optional=True)))
    assert envvars.resolve(_pod(), optional, pod_ip="", host_ip="",
                           get_configmap=lambda *_: None, get_secret=lambda *_: None) == {}
    with pytest.raises(envvars.ContainerConfigError, match='configmap "none" not found'):
        optional.env[0].value_from.config_map_key_ref.ClearField("optional")
        envvars.resolve(_pod(), optional, pod_ip="", host_ip="",
                        get_configmap=lambda *_: None, get_secret=lambda *_: None)


def test_command_and_args_map_to_entrypoint_and_cmd() -> None:
    c = core_pb2.Container(command=["sh", "-c"], args=["echo $(X)"])
    assert envvars.command_line(c, {"X": "1"}) == (["sh", "-c"], ["echo 1"])
    assert envvars.command_line(core_pb2.Container(command=["sleep", "1"]), {}) == (
        ["sleep", "1"], [])
    assert envvars.command_line(core_pb2.Container(args=["-v"]), {}) == (None, ["-v"])
    assert envvars.command_line(core_pb2.Container(), {}) == (None, None)


# ---- DNS files -------------------------------------------------------------------------------
def test_resolv_conf_cluster_first_and_default() -> None:
    p = _pod()
    text = dnsfiles.resolv_conf(p, cluster_dns="10.96.0.10", cluster_domain="cluster.local",
                                host_resolv="nameserver 8.8.8.8\nsearch corp.example\n")
    assert text == ("nameserver 10.96.0.10\n"
                    "search shop.svc.cluster.local svc.cluster.local cluster.local "
                    "corp.example\noptions ndots:5\n")
    p.spec.dns_policy = "Default"
    assert dnsfiles.resolv_conf(p, cluster_dns="x", cluster_domain="y",
                                host_resolv="nameserver 1.1.1.1") == "nameserver 1.1.1.1\n"


def test_hosts_file_names_the_pod() -> None:
    p = _pod()
    assert "10.244.0.9\tweb-1\n" in dnsfiles.hosts(p, "10.244.0.9", cluster_domain="c.l")
    p.spec.hostname = "db-0"
    p.spec.subdomain = "db"
    assert "10.244.0.9\tdb-0.db.shop.svc.c.l\tdb-0\n" in dnsfiles.hosts(
        p, "10.244.0.9", cluster_domain="c.l")
    assert dnsfiles.hosts(p, "", cluster_domain="c.l").startswith("# Kubernetes-managed")


# ---- atomic writer ---------------------------------------------------------------------------
def test_atomic_writer_swaps_data_and_links(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert atomicwriter.write(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert (d / "a").read_bytes() == b"1" and (d / "sub" / "b").read_bytes() == b"2"
    assert os.readlink(d / "a") == "..data/a"
    first = os.readlink(d / "..data")
    assert not atomicwriter.write(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert atomicwriter.write(d, {"a": (b"3", 0o644)})
    assert os.readlink(d / "..data") != first
    assert not (d / first).exists()
    assert not (d / "sub").exists()
    assert (d / "a").read_bytes() == b"3"
    assert ((d / "..data" / "a").stat().st_mode & 0o777) == 0o644
    with pytest.raises(atomicwriter.PayloadError):
        atomicwriter.write(d, {"../escape": (b"x", 0o644)})


# ---- container rendering ---------------------------------------------------------------------
def test_create_kwargs_render_limits_mounts_and_network() -> None:
    pod = _pod()
    c = core_pb2.Container(name="web", image="img:1", command=["httpd"], args=["-f"],
                           working_dir="/srv")
    c.resources.limits.update({"cpu": "1500m", "memory": "128Mi"})
    c.volume_mounts.add(name="data", mount_path="/data", read_only=True, sub_path="x")
    mounts = containerspec.mounts_for(c, {"data": "/var/vol/data"}, "spec.containers[0]")
    kw = containerspec.create_kwargs(
        pod, c, name="n", labels={"l": "v"}, env={"A": "1"}, netns_path="/run/netns/p",
        mounts=mounts, hosts_path="/h", resolv_path="/r", cgroup_parent="/cg",
        hostname="web-1", where="spec.containers[0]")
    assert kw["network_mode"] == "ns:/run/netns/p"
    assert (kw["entrypoint"], kw["command"], kw["working_dir"]) == (["httpd"], ["-f"], "/srv")
    assert (kw["cpu_quota"], kw["cpu_period"], kw["mem_limit"]) == (150000, 100000, 2**27)
    assert kw["cpu_shares"] == 1536
    assert {"type": "bind", "source": "/var/vol/data/x", "target": "/data",
            "read_only": True} in kw["mounts"]
    assert kw["mounts"][0] == {"type": "bind", "source": "/h", "target": "/etc/hosts"}
    with pytest.raises(envvars.ContainerConfigError, match="volume 'data' is not ready"):
        containerspec.mounts_for(c, {}, "spec.containers[0]")
    c.volume_mounts[0].sub_path = "../up"
    with pytest.raises(envvars.ContainerConfigError, match="subPath"):
        containerspec.mounts_for(c, {"data": "/v"}, "spec.containers[0]")


def test_kubelet_cpu_formulas() -> None:
    assert containerspec.cpu_quota(1) == 1000 and containerspec.cpu_quota(250) == 25000
    assert containerspec.cpu_shares(0) == 2 and containerspec.cpu_shares(100) == 102


# ---- probes ----------------------------------------------------------------------------------
def test_probe_defaults_and_thresholds() -> None:
    s = probes.defaults(core_pb2.Probe(success_threshold=3), probes.LIVENESS)
    assert (s.period, s.timeout, s.success_threshold, s.failure_threshold) == (10, 1, 1, 3)
    r = probes.defaults(core_pb2.Probe(success_threshold=2, period_seconds=1,
                                       initial_delay_seconds=5), probes.READINESS)
    state = probes.ProbeState.new(probes.READINESS, r, "c1", started_at=100.0)
    assert state.next_due == 105.0 and state.result is False
    assert not probes.record(state, True, 105.0)
    assert probes.record(state, True, 106.0) and state.result is True
    assert state.next_due == 107.0
    assert not probes.record(state, False, 107.0)
    assert not probes.record(state, False, 108.0)
    assert probes.record(state, False, 109.0) and state.result is False


def test_liveness_starts_true_and_startup_signals_once() -> None:
    live = probes.ProbeState.new(probes.LIVENESS, probes.defaults(
        core_pb2.Probe(failure_threshold=2), probes.LIVENESS), "c", 0.0)
    assert live.result is True
    assert not probes.record(live, False, 1.0)
    assert probes.record(live, False, 2.0) and live.result is False
    start = probes.ProbeState.new(probes.STARTUP, probes.defaults(
        core_pb2.Probe(failure_threshold=2), probes.STARTUP), "c", 0.0)
    assert not probes.record(start, False, 1.0)
    assert probes.record(start, False, 2.0)
    assert not probes.record(start, False, 3.0)


def test_prober_gates_liveness_behind_startup_and_reports() -> None:
    calls: list[list[str]] = []
    changes: list[str] = []
    results = {"startup": 1, "live": 0}

    def exec_fn(cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes, bytes]:
        calls.append(cmd)
        return results[cmd[0]], b"", b""

    clock = [1000.0]
    prober = probes.Prober(exec_fn=exec_fn, on_change=changes.append, clock=lambda: clock[0])
    pod = _pod()
    spec = pod.spec.containers.add(name="c")
    spec.startup_probe.exec.command.append("startup")
    spec.startup_probe.period_seconds = 1
    spec.liveness_probe.exec.command.append("live")
    spec.liveness_probe.period_seconds = 1
    # Drive the scheduler by hand: no thread, a fake clock.
    prober.sync_pod(pod, {"c": ("cid-1", 1000.0)}, "10.244.0.9")
    assert prober.view("u-1", "c", "cid-1") == probes.ProbeView(started=False, ready=False)
    key_s = ("u-1", "c", probes.STARTUP)
    key_l = ("u-1", "c", probes.LIVENESS)
    assert prober._gated(key_l)
    prober._run(key_s, prober._targets[key_s])  # startup fails (exit 1)
    results["startup"] = 0
    prober._run(key_s, prober._targets[key_s])
    assert changes == ["u-1"] and not prober._gated(key_l)
    assert prober.view("u-1", "c", "cid-1").started
    for _ in range(3):
        prober._run(key_l, prober._targets[key_l])
    assert prober.failed_liveness("u-1") == {}
    results["live"] = 1
    for _ in range(3):
        prober._run(key_l, prober._targets[key_l])
    assert "cid-1" in prober.failed_liveness("u-1")
    # A new container id starts fresh probe states.
    prober.sync_pod(pod, {"c": ("cid-2", 1010.0)}, "10.244.0.9")
    assert prober.failed_liveness("u-1") == {}
    prober._pool.shutdown()


def test_probe_port_by_number_or_name() -> None:
    c = core_pb2.Container()
    c.ports.add(name="http", container_port=8080)
    assert probes._port(struct_pb2.Value(number_value=81), c) == 81
    assert probes._port(struct_pb2.Value(string_value="http"), c) == 8080
    with pytest.raises(ValueError, match="no container port named"):
        probes._port(struct_pb2.Value(string_value="grpc"), c)


# ---- PLEG diff, records ----------------------------------------------------------------------
def _attrs(uid: str, cid: str, state: str = "running", **labels: str) -> dict[str, object]:
    return {"Id": cid, "Names": [f"n-{cid}"], "State": state, "ExitCode": 0,
            "StartedAt": 1000, "ExitedAt": 0, "Pid": 42,
            "Labels": {"io.corral.pod.uid": uid, "io.corral.container.name": "c",
                       "io.corral.container.attempt": "2", **labels}}


def test_records_from_podman_list() -> None:
    r = from_podman(_attrs("u1", "abc"))
    assert r is not None and (r.pod_uid, r.name, r.attempt, r.state, r.pid) == (
        "u1", "c", 2, RUNNING, 42)
    assert from_podman({"Id": "x", "Labels": {}}) is None
    # Reset by Podman after a reboot ("created" again, but it ran): it died, killed.
    reset = from_podman(_attrs("u1", "r", "configured"))
    assert reset is not None and (reset.state, reset.exit_code) == ("exited", 137)
    never = from_podman(dict(_attrs("u1", "n", "created"), StartedAt=0))
    assert never is not None and never.state == "created"


def test_generate_events_names_changed_pods() -> None:
    def rec(uid: str, cid: str, state: str = "running") -> ContainerRecord:
        r = from_podman(_attrs(uid, cid, state))
        assert r is not None
        return r
    old = {"a": rec("u1", "a"), "b": rec("u2", "b"), "c": rec("u3", "c")}
    new = {"a": rec("u1", "a"), "b": rec("u2", "b", "exited"), "d": rec("u4", "d")}
    assert pleg.generate_events(old, new) == {"u2", "u3", "u4"}
    assert pleg.generate_events(new, new) == set()
    moved = dict(new, a=replace(new["a"], started_at=2000.0))
    assert pleg.generate_events(new, moved) == {"u1"}


# ---- routes ----------------------------------------------------------------------------------
def test_desired_routes_skip_self_and_foreign_cidrs() -> None:
    nodes = [("n1", "10.244.1.0/24", "10.0.0.1"), ("n2", "10.244.2.0/24", "10.0.0.2"),
             ("n3", "", "10.0.0.3"), ("n4", "192.168.0.0/24", "10.0.0.4"),
             ("n5", "10.244.5.0/24", "")]
    routes = hostnet.desired_routes("n1", nodes, "10.244.0.0/16")
    assert routes == {"10.244.2.0/24": hostnet.NodeRoute("n2", "10.244.2.0/24", "10.0.0.2")}
    rules = hostnet.masquerade_rules("10.244.0.0/16")
    assert rules[0][:4] == ["-s", "10.244.0.0/16", "!", "-d"]


# ---- usage -----------------------------------------------------------------------------------
def test_usage_parsers_and_rate() -> None:
    groups = usage.parse_proc_cgroup("4:memory:/a/libpod-x\n2:cpu,cpuacct:/a/libpod-x\n0::/u\n")
    assert groups == {"memory": "/a/libpod-x", "cpu": "/a/libpod-x", "cpuacct": "/a/libpod-x",
                      "": "/u"}
    stat = usage.parse_memory_stat("cache 10\ntotal_inactive_file 300\n")
    assert usage.working_set(1000, stat) == 700
    a = usage.Reading(10.0, 1_000_000_000, 0)
    b = usage.Reading(12.0, 2_000_000_000, 0)
    assert usage.millicores(a, b) == 500


def test_sampler_reads_this_process_cgroup() -> None:
    s = usage.Sampler(min_interval=0.0)
    first = s.sample({"me": os.getpid()})
    assert "me" in first, "cgroup accounting files of this process are not readable"
    sum(i * i for i in range(200_000))
    second = s.sample({"me": os.getpid()})
    assert second["me"][1] > 0


# ---- work queue ---------------------------------------------------------------------------
def test_work_queue_handles_each_key_promptly_once_at_a_time() -> None:
    import time

    from nodeagent.workqueue import WorkQueue

    seen: list[str] = []
    active: set[str] = set()
    overlap: list[str] = []
    lock = threading.Lock()

    def handle(key: object) -> None:
        k = str(key)
        with lock:
            if k in active:
                overlap.append(k)
            active.add(k)
        time.sleep(0.005)
        with lock:
            active.discard(k)
            seen.append(k)

    q = WorkQueue("t", handle, workers=3)
    q.start()
    try:
        # The timer thread waits on the same condition as the workers; a wake-up
        # must reach a worker even when the timer has waited longest.
        q.add_after("late", 30.0)
        time.sleep(0.1)
        for i in range(10):
            q.add(f"k{i}")
            deadline = time.monotonic() + 1.0
            while f"k{i}" not in seen and time.monotonic() < deadline:
                time.sleep(0.005)
            assert f"k{i}" in seen, f"k{i} waited more than a second"
            time.sleep(0.05)
        for _ in range(5):
            q.add("same")
        time.sleep(0.2)
        assert not overlap
        assert "late" not in seen
    finally:
        q.stop()


# ---- the process: bad configuration ---------------------------------------------------------
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "agent.yaml"
    cfg.write_text("node_ip: 10.0.0.5\nservers: [a:1]\npodman: {call_timeout: soon}\n")
    proc = subprocess.run([sys.executable, "-m", "nodeagent.main", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "corral-agent: bad configuration: podman.call_timeout: must be a number of seconds, "
        "got 'soon'"]
    proc = subprocess.run([sys.executable, "-m", "nodeagent.main", "--config", str(cfg),
                           "--agent-port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "agent_port: must be between 1 and 65535" in proc.stderr


# ---- runtime health -----------------------------------------------------------------------------
def test_runtime_counts_silence_and_dropped_connections_as_unhealthy(tmp_path: Path) -> None:
    """A Podman that accepts but never answers (hung), or drops every connection, must
    not pass for an answering one (podman-py wraps transport errors in APIError)."""
    import socket
    import time

    from nodeagent.runtime import Runtime, RuntimeTimeout, RuntimeUnavailable

    hung = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(hung))
    srv.listen(16)
    r = Runtime(str(hung), call_timeout=0.5)
    try:
        assert r.ping(timeout=0.5) is False
        with pytest.raises(RuntimeTimeout):
            r.list_containers()
        assert not r.health.healthy and r.health.consecutive_failures >= 2
    finally:
        r.close()
        srv.close()

    dropping = tmp_path / "drop.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(dropping))
    srv.listen(16)
    stop = threading.Event()

    def drop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                continue
    t = threading.Thread(target=drop, daemon=True)
    t.start()
    r = Runtime(str(dropping), call_timeout=2.0)
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeUnavailable):
            r.list_containers()
        assert time.monotonic() - start < 2.0
        assert not r.health.healthy
    finally:
        stop.set()
        t.join(2)
        r.close()
        srv.close()


# ---- the Podman service left by an earlier agent -----------------------------------------------
def test_leftover_service_is_stopped_but_a_zombie_or_a_recycled_pid_is_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a power loss the earlier agent's service is a zombie waiting for PID 1:
    it is dead already and must not be "stopped" (nor waited on for 10 s)."""
    import logging
    import subprocess
    import time

    import psutil

    from nodeagent.podman_service import PodmanService

    cfg = parse(dict(BASE, state_dir=str(tmp_path)))
    service = PodmanService(cfg, ping=lambda _t: True)
    pidfile = tmp_path / "podman-service.pid"

    def record(pid: int, created: float | None = None) -> None:
        when = psutil.Process(pid).create_time() if created is None else created
        pidfile.write_text(f"{pid} {when}\n")

    caplog.set_level(logging.INFO, logger="nodeagent.podman_service")
    zombie = subprocess.Popen(["true"])
    try:
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        record(zombie.pid)
        t0 = time.monotonic()
        service._stop_leftover()
        assert time.monotonic() - t0 < 1.0
        assert "left by an earlier agent" not in caplog.text
    finally:
        zombie.wait()

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record(sleeper.pid, created=psutil.Process(sleeper.pid).create_time() - 100)
        service._stop_leftover()  # same PID, another process: never signalled
        assert sleeper.poll() is None
        record(sleeper.pid)
        service._stop_leftover()
        # Ended (psutil reaped our child, so Popen sees no status of its own).
        assert sleeper.wait(5) in (0, -15) and not psutil.pid_exists(sleeper.pid)
        assert "stopping the podman service left by an earlier agent" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()


# ---- fencing -----------------------------------------------------------------------------------
def test_fence_after_silence_and_unfence_only_once_the_control_plane_heard_of_us() -> None:
    from nodeagent.fence import Fence

    now = [100.0]
    beat = [100.0]
    heard = [(False, "node still carries the node.kubernetes.io/unreachable taint")]
    fence = Fence(after=20.0, grace=5.0, enabled=True, last_heartbeat=lambda: beat[0],
                  confirm=lambda: heard[0], on_change=lambda _f: None, clock=lambda: now[0])
    now[0] = 119.9
    assert fence.check() == "" and fence.state() == (False, 0)
    now[0] = 120.0
    assert fence.check().startswith("fenced: no heartbeat acknowledged for 20.0s")
    assert fence.state() == (True, 1)
    now[0] = 125.0
    beat[0] = 124.0  # heartbeats acknowledged again, but the taint is still there
    assert fence.check() == "" and fence.fenced
    heard[0] = (True, "")
    assert fence.check().startswith("unfenced") and fence.state() == (False, 1)
    now[0] = 150.0
    assert fence.check().startswith("fenced") and fence.state() == (True, 2)

    off = Fence(after=20.0, grace=5.0, enabled=False, last_heartbeat=lambda: 0.0,
                confirm=lambda: (True, ""), on_change=lambda _f: None, clock=lambda: 1e6)
    assert off.check() == "" and not off.fenced


def test_identity_pods_and_their_container_label() -> None:
    from corral.v1 import meta_pb2
    from nodeagent import records
    from nodeagent.fence import carries_identity, heard_of

    pod = core_pb2.Pod()
    pod.metadata.uid = "u1"
    assert not carries_identity(pod)
    pod.metadata.owner_references.append(meta_pb2.OwnerReference(kind="ReplicaSet", name="r"))
    assert not carries_identity(pod)
    assert records.IDENTITY not in records.container_labels(
        pod, core_pb2.Container(name="c"), init=False, attempt=0, node_name="n")
    pod.metadata.owner_references.append(meta_pb2.OwnerReference(kind="StatefulSet", name="db",
                                                                 controller=True))
    assert carries_identity(pod)
    labels = records.container_labels(pod, core_pb2.Container(name="c"), init=False,
                                      attempt=0, node_name="n")
    rec = from_podman({"Id": "x", "Labels": labels, "State": "running"})
    assert rec is not None and rec.identity

    node = core_pb2.Node()
    assert heard_of(node) == (True, "")
    node.spec.taints.add(key="node.kubernetes.io/unreachable", effect="NoExecute")
    assert heard_of(node)[0] is False


def test_fencing_config_defaults_and_bounds() -> None:
    cfg = parse(dict(BASE))
    assert (cfg.fencing.enabled, cfg.fencing.after, cfg.fencing.grace) == (True, 20.0, 5.0)
    cfg = parse(dict(BASE, lease_period=1, fencing={"after": 3, "grace": 0}))
    assert (cfg.fencing.after, cfg.fencing.grace) == (3.0, 0.0)
    with pytest.raises(ConfigError, match=r"^fencing.after: must be at least 3 lease periods"):
        parse(dict(BASE, fencing={"after": 5}))
    with pytest.raises(ConfigError, match=r"^fencing.grace: must be >= 0"):
        parse(dict(BASE, fencing={"grace": -1}))
    with pytest.raises(ConfigError, match=r"^fencing.when: unknown key"):
        parse(dict(BASE, fencing={"when": 1}))


# ---- memory: what the agent process leaves out (nodeagent/lean.py) -----------------------------
LEAN_CHECK = r"""
import ast, importlib.util, json, os, sys, warnings
warnings.simplefilter("error")  # no warning may escape (requests' is filtered by lean)
from nodeagent import lean
done = lean.apply()
import nodeagent.agent
import requests
from pyroute2.iproute.linux import IPRoute

needs_root = []
for root in ("pyroute2", "unittest"):
    base = os.path.dirname(importlib.util.find_spec(root).origin)
    for name, mod in list(sys.modules.items()):
        if mod is None or not (getattr(mod, "__file__", None) or "").endswith(".py"):
            continue
        with open(mod.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            # `from root import X` needs X from the package __init__ unless X is a
            # submodule; `import root` then `root.X` would too.
            if isinstance(node, ast.ImportFrom) and node.module == root and not node.level:
                needs_root += [f"{name}: {a.name}" for a in node.names
                               if not os.path.exists(os.path.join(base, a.name))
                               and not os.path.exists(os.path.join(base, a.name + ".py"))]
            if isinstance(node, ast.Import) and any(a.name == root for a in node.names):
                needs_root.append(f"{name}: import {root}")
with IPRoute() as ip:
    links = len(ip.get_links())
r = requests.models.Response()
r._content = "grüße".encode()
import hashlib
sha = [hashlib.sha256(b"corral").hexdigest(), hashlib.sha1(b"corral").hexdigest()]
print(json.dumps({"done": done, "needs_root": needs_root, "links": links, "text": r.text,
                  "sha": sha,
                  "root_init_ran": hasattr(sys.modules["pyroute2"], "IPRoute")
                  or hasattr(sys.modules["unittest"], "TestCase"),
                  "mock": repr(sys.modules["unittest.mock"].Mock(name="m")),
                  "loaded": [m for m in ("rich", "charset_normalizer", "pyroute2.ndb", "_hashlib")
                             if sys.modules.get(m) is not None]}))
"""


def test_lean_agent_imports_work_without_what_they_leave_out() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", LEAN_CHECK], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    got = json.loads(proc.stdout)
    assert got["done"] == ["pyroute2 imported without its __init__",
                           "unittest imported without its __init__",
                           "optional rich.progress not imported",
                           "optional charset_normalizer not imported",
                           "optional _hashlib not imported",
                           "at most 2 malloc arenas"]
    assert got["needs_root"] == [], "a module the agent loads needs a skipped package __init__"
    assert not got["root_init_ran"] and got["loaded"] == []
    assert got["mock"].startswith("<Mock name='m'")  # pyroute2's mock mode still has its Mock
    assert got["links"] >= 1  # netlink works (at least loopback)
    assert got["text"] == "grüße"  # requests falls back to UTF-8 without a detector
    # hashlib's built-in digests without OpenSSL's: the same values.
    assert got["sha"] == [hashlib.sha256(b"corral").hexdigest(),
                          hashlib.sha1(b"corral").hexdigest()]


def test_heap_trimmer_trims_only_when_idle_and_at_most_every_period() -> None:
    now = [100.0]
    cpu = [5.0]
    trims: list[float] = []
    t = lean.HeapTrimmer(period=30.0, busy=0.05, trim=lambda: trims.append(now[0]) or True,
                         clock=lambda: now[0], cpu=lambda: cpu[0])
    now[0] += 29.0
    assert not t.tick() and trims == []  # not yet a period
    now[0] += 1.0
    cpu[0] += 0.3  # 1 % of a core over 30 s: idle
    assert t.tick() and trims == [130.0]
    assert not t.tick()  # the next window starts now
    now[0] += 30.0
    cpu[0] += 6.0  # 20 % of a core: a burst, leave the heap alone
    assert not t.tick() and trims == [130.0]
    now[0] += 30.0
    cpu[0] += 1.4  # just under 5 %
    assert t.tick() and trims == [130.0, 190.0] and t.trims == 2
    with pytest.raises(ValueError, match=r"HeapTrimmer: period must be > 0"):
        lean.HeapTrimmer(period=0)
    with pytest.raises(ValueError, match=r"busy in \(0, 1\]"):
        lean.HeapTrimmer(busy=2.0)


def test_trim_heap_runs_on_this_libc() -> None:
    assert isinstance(lean.trim_heap(), bool)  # glibc here: a real call, no exception


# ---- the Podman call pool: idle threads end (nodeagent/elasticpool.py) --------------------------
def test_elastic_pool_runs_at_once_up_to_max_then_queues_and_idle_threads_end() -> None:
    from nodeagent.elasticpool import ElasticPool

    pool = ElasticPool(3, idle_exit=0.3, name="t-elastic")
    gate = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def blocked(i: int) -> int:
        with lock:
            started.append(i)
        assert gate.wait(10)
        return i * 10

    futs = [pool.submit(lambda i=i: blocked(i)) for i in range(5)]
    deadline = time.monotonic() + 10
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert sorted(started) == [0, 1, 2] and pool.threads == 3  # the rest wait, FIFO
    gate.set()
    assert [f.result(timeout=10) for f in futs] == [0, 10, 20, 30, 40]
    assert sorted(started) == [0, 1, 2, 3, 4]

    def boom() -> None:
        raise ValueError("bad call")

    with pytest.raises(ValueError, match="bad call"):
        pool.submit(boom).result(timeout=10)
    # Idle threads end after idle_exit; the pool starts new ones for the next call.
    deadline = time.monotonic() + 10
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.threads == 0
    assert pool.submit(lambda: "again").result(timeout=10) == "again"
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="t-elastic: cannot schedule new calls after shutdown"):
        pool.submit(lambda: None)


def test_elastic_pool_reuses_an_idle_thread_and_cancels_queued_calls_on_shutdown() -> None:
    from nodeagent.elasticpool import ElasticPool

    pool = ElasticPool(1, idle_exit=30.0, name="t-elastic1")
    assert pool.submit(lambda: 1).result(timeout=10) == 1
    assert pool.submit(lambda: 2).result(timeout=10) == 2
    assert pool.threads == 1  # the idle thread took the second call
    gate = threading.Event()
    running = pool.submit(lambda: gate.wait(10))
    deadline = time.monotonic() + 10
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(timeout=10) is True and queued.cancelled()
    deadline = time.monotonic() + 10
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.threads == 0  # shutdown ends idle threads at once
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        ElasticPool(0)


def test_elastic_pool_sparse_calls_keep_one_thread_the_rest_end() -> None:
    from nodeagent.elasticpool import ElasticPool

    pool = ElasticPool(8, idle_exit=0.5, name="t-elastic-sparse")
    gate = threading.Event()
    burst = [pool.submit(lambda: gate.wait(10)) for _ in range(8)]
    assert pool.threads == 8
    gate.set()
    assert all(f.result(timeout=10) for f in burst)
    # A call every 0.1 s: the thread that went idle last takes it, the others end.
    deadline = time.monotonic() + 10
    while pool.threads > 1 and time.monotonic() < deadline:
        assert pool.submit(lambda: 7).result(timeout=10) == 7
        time.sleep(0.1)
    assert pool.threads == 1
    # Many callers at once: every call runs exactly once and returns its own value.
    with concurrent.futures.ThreadPoolExecutor(6) as callers:
        got = list(callers.map(lambda i: pool.submit(lambda: i * i).result(timeout=10),
                               range(300)))
    assert got == [i * i for i in range(300)] and pool.threads <= 8
    pool.shutdown()
