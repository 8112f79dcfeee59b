"""`corral lab ...`: a multi-host Corral cluster on this machine (corral/lab/ does the work).

    corral lab up [--hosts N] [--control-plane M] [--name LAB] [--components ...]
    corral lab status | down | heal                      [--name LAB]
    corral lab kill HOST [PROCESS] | start HOST          [--name LAB]
    corral lab partition HOST [HOST...]                  [--name LAB]
    corral lab exec HOST -- CMD...  |  corral lab logs HOST [PROCESS] [-f] [--tail N]
    corral lab list

The lab's name defaults to $CORRAL_LAB_NAME, else "lab"; its state folder is
$CORRAL_LAB_ROOT/NAME (default /var/lib/corral-lab/NAME). Registered by
corral/cli/main.py through `register(subparsers)`; each verb sets `run(ctx)` and
uses only ctx.args, ctx.stdout and ctx.stderr. Threads model: main thread only
(rich's live display adds its refresh thread during `up`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.status import Status
from rich.table import Table

from corral.lab import lab as labmod
from corral.lab import procs
from corral.lab.errors import LabError
from corral.lab.spec import COMPONENTS, DEFAULT_COMPONENTS, DEFAULT_NAME, DEFAULT_SUBNET, LabSpec


def _default_name() -> str:
    return os.environ.get("CORRAL_LAB_NAME") or DEFAULT_NAME


class RichReporter:
    """Draws `up`'s phases: a spinner on the current one, a line per finished one."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._phase = ""
        self._t0 = time.monotonic()

    def phase(self, text: str) -> None:
        self._finish()
        self._phase, self._t0 = text, time.monotonic()
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def detail(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"{self._phase}: {text}")

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)

    def _finish(self) -> None:
        if self._phase:
            took = time.monotonic() - self._t0
            self.console.print(f"[green]✓[/green] {self._phase} ({took:.1f} s)",
                               highlight=False)

    def close(self, ok: bool) -> None:
        if ok:
            self._finish()
        elif self._phase:
            self.console.print(f"[red]✗[/red] {self._phase}", highlight=False)
        self._phase = ""
        if self._status is not None:
            self._status.stop()
            self._status = None


def _console(stream: IO[str]) -> Console:
    # Not a terminal (a pipe, a log): wide enough that the status table does not wrap.
    width = None if stream.isatty() else 160
    return Console(file=stream, highlight=False, width=width)


def _components(text: str) -> tuple[str, ...]:
    items = tuple(c.strip() for c in text.split(",") if c.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one of " + ", ".join(COMPONENTS))
    return items


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return n


def register(subparsers: Any) -> None:
    lab = subparsers.add_parser(
        "lab", help="a multi-host Corral cluster on this machine (network namespaces)",
        description="A Corral cluster of several hosts on this machine: each host a network "
                    "namespace on a lab switch, with its own state folder and processes. "
                    "Needs root.")
    verbs = lab.add_subparsers(dest="lab_verb", metavar="VERB",
                               parser_class=type(lab))
    lab.set_defaults(run=lambda ctx: _usage(lab, ctx))

    def verb(name: str, help_text: str, fn: Any) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", default=_default_name(),
                       help="the lab's name (default: $CORRAL_LAB_NAME, else 'lab')")
        p.set_defaults(run=fn)
        return p

    p = verb("up", "make the lab and start its processes", _up)
    p.add_argument("--hosts", type=_positive, default=3, help="number of hosts (3)")
    p.add_argument("--control-plane", type=_positive, default=3,
                   help="control plane replicas, on the first hosts (3)")
    p.add_argument("--components", type=_components, default=DEFAULT_COMPONENTS,
                   help=f"processes to run, comma-separated, from {','.join(COMPONENTS)} "
                        f"(default {','.join(DEFAULT_COMPONENTS)})")
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help=f"lab network ({DEFAULT_SUBNET})")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--timeout", type=float, default=labmod.UP_TIMEOUT,
                   help="seconds to wait for a leader and Ready nodes (90)")
    p.add_argument("--no-default-config", action="store_true",
                   help="do not write ~/.corral/config.yaml (the lab's own client.yaml "
                        "is written anyway)")

    verb("down", "stop and remove everything the lab made", _down)
    p = verb("status", "hosts, addresses, processes and the Raft leader", _status)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p = verb("kill", "power loss of a host: SIGKILL of all its processes, link cut "
                     "(with PROCESS: SIGKILL of that process only)", _kill)
    p.add_argument("host")
    p.add_argument("process", nargs="?", choices=COMPONENTS)
    p = verb("start", "power a host on again, or restart its stopped processes", _start)
    p.add_argument("host")
    p.add_argument("--wait", action="store_true",
                   help="wait until its replica knows the leader (and its node is Ready)")
    p = verb("partition", "cut hosts off from the others (both ways); they still reach "
                          "each other", _partition)
    p.add_argument("hosts", nargs="+", metavar="HOST")
    verb("heal", "undo every partition", _heal)
    p = verb("exec", "run a command inside a host: corral lab exec h1 -- ip addr", _exec)
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = verb("logs", "print a host's process logs", _logs)
    p.add_argument("host")
    p.add_argument("process", nargs="?", choices=COMPONENTS)
    p.add_argument("--tail", type=_positive, default=None, metavar="N",
                   help="only the last N lines of each log")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    verb("list", "the labs under the state root", _list)


def _usage(parser: argparse.ArgumentParser, ctx: Any) -> int:
    parser.print_help(ctx.stdout)
    return 0


def _up(ctx: Any) -> int:
    a = ctx.args
    spec = LabSpec(name=a.name, hosts=a.hosts, control_plane=a.control_plane,
                   subnet=a.subnet, components=tuple(a.components), log_level=a.log_level)
    console = _console(ctx.stdout)
    rep = RichReporter(console)
    ok = False
    try:
        lab = labmod.Lab.up(
            spec, reporter=rep, timeout=a.timeout,
            default_client_config=None if a.no_default_config
            else labmod.default_client_config_path())
        ok = True
    except LabError as err:
        rep.close(False)
        raise LabError(f"{err}\nThe lab is left as it is for a look (corral lab logs, "
                       f"corral lab status --name {a.name}); corral lab down --name {a.name} "
                       "removes it.") from None
    finally:
        rep.close(ok)
    st = lab.status()
    _print_status(st, console)
    where = lab.state.default_client_config or str(lab.plan.client_config)
    console.print(f"\nClient config: {where}")
    if not lab.state.default_client_config:
        console.print(f"  export CORRAL_CONFIG={lab.plan.client_config}")
    console.print("Try: corral get nodes; corral cluster status; "
                  f"corral lab kill {lab.plan.hosts[0].name}")
    return 0


def _down(ctx: Any) -> int:
    console = _console(ctx.stdout)
    rep = RichReporter(console)
    ok = False
    try:
        report = labmod.down(ctx.args.name, reporter=rep)
        ok = True
    finally:
        rep.close(ok)
    console.print(f"lab {ctx.args.name} removed: {len(report.killed)} processes stopped, "
                  f"{len(report.namespaces)} namespaces, {len(report.unmounted)} mounts"
                  + (f", {report.client_config}" if report.client_config else ""))
    return 0


def _open(ctx: Any) -> labmod.Lab:
    return labmod.Lab.open(ctx.args.name)


def _status(ctx: Any) -> int:
    st = _open(ctx).status()
    if ctx.args.output == "json":
        data = asdict(st)
        for h, host in zip(data["hosts"], st.hosts, strict=True):
            h["raft"] = _member_dict(host.raft)
        ctx.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    _print_status(st, _console(ctx.stdout))
    return 0


def _member_dict(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"state": m.state, "leader": m.leader, "term": m.term,
            "commit_index": m.commit_index, "applied_index": m.applied_index}


def _print_status(st: labmod.LabStatus, console: Console) -> None:
    table = Table(title=f"lab {st.name} ({st.phase}) — {st.subnet} — {st.dir}",
                  title_justify="left", box=None, pad_edge=False)
    for col in ("HOST", "ADDRESS", "POWER", "LINK", "PROCESSES", "RAFT"):
        table.add_column(col)
    for h in st.hosts:
        link = h.link if h.bridge == "br0" or h.link == "cut" else f"{h.link} (island {h.bridge})"
        proc_text = " ".join(
            f"{p.component}:{p.pid if p.running else 'stopped'}" for p in h.processes) or "-"
        if h.raft is not None:
            raft = f"{h.raft.state}, term {h.raft.term}, applied {h.raft.applied_index}"
        elif h.control_plane and h.power == "on":
            raft = f"no answer ({h.raft_error})" if h.raft_error else "no answer"
        else:
            raft = "-"
        table.add_row(h.name, h.ip, h.power, link, proc_text, raft)
    console.print(table)
    console.print(f"Raft leader: {st.leader or 'none'}")


def _kill(ctx: Any) -> int:
    lab = _open(ctx)
    if ctx.args.process:
        pid = lab.kill_process(ctx.args.host, ctx.args.process)
        ctx.stdout.write(f"{ctx.args.host}: {ctx.args.process} (pid {pid}) killed\n")
        return 0
    loss = lab.kill(ctx.args.host)
    ctx.stdout.write(f"{ctx.args.host}: power lost ({len(loss.killed)} processes killed, "
                     "link cut)\n")
    return 0


def _start(ctx: Any) -> int:
    lab = _open(ctx)
    started = lab.start(ctx.args.host, wait=ctx.args.wait)
    what = ", ".join(started) if started else "nothing (all running)"
    ctx.stdout.write(f"{ctx.args.host}: started {what}\n")
    return 0


def _partition(ctx: Any) -> int:
    lab = _open(ctx)
    island = lab.partition(ctx.args.hosts)
    ctx.stdout.write(f"{', '.join(ctx.args.hosts)} cut off from the other hosts "
                     f"(switch island {island}); corral lab heal undoes it\n")
    return 0


def _heal(ctx: Any) -> int:
    _open(ctx).heal()
    ctx.stdout.write("every host back on one switch\n")
    return 0


def _exec(ctx: Any) -> int:
    command = list(ctx.args.command)
    if "--" in command:
        # `exec HOST --name LAB -- CMD`: options may come between HOST and `--`.
        cut = command.index("--")
        opts = argparse.ArgumentParser(prog="corral lab exec", add_help=False)
        opts.add_argument("--name")
        try:
            extra = opts.parse_args(command[:cut])
        except SystemExit:
            raise LabError(f"exec: unknown options before --: {' '.join(command[:cut])} "
                           "(only --name LAB may come there)") from None
        if extra.name:
            ctx.args.name = extra.name
        command = command[cut + 1:]
    argv, env = _open(ctx).exec_argv(ctx.args.host, command)
    # Hosts share the machine's files: a program missing here is missing there.
    if shutil.which(command[0], path=env.get("PATH")) is None:
        raise LabError(f"exec: {command[0]}: command not found")
    ctx.stdout.flush()
    return subprocess.run(argv, env=env).returncode


def _logs(ctx: Any) -> int:
    lab = _open(ctx)
    files = lab.log_files(ctx.args.host, ctx.args.process)
    for path in files:
        if len(files) > 1:
            ctx.stdout.write(f"==> {path} <==\n")
        if ctx.args.tail is not None:
            text = procs.tail(path, ctx.args.tail)
            ctx.stdout.write(text + ("\n" if text else ""))
        else:
            try:
                ctx.stdout.write(Path(path).read_text(errors="replace"))
            except FileNotFoundError:
                ctx.stdout.write("(no log yet)\n")
    if ctx.args.follow:
        _follow(files, ctx.stdout)
    return 0


def _follow(files: list[Path], out: IO[str]) -> None:
    handles = {}
    for path in files:
        f = open(path, errors="replace")  # noqa: SIM115 - closed below
        f.seek(0, os.SEEK_END)
        handles[path] = f
    try:
        while True:
            got = False
            for path, f in handles.items():
                line = f.readline()
                while line:
                    got = True
                    prefix = f"[{path.stem}] " if len(handles) > 1 else ""
                    out.write(prefix + line)
                    line = f.readline()
            out.flush()
            if not got:
                time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        for f in handles.values():
            f.close()


def _list(ctx: Any) -> int:
    root = labmod.default_root()
    try:
        names = sorted(p.name for p in root.iterdir() if (p / "lab.json").exists())
    except FileNotFoundError:
        names = []
    if not names:
        ctx.stdout.write(f"No labs under {root}.\n")
        return 0
    for name in names:
        ctx.stdout.write(f"{name}\t{root / name}\n")
    return 0
