"""The lab: a multi-host Corral cluster on one machine (`corral lab ...` and the tests).

`Lab.up(spec)` makes a lab and returns a handle; `Lab.open(name)` finds an existing
one through its lab.json; `down(name)` removes one, also half-made or without a
record. The handle's methods are the CLI verbs: status, kill, start, partition,
heal, exec_argv, log_files. Every mutating verb holds the lab's flock and records
what it is about to make before making it (state.py).

Threads model: a Lab is used by one thread at a time (the CLI, or a test). Work in
a namespace happens on short-lived helper threads (net.py); processes are
detached children in their own sessions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.client import Client
from corral.errors import CorralError
from corral.lab import cgroups, configs, health, image, mounts, net, power, preflight, procs
from corral.lab import state as labstate
from corral.lab.errors import LabError
from corral.lab.spec import (
    AGENT,
    CONTROLPLANE,
    DEFAULT_ROOT,
    RUN_ROOT,
    SCRIPTS,
    HostPlan,
    LabPlan,
    LabSpec,
    check_name,
    lab_dir,
    owner_host,
    plan,
)
from corral.lab.state import LabState

UP_TIMEOUT = 90.0
POLL = 0.1
LOG_TAIL = 25


def default_root() -> Path:
    return Path(os.environ.get("CORRAL_LAB_ROOT") or DEFAULT_ROOT)


def default_client_config_path() -> Path:
    return Path.home() / ".corral" / "config.yaml"


class Reporter(Protocol):
    """Where the lab says what it is doing (the CLI draws it with rich)."""

    def phase(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class QuietReporter:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def phase(self, text: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def _resolve_script(component: str) -> list[str]:
    script = SCRIPTS[component]
    beside = Path(sys.executable).parent / script
    if beside.exists():
        return [str(beside)]
    found = shutil.which(script)
    if found:
        return [found]
    raise LabError(f"{script} not found beside {sys.executable} or on PATH: install Corral "
                   "(pip install -e /path/to/corral) in the environment that runs corral")


def _process_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("CORRAL_SERVER", "CORRAL_CONFIG", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
        env.pop(key, None)
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if bindir not in path.split(":"):
        path = f"{bindir}:{path}"
    env["PATH"] = path
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ProcessStatus:
    component: str
    pid: int
    running: bool
    log: str


@dataclass
class HostStatus:
    name: str
    ip: str
    netns: str
    power: str
    bridge: str
    link: str
    control_plane: bool
    processes: list[ProcessStatus] = field(default_factory=list)
    raft: Any = None  # api_pb2.MemberStatus of its replica, when it answered
    raft_error: str = ""


@dataclass
class LabStatus:
    name: str
    dir: str
    phase: str
    subnet: str
    hosts: list[HostStatus]
    leader: str
    islands: dict[str, list[str]]


def write_files(p: LabPlan) -> None:
    """Every host's folders and config files, and the lab's Raft password (0600)."""
    if not p.password_file.exists():
        fd = os.open(p.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    for h in p.hosts:
        for folder in (h.etc, h.logs, h.storage):
            folder.mkdir(parents=True, exist_ok=True)
        for proc in h.processes:
            h.data(proc.component).mkdir(parents=True, exist_ok=True)
            proc.config.write_text(configs.render_component(p, h, proc.component))
        (h.etc / "containers.conf").write_text(configs.containers_conf(h))
        (h.etc / "storage.conf").write_text(configs.storage_conf(p, h))


class Lab:
    def __init__(self, lab_plan: LabPlan, state: LabState,
                 reporter: Reporter | None = None) -> None:
        self.plan = lab_plan
        self.state = state
        self.reporter: Reporter = reporter or QuietReporter()
        self._backend: cgroups.Backend | None = None

    # ---- finding and making -----------------------------------------------------
    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def backend(self) -> cgroups.Backend:
        if self._backend is None:
            self._backend = cgroups.detect()
        return self._backend

    @classmethod
    def open(cls, name: str, root: Path | None = None,
             reporter: Reporter | None = None) -> Lab:
        check_name(name)
        root = root or default_root()
        path = lab_dir(root, name) / "lab.json"
        if not path.exists():
            raise LabError(f"no lab named {name!r} under {root} "
                           f"(make one with: corral lab up --name {name})")
        st = labstate.load(path)
        return cls(plan(st.spec, root), st, reporter)

    @classmethod
    def up(cls, spec: LabSpec, root: Path | None = None, *,
           reporter: Reporter | None = None, timeout: float = UP_TIMEOUT,
           commands: dict[str, list[str]] | None = None,
           default_client_config: Path | None = None,
           wait: bool = True) -> Lab:
        """Make and start the lab `spec`. `commands` replaces a component's program
        (argv before `--config FILE`; the tests' stand-ins). `default_client_config`:
        where to also write the client config (None: nowhere). `wait=False` returns
        once the processes are started, without waiting for a leader (stand-ins)."""
        root = root or default_root()
        lab_plan = plan(spec, root)
        rep: Reporter = reporter or QuietReporter()
        rep.phase("Checking the machine")
        preflight.check(spec.components)
        image.find_busybox()
        backend = cgroups.detect()
        argvs = {c: list((commands or {}).get(c) or _resolve_script(c)) for c in spec.components}
        lab_plan.dir.mkdir(parents=True, exist_ok=True)
        with labstate.locked(lab_plan.lock_file):
            if lab_plan.state_file.exists():
                raise LabError(f"lab {spec.name!r} already exists ({lab_plan.dir}): "
                               f"corral lab down --name {spec.name} removes it")
            stale = [n for n in net.list_netns() if lab_plan.owns_netns(n)]
            if stale:
                raise LabError(f"network namespaces of a lab named {spec.name!r} exist "
                               f"({', '.join(stale)}): corral lab down --name {spec.name} "
                               "removes them")
            st = LabState(spec=spec, commands=argvs)
            lab = cls(lab_plan, st, rep)
            lab._backend = backend
            lab._save()
            lab._make(timeout, default_client_config, wait)
        return lab

    def _save(self) -> None:
        labstate.save(self.plan.state_file, self.state)

    def _make(self, timeout: float, default_client_config: Path | None,
              wait: bool) -> None:
        p, st, rep = self.plan, self.state, self.reporter
        rep.phase("Writing host folders and configs")
        write_files(p)
        rep.phase(f"Wiring {len(p.hosts)} hosts to the switch")
        for name in p.namespaces:
            st.note("namespaces", name)
        st.note("links", f"{p.switch_ns}/{p.bridge}")
        for h in p.hosts:
            st.note("links", f"{p.switch_ns}/{h.port}")
        st.note("cgroups", p.cgroup)
        self._save()
        net.create_netns(p.switch_ns)
        net.make_switch(p.switch_ns, p.bridge, p.gateway, p.prefixlen)
        for h in p.hosts:
            rep.detail(f"{h.name} {h.ip}")
            power.wire(p, h, p.bridge)
            st.host(h.name).bridge = p.bridge
        cgroups.create(self.backend, p.cgroup)
        rep.phase(f"Importing {image.IMAGE} into the lab's image store")
        image.import_image(p.images, p.run / "image", p.hosts[0].etc / "containers.conf")
        image.verify(p.hosts[0].etc / "storage.conf", p.hosts[0].etc / "containers.conf")
        rep.phase("Starting processes")
        env = _process_env()
        for h in p.hosts:
            started = power.start_processes(p, h, st.host(h.name), self.backend,
                                            functools.partial(self._argv_for, h), env)
            for rec in started:
                rep.detail(f"{h.name}: {rec.component} pid {rec.pid}")
            self._save()
        if wait:
            self.wait_ready(timeout)
        else:
            self._check_alive(p.hosts)
        rep.phase("Writing the client config")
        p.client_config.write_text(configs.client_config(p))
        if default_client_config is not None:
            self._write_default_client_config(default_client_config)
        st.phase = "up"
        self._save()

    def _argv_for(self, host: HostPlan, component: str) -> list[str]:
        command = self.state.commands.get(component) or _resolve_script(component)
        return [*command, "--config", str(host.process(component).config)]

    def _write_default_client_config(self, path: Path) -> None:
        if path.exists():
            owner = configs.written_by(path.read_text(errors="replace"))
            if owner is None:
                self.reporter.warn(
                    f"{path} is not a lab's: left as it is; use "
                    f"CORRAL_CONFIG={self.plan.client_config} to reach this lab")
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(configs.client_config(self.plan))
        self.state.default_client_config = str(path)
        if os.environ.get("CORRAL_CONFIG"):
            self.reporter.warn(f"CORRAL_CONFIG is set ({os.environ['CORRAL_CONFIG']}): "
                               f"the CLI reads it, not {path}")

    # ---- waiting ----------------------------------------------------------------
    def wait_ready(self, timeout: float = UP_TIMEOUT, *, wait_nodes: bool = True,
                   hosts: Sequence[str] | None = None) -> str:
        """Wait for a Raft leader every powered replica agrees on (and, with agents,
        every powered host's Node Ready, heartbeated since its agent started);
        return the leader's name. With `hosts`, only their replicas must agree on it.
        On timeout, or when a process dies, LabError with the failing hosts' log
        tails."""
        deadline = time.monotonic() + timeout
        powered = [h for h in self.plan.hosts if self.state.host(h.name).power == "on"]
        chosen = [h for h in powered if hosts is None or h.name in hosts]
        cps = [h for h in chosen if h.control_plane] or \
            [h for h in powered if h.control_plane]
        self.reporter.phase(f"Waiting for a Raft leader ({len(cps)} replicas)")
        leader = self._wait(deadline, lambda: self._raft_check(cps), cps, CONTROLPLANE)
        agents = [h for h in chosen if any(pr.component == AGENT for pr in h.processes)]
        if wait_nodes and agents:
            since = min(self.state.host(h.name).processes[AGENT].start_time for h in agents)
            self.reporter.phase(f"Waiting for {len(agents)} nodes to be Ready")
            self._wait(deadline, lambda: self._nodes_check(agents, since), agents, AGENT)
        return leader

    def _wait(self, deadline: float, check: Callable[[], tuple[bool, str, list[str]]],
              hosts: Sequence[HostPlan], component: str) -> str:
        why = ""
        while True:
            self._check_alive(hosts)
            ok, why, failing = check()
            if ok:
                return why
            self.reporter.detail(why)
            if time.monotonic() >= deadline:
                tails = self._tails(failing or [h.name for h in hosts], component)
                raise LabError(f"lab {self.name}: not ready in time: {why}\n{tails}")
            time.sleep(POLL)

    def _raft_check(self, cps: Sequence[HostPlan]) -> tuple[bool, str, list[str]]:
        with health.Probe({h.name: h.socket for h in cps}) as probe:
            views = probe.views(h.name for h in cps)
        ok, why = health.raft_verdict(views)
        if ok:
            return True, why.removeprefix("leader "), []
        failing = [v.host for v in views if v.status is None or not v.status.leader]
        return False, why, failing

    def _nodes_check(self, agents: Sequence[HostPlan],
                     since: float) -> tuple[bool, str, list[str]]:
        live = [h.name for h in self.plan.control_plane_hosts
                if self.state.host(h.name).power == "on"]
        try:
            with self.client(live, retry_for=0.0, timeout=2.0) as c:
                nodes, _ = c.list("Node")
        except CorralError as err:  # a replica without quorum yet: not ready yet
            return False, f"cannot list nodes: {err}", []
        wanted = [h.name for h in agents]
        ok, why = health.nodes_verdict(nodes, wanted, since)
        by_name = {n.metadata.name: n for n in nodes}
        failing = [w for w in wanted
                   if w not in by_name or not health.node_ready(by_name[w], since)]
        return ok, why, failing

    def _check_alive(self, hosts: Sequence[HostPlan]) -> None:
        for h in hosts:
            for comp, rec in self.state.host(h.name).processes.items():
                if not procs.alive(rec):
                    raise LabError(f"lab {self.name}: {comp} on {h.name} (pid {rec.pid}) exited "
                                   f"while starting; last lines of {rec.log}:\n"
                                   f"{procs.tail(rec.log, LOG_TAIL)}")

    def _tails(self, host_names: Sequence[str], component: str) -> str:
        out = []
        for name in host_names:
            host = self.plan.host(name)
            for proc in host.processes:
                if proc.component == component:
                    out.append(f"--- {name} {proc.log} (last {LOG_TAIL} lines):\n"
                               f"{procs.tail(proc.log, LOG_TAIL)}")
        return "\n".join(out)

    # ---- clients ----------------------------------------------------------------
    def client(self, hosts: Sequence[str] | None = None, *, timeout: float = 10.0,
               retry_for: float = 20.0) -> Client:
        """A Client over the unix sockets of the given control plane hosts (default all)."""
        chosen = [h for h in self.plan.control_plane_hosts if hosts is None or h.name in hosts]
        if not chosen:
            raise LabError(f"none of {list(hosts or [])} runs a control plane replica "
                           f"(those that do: {[h.name for h in self.plan.control_plane_hosts]})")
        return Client([f"unix:{h.socket}" for h in chosen], timeout=timeout, retry_for=retry_for)

    def member_status(self, host: str, timeout: float = 1.0) -> health.ReplicaView:
        h = self.plan.host(host)
        with health.Probe({h.name: h.socket}, timeout=timeout) as probe:
            return probe.view(h.name)

    def leader(self, timeout: float = 1.0) -> str:
        """The leader the powered replicas agree on, or ""."""
        cps = [h for h in self.plan.control_plane_hosts
               if self.state.host(h.name).power == "on"]
        with health.Probe({h.name: h.socket for h in cps}, timeout=timeout) as probe:
            views = probe.views(h.name for h in cps)
        answered = [v for v in views if v.status is not None]
        ok, why = health.raft_verdict(answered)
        return why.removeprefix("leader ") if ok else ""

    # ---- power ------------------------------------------------------------------
    def kill(self, host: str) -> power.PowerLoss:
        """Power loss of `host`: every process SIGKILLed at once and its link cut."""
        h = self.plan.host(host)
        with labstate.locked(self.plan.lock_file):
            self._reload()
            loss = power.power_off(self.plan, h, self.state.host(h.name), self.backend)
            self._save()
        if loss.left:
            raise LabError(f"{host}: processes {sorted(loss.left)} survived SIGKILL for "
                           f"{power.KILL_WAIT:.0f} s")
        return loss

    def start(self, host: str, *, wait: bool = False, timeout: float = UP_TIMEOUT) -> list[str]:
        """Power `host` on (link back, processes restarted with the same state folder),
        or restart whichever of its processes is not running. Returns the components
        started."""
        h = self.plan.host(host)
        with labstate.locked(self.plan.lock_file):
            self._reload()
            hs = self.state.host(h.name)
            if hs.power != "on" or not net.netns_exists(h.netns):
                bridge = hs.bridge if hs.bridge in (self.plan.bridge, *self.state.islands) \
                    else self.plan.bridge
                power.wire(self.plan, h, bridge)
                hs.bridge = bridge
            started = power.start_processes(self.plan, h, hs, self.backend,
                                            functools.partial(self._argv_for, h),
                                            _process_env())
            self._save()
        if wait:
            self.wait_ready(timeout, wait_nodes=True, hosts=[h.name])
        return [r.component for r in started]

    def kill_process(self, host: str, component: str, sig: int = signal.SIGKILL) -> int:
        """Signal one process of a host (default SIGKILL); the host stays powered."""
        h = self.plan.host(host)
        h.process(component)
        with labstate.locked(self.plan.lock_file):
            self._reload()
            rec = power.kill_process(self.state.host(h.name), component, sig)
        if sig == signal.SIGKILL:
            procs.wait_gone([rec.pid], power.KILL_WAIT)
        return rec.pid

    # ---- partitions ---------------------------------------------------------------
    def partition(self, hosts: Sequence[str]) -> str:
        """Cut `hosts` off from the others (both ways); they still reach each other.
        Returns the island bridge they were moved to."""
        if not hosts:
            raise LabError("partition: name at least one host")
        chosen = [self.plan.host(n) for n in hosts]
        if len({h.name for h in chosen}) == len(self.plan.hosts):
            raise LabError("partition: naming every host leaves nobody on the other side")
        with labstate.locked(self.plan.lock_file):
            self._reload()
            used = set(self.state.islands)
            island = next(f"br{k}" for k in range(1, 1000) if f"br{k}" not in used)
            self.state.islands.append(island)
            self.state.note("links", f"{self.plan.switch_ns}/{island}")
            self._save()
            net.add_bridge(self.plan.switch_ns, island)
            for h in chosen:
                net.move_port(self.plan.switch_ns, h.port, island)
                self.state.host(h.name).bridge = island
            self._save()
            self._drop_empty_islands()
        return island

    def heal(self) -> None:
        """Every host back on the one switch bridge; island bridges removed."""
        with labstate.locked(self.plan.lock_file):
            self._reload()
            for h in self.plan.hosts:
                net.move_port(self.plan.switch_ns, h.port, self.plan.bridge)
                self.state.host(h.name).bridge = self.plan.bridge
            self._save()
            for island in list(self.state.islands):
                net.delete_link(self.plan.switch_ns, island)
                self.state.islands.remove(island)
            self._save()

    def _drop_empty_islands(self) -> None:
        for island in list(self.state.islands):
            if not any(hs.bridge == island for hs in self.state.hosts.values()):
                net.delete_link(self.plan.switch_ns, island)
                self.state.islands.remove(island)
        self._save()

    def _reload(self) -> None:
        self.state = labstate.load(self.plan.state_file)

    # ---- looking ------------------------------------------------------------------
    def status(self, raft: bool = True) -> LabStatus:
        self._reload()
        switch = net.links(self.plan.switch_ns) if net.netns_exists(self.plan.switch_ns) else {}
        hosts = []
        for h in self.plan.hosts:
            hs = self.state.host(h.name)
            port = switch.get(h.port)
            link = "cut" if port is None else port["state"]
            st = HostStatus(h.name, h.ip, h.netns, hs.power, hs.bridge, link, h.control_plane)
            for proc in h.processes:
                rec = hs.processes.get(proc.component)
                st.processes.append(ProcessStatus(
                    proc.component, rec.pid if rec else 0,
                    bool(rec and procs.alive(rec)), str(proc.log)))
            if raft and h.control_plane and hs.power == "on":
                view = self.member_status(h.name)
                st.raft, st.raft_error = view.status, view.error
            hosts.append(st)
        leaders = {s.raft.leader for s in hosts if s.raft is not None and s.raft.leader}
        islands: dict[str, list[str]] = {}
        for s in hosts:
            if s.bridge != self.plan.bridge:
                islands.setdefault(s.bridge, []).append(s.name)
        return LabStatus(self.name, str(self.plan.dir), self.state.phase, self.plan.subnet,
                         hosts, leaders.pop() if len(leaders) == 1 else "", islands)

    def exec_argv(self, host: str, command: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run `command` inside `host` (its network
        namespace, and its Podman configuration for `podman` commands)."""
        h = self.plan.host(host)
        if not net.netns_exists(h.netns):
            raise LabError(f"{host} is powered off (corral lab start {host})")
        if not command:
            raise LabError("exec: give a command after --, e.g. corral lab exec h1 -- ip addr")
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(h.etc / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(h.etc / "storage.conf")
        env["CORRAL_CONFIG"] = str(self.plan.client_config)
        return ["nsenter", f"--net={net.netns_path(h.netns)}", "--", *command], env

    def log_files(self, host: str, component: str | None = None) -> list[Path]:
        h = self.plan.host(host)
        if component is not None:
            return [h.process(component).log]
        return [p.log for p in h.processes]

    # ---- removal ------------------------------------------------------------------
    def down(self) -> DownReport:
        return down(self.name, self.plan.dir.parent, reporter=self.reporter)


@dataclass
class DownReport:
    killed: set[int] = field(default_factory=set)
    namespaces: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    client_config: str = ""
    left: list[str] = field(default_factory=list)


def down(name: str, root: Path | None = None, *, reporter: Reporter | None = None,
         run_root: Path = RUN_ROOT) -> DownReport:
    """Remove lab `name` and everything it made, from its record and from its names
    (so also after a crash or a half-made `up`); touch nothing else. LabError
    listing what could not be removed."""
    check_name(name)
    root = root or default_root()
    rep: Reporter = reporter or QuietReporter()
    folder = lab_dir(root, name)
    report = DownReport()
    st: LabState | None = None
    if (folder / "lab.json").exists():
        try:
            st = labstate.load(folder / "lab.json")
        except LabError as err:
            rep.warn(str(err))
    if st is None and not folder.exists():
        if not _owned_netns(name) and not cgroups.exists_anywhere(f"/corral-lab-{name}"):
            raise LabError(f"no lab named {name!r} under {root}")
        rep.warn(f"no state folder {folder}: removing what the lab's names point at "
                 "(processes, namespaces, cgroups); if the lab was made with another "
                 "CORRAL_LAB_ROOT, run down again with that root to remove its folder")
    cgroup = f"/corral-lab-{name}"
    with labstate.locked(folder / ".lock") if folder.exists() else _nolock():
        if st is not None:
            st.phase = "removing"
            labstate.save(folder / "lab.json", st)
        rep.phase(f"Stopping every process of lab {name}")
        recorded = [r for hs in (st.hosts.values() if st else []) for r in hs.processes.values()]
        namespaces = _owned_netns(name)
        backend = None
        try:
            backend = cgroups.detect()
        except LabError as err:
            rep.warn(str(err))
        victims = procs.live_pids(recorded) | procs.pids_in_netns(namespaces)
        victims.discard(os.getpid())
        if backend is not None:
            report.killed = cgroups.kill_tree(backend, cgroup, victims)
        else:
            procs.kill_pids(victims)
            report.killed = victims
        left = procs.wait_gone(report.killed, power.KILL_WAIT)
        if left:
            report.left.append(f"processes {sorted(left)} survived SIGKILL")
        rep.phase("Removing namespaces, mounts, cgroups and state")
        for ns in sorted(namespaces, key=lambda n: n.endswith("-sw")):
            if net.remove_netns(ns):
                report.namespaces.append(ns)
        run = run_root / name
        for where in (folder, run):
            if where.exists():
                report.unmounted += mounts.unmount_under(where)
        if folder.exists():
            power.remove_runc_state(str(folder), cgroup)
        shutil.rmtree(run, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_root.rmdir()  # only when no other lab has volatile state there
        left_cg = cgroups.remove_tree(cgroup)
        report.left.extend(f"cgroup {p} (still has tasks)" for p in left_cg)
        report.client_config = _remove_default_client_config(st, folder)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
    report.left.extend(leftovers(name, root, run_root))
    if report.left:
        raise LabError(f"lab {name}: could not remove everything: {'; '.join(report.left)}")
    return report


class _nolock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _owned_netns(name: str) -> list[str]:
    switch = f"corral-{name}-sw"
    return [n for n in net.list_netns() if n == switch or owner_host(name, n) is not None]


def _remove_default_client_config(st: LabState | None, folder: Path) -> str:
    candidates = {default_client_config_path()}
    if st is not None and st.default_client_config:
        candidates.add(Path(st.default_client_config))
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if configs.written_by(text) == str(folder):
            path.unlink(missing_ok=True)
            return str(path)
    return ""


def leftovers(name: str, root: Path | None = None, run_root: Path = RUN_ROOT) -> list[str]:
    """What of lab `name` still exists: namespaces, cgroups, runc container state,
    mounts, processes naming its folders (conmon, containers), its folders. Empty when
    the lab is wholly gone."""
    root = root or default_root()
    folder = lab_dir(root, name)
    run = run_root / name
    cgroup = f"/corral-lab-{name}"
    found = [f"network namespace {n}" for n in _owned_netns(name)]
    for path in cgroups.exists_anywhere(cgroup):
        found.append(f"cgroup {path}")
    found.extend(f"runc state of container {cid}"
                 for cid in power.runc_states(str(folder), cgroup))
    for where in (folder, run):
        found.extend(f"mount {m}" for m in mounts.under(where))
        found.extend(f"process {pid} ({cmd})" for pid, cmd in _processes_naming(where))
        if where.exists():
            found.append(f"folder {where}")
    return found


def _processes_naming(folder: Path) -> list[tuple[int, str]]:
    """Processes whose command line names a path in `folder` (conmon and Podman
    name their storage there): a container of the lab that escaped its cgroup."""
    needle = str(folder).rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append((int(entry), cmd[:120]))
    return found
