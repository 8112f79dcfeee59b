"""The CLI's pure decisions: rollout status, revisions and rollback, drain plans,
cluster status rendering, describe layout, flag parsing, usage errors."""

from __future__ import annotations

import io
import json

import pytest

from corral import kinds
from corral.cli import cluster, describers, nodes, objects, rollout
from corral.cli.context import UsageError
from corral.cli.main import main
from corral.errors import CorralError
from corral.v1 import api_pb2, apps_pb2, core_pb2, meta_pb2

NOW = 1_700_000_000.0


def deployment(replicas: int = 3, generation: int = 2, observed: int = 2) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.uid = "uid-web"
    d.metadata.generation = generation
    d.spec.replicas = replicas
    d.status.observed_generation = observed
    return d


def test_deployment_rollout_status_steps() -> None:
    d = deployment(observed=1)
    assert rollout.deployment_status(d).message == (
        "Waiting for deployment spec update to be observed...")
    d = deployment()
    d.status.replicas = 4
    d.status.updated_replicas = 1
    state = rollout.deployment_status(d)
    assert (state.done, state.failed) == (False, False)
    assert state.message == ('Waiting for deployment "web" rollout to finish: 1 out of 3 new '
                             "replicas have been updated...")
    d.status.updated_replicas = 3
    assert rollout.deployment_status(d).message.endswith(
        "1 old replicas are pending termination...")
    d.status.replicas = 3
    d.status.ready_replicas = 2
    assert rollout.deployment_status(d).message.endswith(
        "2 of 3 updated replicas are ready...")
    d.status.ready_replicas = 3
    d.status.available_replicas = 2
    assert rollout.deployment_status(d).message.endswith(
        "2 of 3 updated replicas are available...")
    d.status.available_replicas = 3
    state = rollout.deployment_status(d)
    assert state.done and state.message == 'deployment "web" successfully rolled out'
    d.status.conditions.add(type="Progressing", status="False",
                            reason="ProgressDeadlineExceeded")
    state = rollout.deployment_status(d)
    assert state.failed and state.message == 'deployment "web" exceeded its progress deadline'


def test_daemon_set_and_stateful_set_status() -> None:
    ds = apps_pb2.DaemonSet()
    ds.metadata.name = "agent"
    ds.metadata.generation = 1
    ds.status.observed_generation = 1
    ds.status.desired_number_scheduled = 3
    ds.status.updated_number_scheduled = 2
    assert "2 out of 3 new pods have been updated" in rollout.daemon_set_status(ds).message
    ds.status.updated_number_scheduled = 3
    ds.status.number_available = 3
    assert rollout.daemon_set_status(ds).done
    ds.spec.update_strategy.type = "OnDelete"
    assert rollout.daemon_set_status(ds).failed

    ss = apps_pb2.StatefulSet()
    ss.metadata.generation = 1
    ss.spec.replicas = 3
    assert not rollout.stateful_set_status(ss).done  # observedGeneration 0
    ss.status.observed_generation = 1
    ss.status.ready_replicas = 1
    assert rollout.stateful_set_status(ss).message == "Waiting for 2 pods to be ready..."
    ss.status.ready_replicas = 3
    ss.status.current_revision = "web-1"
    ss.status.update_revision = "web-2"
    ss.status.updated_replicas = 1
    assert rollout.stateful_set_status(ss).message == (
        "waiting for statefulset rolling update to complete 1 pods at revision web-2...")
    ss.status.current_revision = "web-2"
    assert rollout.stateful_set_status(ss).done


def replica_set(name: str, revision: int, image: str, owner: str = "uid-web",
                cause: str = "") -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.metadata.annotations[rollout.REVISION] = str(revision)
    if cause:
        rs.metadata.annotations[rollout.CHANGE_CAUSE] = cause
    rs.metadata.owner_references.add(kind="Deployment", name="web", uid=owner, controller=True)
    rs.spec.template.metadata.labels["app"] = "web"
    rs.spec.template.metadata.labels[rollout.POD_TEMPLATE_HASH] = name.rsplit("-", 1)[1]
    rs.spec.template.spec.containers.add(name="web", image=image)
    return rs


def test_revisions_history_and_rollback_target() -> None:
    d = deployment()
    rss = [replica_set("web-c", 3, "busybox:3", cause="set image 3"),
           replica_set("web-a", 1, "busybox:1"),
           replica_set("other-x", 7, "busybox:7", owner="someone-else"),
           replica_set("web-b", 2, "busybox:2", cause="set image 2")]
    history = rollout.revisions(d, rss)
    assert [rev for rev, _ in history] == [1, 2, 3]
    assert rollout.history_table(history) == (
        "REVISION   CHANGE-CAUSE\n1          <none>\n2          set image 2\n"
        "3          set image 3\n")
    rev, template = rollout.rollback_template(d, history, 0)
    assert rev == 2
    assert template.spec.containers[0].image == "busybox:2"
    assert rollout.POD_TEMPLATE_HASH not in template.metadata.labels
    assert rss[3].spec.template.metadata.labels[rollout.POD_TEMPLATE_HASH] == "b"  # not mutated
    rev, template = rollout.rollback_template(d, history, 1)
    assert (rev, template.spec.containers[0].image) == (1, "busybox:1")
    with pytest.raises(CorralError, match="unable to find specified revision 9"):
        rollout.rollback_template(d, history, 9)
    with pytest.raises(CorralError, match='no rollout history found for deployment "web"'):
        rollout.rollback_template(d, [], 0)
    d.spec.paused = True
    with pytest.raises(CorralError, match="cannot rollback a paused deployment"):
        rollout.rollback_template(d, history, 0)


def pod(name: str, owner_kind: str = "ReplicaSet", phase: str = "Running",
        empty_dir: bool = False) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    if owner_kind:
        p.metadata.owner_references.add(kind=owner_kind, name="o", uid="u", controller=True)
    p.status.phase = phase
    if empty_dir:
        p.spec.volumes.add(name="scratch").empty_dir.SetInParent()
    return p


def test_drain_plan_follows_kubectls_filters() -> None:
    pods = [pod("rs-pod"), pod("ds-pod", "DaemonSet"), pod("bare", ""),
            pod("done", "", phase="Succeeded"), pod("scratch", empty_dir=True)]
    plan = nodes.plan_drain(pods, ignore_daemonsets=False, force=False,
                            delete_emptydir_data=False)
    assert not plan.ok
    assert {why.split(" (")[0]: [p.metadata.name for p in ps]
            for why, ps in plan.blocked.items()} == {
        "cannot delete DaemonSet-managed Pods": ["ds-pod"],
        "cannot delete Pods that declare no controller": ["bare"],
        "cannot delete Pods with local storage": ["scratch"]}
    plan = nodes.plan_drain(pods, ignore_daemonsets=True, force=True,
                            delete_emptydir_data=True)
    assert plan.ok
    assert [p.metadata.name for p in plan.evict] == ["rs-pod", "bare", "done", "scratch"]
    assert [p.metadata.name for p in plan.ignored] == ["ds-pod"]
    assert [p.metadata.name for p in plan.unmanaged] == ["bare"]


def cluster_status() -> api_pb2.ClusterStatus:
    st = api_pb2.ClusterStatus(leader="cp-1", term=4, commit_index=120)
    st.members.add(name="cp-0", state="follower", term=4, commit_index=120, applied_index=119,
                   revision=100, has_quorum=True, reachable=True, raft_address="127.0.0.1:7000",
                   api_address="127.0.0.1:6443")
    st.members.add(name="cp-1", state="leader", term=4, commit_index=120, applied_index=120,
                   revision=101, has_quorum=True, reachable=True, raft_address="127.0.0.1:7001",
                   api_address="127.0.0.1:6444")
    st.members.add(name="cp-2", reachable=False, raft_address="127.0.0.1:7002",
                   error="connection refused")
    st.warnings.append("cp-2 is unreachable")
    return st


def test_cluster_status_table_and_json() -> None:
    text = cluster.render(cluster_status())
    lines = text.splitlines()
    assert lines[0] == "Leader: cp-1   Term: 4   Commit index: 120"
    assert lines[1].split() == ["NAME", "STATE", "TERM", "COMMIT", "APPLIED", "REVISION",
                                "QUORUM", "RAFT", "API", "STATUS"]
    assert lines[2].split() == ["cp-0", "follower", "4", "120", "119", "100", "yes",
                                "127.0.0.1:7000", "127.0.0.1:6443", "ok"]
    assert lines[4].split()[:2] == ["cp-2", "unreachable"]
    assert lines[-1] == "  - cp-2 is unreachable"
    data = json.loads(json.dumps(cluster.as_dict(cluster_status())))
    assert data["leader"] == "cp-1" and data["commitIndex"] == 120
    assert [m["appliedIndex"] for m in data["members"]] == [119, 120, 0]
    assert data["members"][2]["reachable"] is False


def test_describe_pod_with_events() -> None:
    p = pod("web-1")
    p.metadata.labels["app"] = "web"
    p.metadata.creation_timestamp.FromSeconds(int(NOW - 60))
    p.spec.node_name = "h1"
    p.status.host_ip = "10.250.0.1"
    c = p.spec.containers.add(name="web", image="busybox")
    c.ports.add(container_port=80)
    c.env.add(name="A", value="1")
    c.env.add(name="PW").value_from.secret_key_ref.CopyFrom(
        core_pb2.KeySelector(name="s", key="pw"))
    c.volume_mounts.add(name="data", mount_path="/data")
    p.spec.volumes.add(name="data").empty_dir.SetInParent()
    cs = p.status.container_statuses.add(name="web", ready=True, restart_count=2)
    cs.state.running.started_at.FromSeconds(int(NOW - 30))
    cs.last_state.terminated.exit_code = 137
    cs.last_state.terminated.reason = "Error"
    ev = core_pb2.Event(type="Warning", reason="BackOff", message="Back-off restarting",
                        count=3)
    ev.source.component = "agent"
    ev.first_timestamp.FromSeconds(int(NOW - 120))
    ev.last_timestamp.FromSeconds(int(NOW - 5))
    text = describers.describe(kinds.by_kind("Pod"), p, NOW,
                               describers.Related(events=[ev]))
    assert text.startswith("Name:               web-1\nNamespace:          default\n"
                           "Labels:             app=web\n")
    assert "\nControlled By:      ReplicaSet/o\n" in text
    assert "\nNode:               h1/10.250.0.1\n" in text
    assert "\n      PW:         <set to the key 'pw' in secret 's'>\n" in text
    assert "\n    Last State:     Terminated\n      Reason:     Error\n" in text
    assert "      /data from data (rw)" in text
    assert text.endswith(
        "Events:\n"
        "  Type      Reason    Age               From    Message\n"
        "  ----      ------    ---               ----    -------\n"
        "  Warning   BackOff   5s (x3 over 2m)   agent   Back-off restarting\n")


def test_describe_secret_never_shows_values() -> None:
    s = core_pb2.Secret(type="Opaque")
    s.metadata.name = "creds"
    s.data["password"] = b"hunter2"
    text = describers.describe(kinds.by_kind("Secret"), s, NOW)
    assert "hunter2" not in text
    assert "password:  7 bytes" in text
    assert text.endswith("Events:  <none>\n")


def test_every_kind_has_a_describer() -> None:
    for info in kinds.KINDS:
        obj = info.new()
        obj.metadata.name = "x"
        assert describers.describe(info, obj, NOW).startswith("Name:")


def test_flag_parsing_helpers() -> None:
    assert objects.parse_duration("30s") == 30
    assert objects.parse_duration("1h30m") == 5400
    assert objects.parse_duration("500ms") == 0.5
    assert objects.parse_duration("7") == 7
    for bad in ("5x", "m", "1h3"):
        with pytest.raises(UsageError):
            objects.parse_duration(bad)
    assert objects.parse_bool("false") is False
    assert [(i.kind, n) for i, n in objects.split_targets(["deploy/web", "po/a"])] == [
        ("Deployment", "web"), ("Pod", "a")]
    assert [(i.kind, n) for i, n in objects.split_targets(["svc", "a", "b"])] == [
        ("Service", "a"), ("Service", "b")]
    with pytest.raises(UsageError):
        objects.split_targets(["deploy/web", "po"])
    assert [i.kind for i in objects.resolve_kinds("all")] == list(objects.ALL_KINDS)
    assert [i.kind for i in objects.resolve_kinds("po,svc,po")] == ["Pod", "Service"]
    with pytest.raises(UsageError, match="doesn't have a resource type 'widgets'"):
        objects.resolve_kinds("widgets")


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(""),
                env=env if env is not None else {"CORRAL_CONFIG": "/nonexistent/config.yaml"})
    return code, out.getvalue(), err.getvalue()


def test_usage_errors_are_one_line_and_exit_1(tmp_path: object) -> None:
    code, out, err = run_cli("get")
    assert code == 1 and out == ""
    assert err.startswith("error: the following arguments are required") and err.count("\n") == 1
    code, _, err = run_cli("get", "widgets", env={"CORRAL_SERVER": "127.0.0.1:1"})
    assert code == 1
    assert err.startswith("error: the server doesn't have a resource type 'widgets'")
    code, _, err = run_cli("frobnicate")
    assert code == 1 and err.startswith("error: argument COMMAND: invalid choice")
    code, _, err = run_cli("get", "pods", env={"HOME": "/nonexistent"})
    assert code == 1 and err.startswith("error: no control plane endpoint given")
    code, _, err = run_cli("get", "pods", env={"CORRAL_CONFIG": "/nonexistent/c.yaml"})
    assert (code, err) == (1, "error: /nonexistent/c.yaml: no such file\n")


def test_bad_manifest_fails_before_any_server_is_needed(tmp_path: object) -> None:
    path = f"{tmp_path}/bad.yaml"
    with open(path, "w") as fh:
        fh.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
                 "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containerz: []}\n")
    # 127.0.0.1:1 refuses connections: the manifest error must come first.
    code, out, err = run_cli("apply", "-f", path, env={"CORRAL_SERVER": "127.0.0.1:1"})
    assert (code, out) == (1, "")
    assert err == (f"error: {path}: document 2 (Pod p): spec.containerz: unknown field "
                   f"(Corral does not support it; did you mean containers?)\n")


def test_label_selector_messages_are_kubernetes_shaped() -> None:
    sel = meta_pb2.LabelSelector(match_labels={"app": "web"})
    d = deployment()
    d.spec.selector.CopyFrom(sel)
    assert "Selector:               app=web" in describers.describe(
        kinds.by_kind("Deployment"), d, NOW)


def test_verb_detection_for_lazy_lab_loading() -> None:
    from corral.cli.main import verb_of

    assert verb_of(["get", "pods"]) == "get"
    assert verb_of(["-n", "x", "--server", "a:1", "lab", "up"]) == "lab"
    assert verb_of(["--namespace=x", "lab"]) == "lab"
    assert verb_of(["-h"]) is None
    assert verb_of(["-s", "lab:1", "get"]) == "get"


def test_describe_lists_every_annotation_aligned() -> None:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = "c"
    cm.metadata.annotations.update({"a": "1", "b": "2"})
    lines = describers.describe(kinds.by_kind("ConfigMap"), cm, NOW).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Annotations:"))
    assert lines[at] == "Annotations:        a: 1"
    assert lines[at + 1] == "                    b: 2"
