"""Pods on real Podman: shared network and volumes, ConfigMaps and Secrets, init
containers, restart policies, images, limits, and release of everything on delete."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from corral import kinds
from corral.v1 import core_pb2
from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def empty_dir(name: str) -> core_pb2.Volume:
    return core_pb2.Volume(name=name, empty_dir=core_pb2.EmptyDirVolumeSource())


def mount(name: str, path: str, read_only: bool = False) -> core_pb2.VolumeMount:
    return core_pb2.VolumeMount(name=name, mount_path=path, read_only=read_only)


def httpd(name: str = "web", root: str = "/www", port: int = 8080,
          **fields: object) -> core_pb2.Container:
    return pu.container(name, "httpd", "-f", "-p", str(port), "-h", root, **fields)


def test_sidecar_reaches_main_on_localhost_and_shares_empty_dir(host: AgentHost, ns: str) -> None:
    main = httpd(volume_mounts=[mount("www", "/www")])
    sidecar = pu.container(
        "sidecar", "sh", "-c",
        "echo hello-from-sidecar > /shared/index.html; "
        "while :; do wget -q -O /shared/fetched.html http://127.0.0.1:8080/index.html; "
        "sleep 0.5; done",
        volume_mounts=[mount("www", "/shared")])
    host.client.create(pu.pod("two", ns, host.node_name, main, sidecar,
                              volumes=(empty_dir("www"),), grace=1))
    p = pu.wait_pod(host.client, ns, "two", pu.ready, "Ready")
    assert [s.name for s in p.status.container_statuses] == ["web", "sidecar"]
    ip = p.status.pod_ip
    # main serves what the sidecar wrote into the shared emptyDir ...
    assert host.http_get(f"http://{ip}:8080/index.html")[1].strip() == "hello-from-sidecar"
    # ... and the sidecar fetched it from main over localhost (same network namespace).
    pu.wait_for("sidecar fetched over localhost",
                lambda: host.http_get(f"http://{ip}:8080/fetched.html")[1].strip()
                == "hello-from-sidecar", timeout=20)


def test_configmap_and_secret_as_env_and_files_updated_on_change(host: AgentHost,
                                                                 ns: str) -> None:
    c = host.client
    cm = kinds.by_kind("ConfigMap").new()
    cm.metadata.name = "settings"
    cm.metadata.namespace = ns
    cm.data.update({"color": "blue", "greeting.txt": "hello v1"})
    c.create(cm)
    sec = kinds.by_kind("Secret").new()
    sec.metadata.name = "creds"
    sec.metadata.namespace = ns
    sec.data.update({"password": b"s3cret", "token": b"tok-1"})
    c.create(sec)

    env = [
        core_pb2.EnvVar(name="COLOR", value_from=core_pb2.EnvVarSource(
            config_map_key_ref=core_pb2.KeySelector(name="settings", key="color"))),
        core_pb2.EnvVar(name="PASSWORD", value_from=core_pb2.EnvVarSource(
            secret_key_ref=core_pb2.KeySelector(name="creds", key="password"))),
        core_pb2.EnvVar(name="POD_NAME", value_from=core_pb2.EnvVarSource(
            field_ref=core_pb2.ObjectFieldSelector(field_path="metadata.name"))),
        core_pb2.EnvVar(name="POD_IP", value_from=core_pb2.EnvVarSource(
            field_ref=core_pb2.ObjectFieldSelector(field_path="status.podIP"))),
        core_pb2.EnvVar(name="NODE", value_from=core_pb2.EnvVarSource(
            field_ref=core_pb2.ObjectFieldSelector(field_path="spec.nodeName"))),
        core_pb2.EnvVar(name="MESSAGE", value="$(COLOR)-sky"),
    ]
    env_from = [core_pb2.EnvFromSource(prefix="CM_", config_map_ref=core_pb2.NameOptional(
        name="settings"))]
    main = pu.container(
        "main", "sh", "-c", "env > /www/env.txt; exec httpd -f -p 8080 -h /www",
        env=env, env_from=env_from,
        volume_mounts=[mount("www", "/www"), mount("cfg", "/www/cfg", True),
                       mount("sec", "/www/sec", True)])
    vols = (empty_dir("www"),
            core_pb2.Volume(name="cfg", config_map=core_pb2.ConfigMapVolumeSource(
                name="settings")),
            core_pb2.Volume(name="sec", secret=core_pb2.SecretVolumeSource(
                secret_name="creds")))
    c.create(pu.pod("cfg", ns, host.node_name, main, volumes=vols, grace=1))
    p = pu.wait_pod(c, ns, "cfg", pu.ready, "Ready")
    ip = p.status.pod_ip
    _, text = host.http_get(f"http://{ip}:8080/env.txt")
    env_seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert env_seen["COLOR"] == "blue"
    assert env_seen["PASSWORD"] == "s3cret"
    assert env_seen["POD_NAME"] == "cfg"
    assert env_seen["POD_IP"] == ip
    assert env_seen["NODE"] == host.node_name
    assert env_seen["MESSAGE"] == "blue-sky"
    assert env_seen["CM_color"] == "blue"
    assert host.http_get(f"http://{ip}:8080/cfg/greeting.txt")[1] == "hello v1"
    assert host.http_get(f"http://{ip}:8080/sec/token")[1] == "tok-1"

    # Secrets live on tmpfs, never on the node's disk.
    sec_dir = host.state / "pods" / p.metadata.uid / "volumes" / "sec"
    with open("/proc/self/mountinfo") as f:
        fstypes = {line.split()[4]: line.split(" - ")[1].split()[0] for line in f}
    assert fstypes.get(str(sec_dir)) == "tmpfs"

    # A change of the objects reaches the files (atomically, via the ..data swap).
    cm = c.get("ConfigMap", "settings", ns)
    cm.data["greeting.txt"] = "hello v2"
    c.update(cm)
    sec = c.get("Secret", "creds", ns)
    sec.data["token"] = b"tok-2"
    c.update(sec)
    pu.wait_for("configMap file updated",
                lambda: host.http_get(f"http://{ip}:8080/cfg/greeting.txt")[1] == "hello v2",
                timeout=30)
    pu.wait_for("secret file updated",
                lambda: host.http_get(f"http://{ip}:8080/sec/token")[1] == "tok-2", timeout=30)
    link = host.state / "pods" / p.metadata.uid / "volumes" / "cfg" / "greeting.txt"
    assert os.readlink(link) == "..data/greeting.txt"
    assert pu.cstatus(c.get("Pod", "cfg", ns), "main").restart_count == 0


def test_missing_configmap_key_is_a_clear_error_and_harms_no_other_pod(host: AgentHost,
                                                                       ns: str) -> None:
    c = host.client
    cm = kinds.by_kind("ConfigMap").new()
    cm.metadata.name = "partial"
    cm.metadata.namespace = ns
    cm.data["present"] = "yes"
    c.create(cm)
    bad = pu.container("main", "sleep", "1000", env=[core_pb2.EnvVar(
        name="X", value_from=core_pb2.EnvVarSource(config_map_key_ref=core_pb2.KeySelector(
            name="partial", key="absent")))])
    c.create(pu.pod("bad", ns, host.node_name, bad, grace=0))
    c.create(pu.pod("good", ns, host.node_name, pu.container("main", "sleep", "1000"), grace=0))

    def config_error(p: core_pb2.Pod) -> bool:
        w = pu.cstatus(p, "main").state.waiting
        return w.reason == "CreateContainerConfigError"
    p = pu.wait_pod(c, ns, "bad", config_error, "CreateContainerConfigError")
    assert pu.cstatus(p, "main").state.waiting.message == \
        f"couldn't find key absent in ConfigMap {ns}/partial"
    assert p.status.phase == "Pending"
    pu.wait_pod(c, ns, "good", pu.ready, "Ready")

    # Fixing the ConfigMap lets the pod start (the agent watches ConfigMaps).
    cm = c.get("ConfigMap", "partial", ns)
    cm.data["absent"] = "now-here"
    c.update(cm)
    pu.wait_pod(c, ns, "bad", pu.ready, "Ready after the key appeared", timeout=30)


def test_image_errors_have_kubernetes_reasons(host: AgentHost, ns: str) -> None:
    c = host.client
    never = pu.container("main", "true")
    never.image = "localhost/not-here:1.0"
    never.image_pull_policy = "Never"
    c.create(pu.pod("never", ns, host.node_name, never))
    pull = pu.container("main", "true")
    pull.image = "127.0.0.1:1/nothing/here:1.0"
    pull.image_pull_policy = "IfNotPresent"
    c.create(pu.pod("pull", ns, host.node_name, pull))

    p = pu.wait_pod(c, ns, "never", lambda p: pu.cstatus(p, "main").state.waiting.reason
                    == "ErrImageNeverPull", "ErrImageNeverPull")
    assert pu.cstatus(p, "main").state.waiting.message == \
        'Container image "localhost/not-here:1.0" is not present with pull policy of Never'
    reasons: set[str] = set()

    def both_seen(p: core_pb2.Pod) -> bool:
        reasons.add(pu.cstatus(p, "main").state.waiting.reason)
        return {"ErrImagePull", "ImagePullBackOff"} <= reasons
    p = pu.wait_pod(c, ns, "pull", both_seen, "ErrImagePull then ImagePullBackOff",
                    timeout=60)
    assert p.status.phase == "Pending"
    events, _ = c.list("Event", ns)
    assert any(e.involved_object.name == "pull" and e.reason == "Failed" and
               "127.0.0.1:1/nothing/here:1.0" in e.message for e in events)


def test_init_containers_run_in_order_before_app_containers(host: AgentHost, ns: str) -> None:
    c = host.client
    inits = (
        pu.container("first", "sh", "-c", "echo one > /www/order.txt",
                     volume_mounts=[mount("www", "/www")]),
        pu.container("second", "sh", "-c", "sleep 1; echo two >> /www/order.txt",
                     volume_mounts=[mount("www", "/www")]),
    )
    c.create(pu.pod("init", ns, host.node_name, httpd(volume_mounts=[mount("www", "/www")]),
                    init=inits, volumes=(empty_dir("www"),), grace=1))
    p = pu.wait_pod(c, ns, "init", pu.ready, "Ready")
    assert pu.condition(p, "Initialized") == "True"
    assert host.http_get(f"http://{p.status.pod_ip}:8080/order.txt")[1] == "one\ntwo\n"
    for name in ("first", "second"):
        st = pu.cstatus(p, name)
        assert st.state.terminated.exit_code == 0
        assert st.state.terminated.reason == "Completed"


def test_restart_policies_and_phases(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("ok", ns, host.node_name, pu.container("main", "sh", "-c", "exit 0"),
                    restart_policy="Never"))
    c.create(pu.pod("fail", ns, host.node_name, pu.container("main", "sh", "-c", "exit 2"),
                    restart_policy="Never"))
    c.create(pu.pod("retry", ns, host.node_name, pu.container("main", "sh", "-c", "exit 1"),
                    restart_policy="OnFailure"))
    p = pu.wait_pod(c, ns, "ok", lambda p: p.status.phase == "Succeeded", "Succeeded")
    assert pu.cstatus(p, "main").state.terminated.reason == "Completed"
    assert pu.condition(p, "Ready") == "False"
    p = pu.wait_pod(c, ns, "fail", lambda p: p.status.phase == "Failed", "Failed")
    term = pu.cstatus(p, "main").state.terminated
    assert (term.exit_code, term.reason) == (2, "Error")
    assert pu.cstatus(p, "main").restart_count == 0
    p = pu.wait_pod(c, ns, "retry", lambda p: pu.cstatus(p, "main").restart_count >= 2,
                    "restarted twice (OnFailure)", timeout=60)
    assert p.status.phase in ("Running", "Pending")
    # A terminal pod's network is released; its IP stays in the status.
    done = c.get("Pod", "ok", ns)
    assert done.status.pod_ip
    pu.wait_for("network of the Succeeded pod released",
                lambda: done.metadata.uid not in json.loads(
                    (host.state / "ipam.json").read_text())["allocations"].values(),
                timeout=20)


def test_resource_limits_reach_podman(host: AgentHost, ns: str) -> None:
    limited = pu.container("main", "sleep", "1000")
    limited.resources.limits.update({"cpu": "250m", "memory": "64Mi"})
    limited.resources.requests.update({"cpu": "100m"})
    host.client.create(pu.pod("limited", ns, host.node_name, limited, grace=0))
    p = pu.wait_pod(host.client, ns, "limited", pu.running, "Running")
    cid = pu.cstatus(p, "main").container_id.removeprefix("podman://")
    info = json.loads(host.podman("inspect", cid).stdout)[0]["HostConfig"]
    assert info["Memory"] == 64 * 1024 * 1024
    assert (info["CpuQuota"], info["CpuPeriod"]) == (25000, 100000)
    assert info["CpuShares"] == 102
    assert info["CgroupParent"] == host.cgroup_parent


def test_deleted_pod_releases_containers_volumes_ip_and_netns(host: AgentHost, ns: str) -> None:
    c = host.client
    c.create(pu.pod("gone", ns, host.node_name,
                    pu.container("main", "sleep", "1000", volume_mounts=[mount("v", "/v")]),
                    volumes=(empty_dir("v"),), grace=1))
    p = pu.wait_pod(c, ns, "gone", pu.running, "Running")
    uid = p.metadata.uid
    netns_path = Path(f"/run/netns/{host.netns_prefix}{uid}")
    assert netns_path.exists()
    assert (host.state / "pods" / uid).is_dir()
    c.delete("Pod", "gone", ns)
    pu.wait_gone(c, ns, "gone", timeout=30)
    assert not netns_path.exists()
    assert not (host.state / "pods" / uid).exists()
    assert uid not in json.loads((host.state / "ipam.json").read_text())["allocations"].values()
    ps = json.loads(host.podman("ps", "-a", "--format", "json").stdout or "[]")
    assert not [x for x in ps if x.get("Labels", {}).get("io.corral.pod.uid") == uid]


def test_binary_and_secret_encoding_round_trip(host: AgentHost, ns: str) -> None:
    """Secret values are bytes end to end (not re-encoded on the way into a file)."""
    c = host.client
    sec = kinds.by_kind("Secret").new()
    sec.metadata.name = "bin"
    sec.metadata.namespace = ns
    raw = bytes(range(256))
    sec.data["blob"] = raw
    c.create(sec)
    main = pu.container("main", "sh", "-c",
                        "cp /sec/blob /www/blob; exec httpd -f -p 8080 -h /www",
                        volume_mounts=[mount("www", "/www"), mount("sec", "/sec")])
    c.create(pu.pod("bin", ns, host.node_name, main, grace=1, volumes=(
        empty_dir("www"), core_pb2.Volume(name="sec", secret=core_pb2.SecretVolumeSource(
            secret_name="bin")))))
    p = pu.wait_pod(c, ns, "bin", pu.ready, "Ready")
    blob = host.state / "pods" / p.metadata.uid / "volumes" / "sec" / "blob"
    assert blob.read_bytes() == raw
    assert base64.b64encode(blob.read_bytes()) == base64.b64encode(raw)



def test_persistent_volume_claim_is_a_host_folder_that_outlives_the_pod(host: AgentHost,
                                                                        ns: str) -> None:
    c = host.client
    claim = kinds.by_kind("PersistentVolumeClaim").new()
    claim.metadata.name = "data"
    claim.metadata.namespace = ns
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "10Mi"
    c.create(claim)
    vol = core_pb2.Volume(name="data", persistent_volume_claim=(
        core_pb2.PersistentVolumeClaimVolumeSource(claim_name="data")))
    writer = pu.container("main", "sh", "-c",
                          "echo kept-$(hostname) >> /data/log; exec sleep 1000",
                          volume_mounts=[mount("data", "/data")])
    c.create(pu.pod("writer", ns, host.node_name, writer, volumes=(vol,), grace=0))
    pu.wait_pod(c, ns, "writer", pu.ready, "Ready")
    bound = c.get("PersistentVolumeClaim", "data", ns)
    node, _, folder = bound.spec.volume_name.partition(":")
    assert node == host.node_name and folder.startswith("/")
    log = Path(folder) / "log"
    pu.wait_for("the pod wrote into the claim's folder", lambda: log.exists())
    c.delete("Pod", "writer", ns)
    pu.wait_gone(c, ns, "writer", timeout=30)
    assert log.read_text() == "kept-writer\n"  # the folder outlives the pod
    reader = pu.container("main", "sh", "-c", "cp /data/log /data/seen; exec sleep 1000",
                          volume_mounts=[mount("data", "/data")])
    c.create(pu.pod("reader", ns, host.node_name, reader, volumes=(vol,), grace=0))
    pu.wait_pod(c, ns, "reader", pu.ready, "Ready")
    pu.wait_for("the next pod saw the same data",
                lambda: (Path(folder) / "seen").exists()
                and (Path(folder) / "seen").read_text() == "kept-writer\n")


def test_missing_volume_source_object_keeps_pod_creating(host: AgentHost, ns: str) -> None:
    c = host.client
    vol = core_pb2.Volume(name="cfg", config_map=core_pb2.ConfigMapVolumeSource(name="absent"))
    c.create(pu.pod("mnt", ns, host.node_name,
                    pu.container("main", "sleep", "1000",
                                 volume_mounts=[mount("cfg", "/cfg")]),
                    volumes=(vol,), grace=0))
    p = pu.wait_pod(c, ns, "mnt", lambda p: "configmap \"absent\" not found" in
                    pu.cstatus(p, "main").state.waiting.message, "FailedMount message")
    assert pu.cstatus(p, "main").state.waiting.reason == "ContainerCreating"
    events, _ = c.list("Event", ns)
    assert any(e.reason == "FailedMount" and e.involved_object.name == "mnt" for e in events)
    cm = kinds.by_kind("ConfigMap").new()
    cm.metadata.name = "absent"
    cm.metadata.namespace = ns
    cm.data["k"] = "v"
    c.create(cm)
    pu.wait_pod(c, ns, "mnt", pu.ready, "Ready once the ConfigMap exists", timeout=30)
