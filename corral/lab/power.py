"""A lab host's power: switch it on (wire it, start its processes) and cut it (power loss).

Power loss (`power_off`) is, in this order: freeze the host's cgroup tree (from that
instant none of its processes runs), unplug its switch port (the link is cut),
SIGKILL every process of the host -- everything in its cgroup tree (the control
plane, agent, netproxy, the agent's Podman service, conmon, containers), every
process in its network namespace or in one of its pod namespaces, and its recorded
PIDs (checked against their start times) -- then thaw so the kills land, and wait
for them to be gone. After that the host's volatile state goes, as a reboot would
lose it: its pod namespaces and its own namespace (so addresses, routes, bridges and
iptables rules of the host are gone), every mount under its state folder, its
volatile folder /run/corral-lab/LAB/hK (Podman's runroot and tmp_dir: Podman sees a
reboot), runc's state of its containers, and its cgroup directories. Its persistent
folders (configs, data, storage, logs) stay.

`power_on` makes the namespace again, plugs it into the bridge the host belongs on
(an island if it is partitioned), makes its cgroup and starts any of its processes
that is not running, with the same config files and state folders.
Single-threaded; the caller holds the lab lock and saves the state.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.lab import cgroups, mounts, net, procs
from corral.lab.errors import LabError
from corral.lab.spec import HostPlan, LabPlan
from corral.lab.state import HostState, ProcRecord

RUNC_ROOT = Path("/run/runc")
KILL_WAIT = 10.0


@dataclass
class PowerLoss:
    """What a power loss did."""

    host: str
    killed: set[int] = field(default_factory=set)
    # time.monotonic() just after the SIGKILLs were sent (for failover timings).
    at: float = 0.0
    left: set[int] = field(default_factory=set)


def host_netns(lab: LabPlan, host: HostPlan) -> list[str]:
    """The host's namespace and its pod namespaces that exist now."""
    return [n for n in net.list_netns()
            if n == host.netns or n.startswith(host.netns_prefix)]


def power_off(lab: LabPlan, host: HostPlan, hstate: HostState,
              backend: cgroups.Backend) -> PowerLoss:
    loss = PowerLoss(host.name)
    cgroups.freeze(backend, host.cgroup)
    try:
        net.delete_link(lab.switch_ns, host.port)
        namespaces = host_netns(lab, host)
        victims = (cgroups.pids(backend, host.cgroup)
                   | procs.pids_in_netns(namespaces)
                   | procs.live_pids(hstate.processes.values()))
        victims.discard(os.getpid())
        loss.killed = cgroups.kill_tree(backend, host.cgroup, victims)
        loss.at = time.monotonic()
    finally:
        cgroups.thaw(backend, host.cgroup)
    loss.left = procs.wait_gone(loss.killed, KILL_WAIT)
    hstate.power = "off"
    wipe_volatile(lab, host)
    return loss


def wipe_volatile(lab: LabPlan, host: HostPlan) -> None:
    """What a reboot loses: namespaces, mounts, run/, runc state, cgroups."""
    for name in host_netns(lab, host):
        if name != host.netns:
            net.remove_netns(name)
    net.remove_netns(host.netns)
    for folder in (host.dir, host.run):
        if folder.exists():
            mounts.unmount_under(folder)
    remove_runc_state(str(host.dir), host.cgroup)
    shutil.rmtree(host.run, ignore_errors=True)
    # Dirs whose killed tasks PID 1 has not reaped yet stay; `down` removes them.
    cgroups.remove_tree(host.cgroup, timeout=0.5)


def runc_states(folder: str, cgroup: str, root: Path = RUNC_ROOT) -> list[str]:
    """IDs of the containers runc keeps state for (in /run/runc/ID: Podman passes no
    --root) whose root file system is under `folder` or whose cgroup is under `cgroup`."""
    found: list[str] = []
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return found
    for cid in entries:
        try:
            text = (root / cid / "state.json").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if folder.rstrip("/") + "/" in text or f'"{cgroup.rstrip("/")}/' in text:
            found.append(cid)
    return found


def remove_runc_state(folder: str, cgroup: str, root: Path = RUNC_ROOT) -> list[str]:
    """Drop runc's state of the lab's containers, as a reboot would clear /run."""
    found = runc_states(folder, cgroup, root)
    for cid in found:
        shutil.rmtree(root / cid, ignore_errors=True)
    return found


def wire(lab: LabPlan, host: HostPlan, bridge: str) -> None:
    """The host's namespace plugged into `bridge` of the switch (made if missing)."""
    if not net.netns_exists(host.netns):
        net.create_netns(host.netns)
    net.plug(lab.switch_ns, bridge, host.port, host.netns, host.ip, host.prefixlen, host.mac,
             lab.gateway)


def start_processes(lab: LabPlan, host: HostPlan, hstate: HostState,
                    backend: cgroups.Backend, argv_for: Callable[[str], list[str]],
                    env: dict[str, str]) -> list[ProcRecord]:
    """Start every process of the host that is not running; return those started."""
    cgroups.create(backend, host.cgroup)
    started = []
    for proc in host.processes:
        rec = hstate.processes.get(proc.component)
        if rec is not None and procs.alive(rec):
            continue
        for folder in (host.run, host.logs, host.data(proc.component)):
            folder.mkdir(parents=True, exist_ok=True)
        rec = procs.start(proc.component, argv_for(proc.component), netns=host.netns,
                          procs_file=cgroups.procs_file(backend, host.cgroup),
                          log=proc.log, env=env, cwd=host.dir)
        hstate.processes[proc.component] = rec
        started.append(rec)
    hstate.power = "on"
    return started


def kill_process(hstate: HostState, component: str, sig: int) -> ProcRecord:
    """Signal one recorded process of a host (LabError if it is not running)."""
    rec = hstate.processes.get(component)
    if rec is None or not procs.alive(rec):
        raise LabError(f"{component} is not running on this host")
    os.kill(rec.pid, sig)
    return rec
