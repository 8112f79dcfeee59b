"""The lab's plumbing with stand-in processes (tests/lab/standin.py): namespaces, the
switch, addresses, process supervision, power loss, partitions, removal.

Real namespaces, veths, bridges, cgroups and processes; only the programs are
stand-ins, so these tests do not depend on the control plane.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import psutil
import pytest
from pyroute2 import IPRoute

from corral.lab import Lab, LabError, LabSpec, down, leftovers, net
from corral.lab import cgroups as labcg
from corral.lab import procs as labprocs
from corral.lab import state as labstate
from corral.lab.spec import API_PORT
from tests.labfixture import (
    STANDIN,
    assert_gone,
    in_netns_of,
    pids_of,
    recorded,
    running_lab,
    standin_commands,
    unique_name,
)

pytestmark = pytest.mark.lab

CP = ("controlplane",)


def ask(lab: Lab, src: str, dst: str, port: int = API_PORT, timeout: float = 1.0) -> str:
    """From inside host `src`, connect to host `dst`'s stand-in over the lab network."""
    ip = lab.plan.host(dst).ip

    def connect() -> str:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            return c.recv(100).decode()

    return net.in_netns(lab.plan.host(src).netns, connect)


def reachable(lab: Lab, src: str, dst: str) -> bool:
    try:
        return ask(lab, src, dst).startswith(dst + " ")
    except OSError:
        return False


def route_via(netns: str, dst: str) -> str | None:
    """The gateway the kernel of `netns` would send a packet for `dst` to."""
    def lookup() -> str | None:
        with IPRoute() as ipr:
            return ipr.route("get", dst=dst)[0].get_attr("RTA_GATEWAY")  # type: ignore[no-any-return]

    return net.in_netns(netns, lookup)


def ask_socket(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(path))
        return s.recv(100).decode()


def wait_for(fn, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, f"timed out waiting for {fn}"
        time.sleep(0.05)


def standin_lab(**kwargs):  # type: ignore[no-untyped-def]
    comps = kwargs.pop("components", CP)
    return running_lab(components=comps, commands=standin_commands(comps), wait=False,
                       **kwargs)


def test_up_wires_hosts_runs_processes_inside_them_and_down_removes_all() -> None:
    with standin_lab(hosts=3, control_plane=2, components=(*CP, "agent")) as lab:
        p = lab.plan
        assert set(p.namespaces) <= set(net.list_netns())
        # Each host: its own address on eth0, loopback up, forwarding on.
        for h in p.hosts:
            links = net.links(h.netns)
            assert f"{h.ip}/24" in links["eth0"]["addresses"]
            assert links["lo"]["state"] in ("unknown", "up")
            assert net.get_sysctl(h.netns, "net.ipv4.ip_forward") == "1"
        # The switch: one port per host, all on br0, which holds the lab's gateway.
        sw = net.links(p.switch_ns)
        assert {sw[h.port]["master"] for h in p.hosts} == {"br0"}
        assert sw["br0"]["addresses"] == ["10.250.0.1/24"]
        assert net.get_sysctl(p.switch_ns, "net.ipv4.ip_forward") == "0"
        # A host routes what is not on the lab subnet (a Service VIP) to that gateway
        # (a route lookup only: no packet is sent).
        for h in p.hosts:
            assert route_via(h.netns, "10.96.0.1") == "10.250.0.1"
            assert route_via(h.netns, "10.250.0.13") is None  # on-link
        # Control plane on the first two hosts only; agents everywhere.
        assert [c for c in pids_of(lab, "h3")] == ["agent"]
        assert sorted(pids_of(lab, "h1")) == ["agent", "controlplane"]
        for h in p.hosts:
            for comp, pid in pids_of(lab, h.name).items():
                wait_for(lambda h=h, pid=pid: in_netns_of(pid, h.netns))
                assert pid in labcg.pids(lab.backend, h.cgroup), (comp, h.name)
        wait_for(lambda: all(h.socket.exists() for h in p.control_plane_hosts))
        # Hosts reach each other over the lab switch...
        wait_for(lambda: reachable(lab, "h1", "h2") and reachable(lab, "h3", "h1"))
        # ...the machine reaches the control plane through the unix sockets only:
        # no link of the machine's namespace has its peer in a lab namespace (the
        # kernel would have given that namespace an id in the machine's).
        assert ask_socket(p.host("h2").socket).startswith("h2 ")
        for ns in p.namespaces:
            assert net.nsid(ns) is None, ns
        assert net.nsid(p.host("h1").netns, inside=p.switch_ns) is not None
        # ...and each process writes its own log in its host's folder.
        log = p.host("h1").process("controlplane").log
        wait_for(lambda: "standin h1" in log.read_text())
        # Config files as the processes read them, the password file private.
        assert (p.host("h1").etc / "controlplane.yaml").exists()
        assert (p.host("h3").etc / "agent.yaml").exists()
        assert not (p.host("h3").etc / "controlplane.yaml").exists()
        assert oct(p.password_file.stat().st_mode & 0o777) == "0o600"
        st = json.loads(p.state_file.read_text())
        assert st["phase"] == "up" and set(st["made"]["namespaces"]) == set(p.namespaces)
        name, root = lab.name, p.dir.parent
        procs = recorded(root, name)
    # running_lab brought it down and checked that nothing is left.
    assert leftovers(name, root) == []
    assert not any(labprocs.alive(r) for r in procs)


def test_power_loss_kills_every_process_of_the_host_and_start_brings_it_back() -> None:
    with standin_lab(hosts=3) as lab:
        wait_for(lambda: reachable(lab, "h1", "h2"))
        h2 = lab.plan.host("h2")
        before = labstate.load(lab.plan.state_file).host("h2").processes["controlplane"]
        tree = labcg.pids(lab.backend, h2.cgroup)
        assert len(tree) >= 2  # the stand-in and its child
        others = {n: pids_of(lab, n) for n in ("h1", "h3")}

        loss = lab.kill("h2")
        assert tree <= loss.killed
        for pid in tree:
            assert not psutil.pid_exists(pid) or \
                psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not net.netns_exists(h2.netns)
        assert h2.port not in net.links(lab.plan.switch_ns)
        assert not reachable(lab, "h1", "h2")
        assert not h2.run.exists()
        # The other hosts did not notice anything.
        for n, pids in others.items():
            for comp in pids:
                assert labprocs.alive(labstate.load(lab.plan.state_file).host(n)
                                      .processes[comp]), (n, comp)
        status = {h.name: h for h in lab.status(raft=False).hosts}
        assert status["h2"].power == "off" and status["h2"].link == "cut"
        assert not status["h2"].processes[0].running

        assert lab.start("h2") == ["controlplane"]
        after = labstate.load(lab.plan.state_file).host("h2").processes["controlplane"]
        assert after.pid != before.pid
        # Same state folder: the stand-in counts its boots in its data folder.
        wait_for(lambda: reachable(lab, "h1", "h2"))
        assert ask(lab, "h1", "h2").split()[2] == "2"
        assert lab.start("h2") == []  # nothing to restart


def test_kill_one_process_and_start_restarts_only_it() -> None:
    with standin_lab(hosts=2, control_plane=1, components=(*CP, "agent")) as lab:
        pids = pids_of(lab, "h1")
        killed = lab.kill_process("h1", "agent")
        assert killed == pids["agent"]
        assert labprocs.alive(labstate.load(lab.plan.state_file).host("h1")
                              .processes["controlplane"])
        assert lab.start("h1") == ["agent"]
        assert pids_of(lab, "h1")["controlplane"] == pids["controlplane"]
        with pytest.raises(LabError, match="runs no controlplane"):
            lab.kill_process("h2", "controlplane")


def test_partition_cuts_both_ways_keeps_the_island_together_and_heal_restores() -> None:
    with standin_lab(hosts=4, control_plane=4) as lab:
        wait_for(lambda: all(reachable(lab, "h1", d) for d in ("h2", "h3", "h4")))
        island = lab.partition(["h3", "h4"])
        assert island == "br1"
        assert not reachable(lab, "h1", "h3") and not reachable(lab, "h3", "h1")
        assert not reachable(lab, "h4", "h2")
        assert reachable(lab, "h3", "h4") and reachable(lab, "h1", "h2")
        # Every process keeps running in a partition.
        for h in lab.status(raft=False).hosts:
            assert all(pr.running for pr in h.processes)
        # A second partition makes a second island.
        assert lab.partition(["h2"]) == "br2"
        assert not reachable(lab, "h1", "h2")
        # A host killed while cut off comes back on its island.
        lab.kill("h4")
        lab.start("h4")
        wait_for(lambda: reachable(lab, "h3", "h4"))
        assert not reachable(lab, "h1", "h4")
        lab.heal()
        wait_for(lambda: all(reachable(lab, "h1", d) for d in ("h2", "h3", "h4")))
        assert lab.state.islands == []
        assert set(net.links(lab.plan.switch_ns)) == {"lo", "br0", "h1", "h2", "h3", "h4"}
        with pytest.raises(LabError, match="every host"):
            lab.partition(["h1", "h2", "h3", "h4"])
        with pytest.raises(LabError, match="no host 'h9'"):
            lab.partition(["h9"])


def test_two_labs_side_by_side_and_down_of_one_leaves_the_other() -> None:
    with standin_lab(hosts=2, control_plane=1) as a, standin_lab(hosts=2, control_plane=1) as b:
        wait_for(lambda: reachable(a, "h2", "h1") and reachable(b, "h2", "h1"))
        b_procs = recorded(b.plan.dir.parent, b.name)
        down(a.name, a.plan.dir.parent)
        assert leftovers(a.name, a.plan.dir.parent) == []
        assert all(labprocs.alive(r) for r in b_procs)
        assert reachable(b, "h2", "h1")


def test_up_fails_with_the_log_tail_and_down_cleans_the_half_made_lab(tmp_path: Path) -> None:
    root = Path("/tmp") / f"cl-{unique_name()}"
    name = unique_name()
    spec = LabSpec(name=name, hosts=2, control_plane=2)
    old = os.environ.get("STANDIN_FAIL")
    os.environ["STANDIN_FAIL"] = "1"
    try:
        with pytest.raises(LabError) as err:
            Lab.up(spec, root, commands=standin_commands(CP), timeout=5)
        assert "failing on purpose" in str(err.value)
        assert "exited while starting" in str(err.value)
        # Half made: namespaces and folder exist, lab.json says "creating".
        assert leftovers(name, root)
        assert json.loads((root / name / "lab.json").read_text())["phase"] == "creating"
        with pytest.raises(LabError, match="already exists"):
            Lab.up(spec, root, commands=standin_commands(CP))
        down(name, root)
        assert_gone(name, root, recorded(root, name))
    finally:
        if old is None:
            os.environ.pop("STANDIN_FAIL", None)
        else:
            os.environ["STANDIN_FAIL"] = old
        down_quietly(name, root)


def down_quietly(name: str, root: Path) -> None:
    try:
        down(name, root)
    except LabError:
        pass
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def test_down_without_a_record_still_removes_processes_namespaces_and_cgroups() -> None:
    root = Path("/tmp") / f"cl-{unique_name()}"
    name = unique_name()
    try:
        lab = Lab.up(LabSpec(name=name, hosts=2, control_plane=2), root,
                     commands=standin_commands(CP), wait=False)
        procs = recorded(root, name)
        wait_for(lambda: len(labcg.pids(lab.backend, lab.plan.cgroup)) >= 4)
        tree = labcg.pids(lab.backend, lab.plan.cgroup)
        # As after a crash that lost the record.
        lab.plan.state_file.unlink()
        report = down(name, root)
        assert tree <= report.killed
        assert_gone(name, root, procs)
    finally:
        down_quietly(name, root)


def test_a_recycled_pid_is_never_taken_for_a_lab_process() -> None:
    me = psutil.Process()
    rec = labstate.ProcRecord("controlplane", me.pid, me.create_time() - 100.0, [], "")
    assert not labprocs.alive(rec)
    rec.start_time = me.create_time()
    assert labprocs.alive(rec)


def test_status_json_and_commands_reuse_the_recorded_program() -> None:
    with standin_lab(hosts=1, control_plane=1) as lab:
        st = labstate.load(lab.plan.state_file)
        assert st.commands["controlplane"] == [sys.executable, str(STANDIN)]
        # Another handle (a later CLI call) restarts with the same program.
        again = Lab.open(lab.name, lab.plan.dir.parent)
        again.kill("h1")
        again.start("h1")
        rec = labstate.load(lab.plan.state_file).host("h1").processes["controlplane"]
        assert rec.argv[:2] == [sys.executable, str(STANDIN)]
        wait_for(lambda: labprocs.alive(rec))


def test_client_config_is_written_as_default_only_over_a_labs_and_removed_by_down() -> None:
    from corral.lab.lab import QuietReporter

    root = Path("/tmp") / f"cl-{unique_name()}"
    home = root / "home"
    home.mkdir(parents=True)
    mine, shared = home / "mine.yaml", home / "config.yaml"
    mine.write_text("servers: [10.0.0.1:6443]\n")
    names = [unique_name(), unique_name()]

    def up(name: str, target: Path, rep: QuietReporter | None = None) -> Lab:
        return Lab.up(LabSpec(name=name, hosts=1, control_plane=1), root, reporter=rep,
                      commands=standin_commands(CP), wait=False, default_client_config=target)

    try:
        # The user's own config is never replaced: a warning says how to reach the lab.
        rep = QuietReporter()
        up(names[0], mine, rep)
        assert mine.read_text() == "servers: [10.0.0.1:6443]\n"
        assert any("is not a lab's" in w and "CORRAL_CONFIG=" in w for w in rep.warnings)
        # One a lab wrote is replaced by the next lab's...
        a = up(names[1], shared)
        assert f"unix:{a.plan.host('h1').socket}" in shared.read_text()
        down(names[0], root)
        b = up(names[0], shared)
        assert f"unix:{b.plan.host('h1').socket}" in shared.read_text()
        # ...and down removes it only while it still points at the lab going down.
        down(names[1], root)
        assert shared.exists()
        down(names[0], root)
        assert not shared.exists() and mine.exists()
    finally:
        for n in names:
            down_quietly(n, root)
