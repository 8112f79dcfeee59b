"""A running lab for tests: `running_lab(...)` makes one and always removes it.

Import it from any test folder's conftest (tests/lab/conftest.py shows how):

    from tests.labfixture import running_lab

    with running_lab(hosts=3, components=("controlplane", "agent", "netproxy")) as lab:
        with lab.client() as c:             # corral.client.Client over the hosts' sockets
            c.apply(...)
        lab.kill("h2"); lab.start("h2")     # power loss and back
        lab.partition(["h3"]); lab.heal()
        lab.exec_argv("h1", ["busybox", "wget", ...])   # argv + env to run inside h1

Each lab gets a unique name and its own short temporary state root (unix socket
paths must stay under 108 bytes). On the way out, whether the test passed or
failed, the lab is brought down and `assert_gone` checks that nothing of it is
left: no namespace, cgroup, mount, folder, and none of its recorded processes (by
PID and start time). When the block raised, the last lines of every process log
are printed first (pytest shows them with the failure); set
CORRAL_TEST_KEEP_LOGS=DIR to keep whole copies of them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.lab import Lab, LabSpec, down, leftovers
from corral.lab import procs as labprocs
from corral.lab import state as labstate
from corral.lab.spec import DEFAULT_COMPONENTS

STANDIN = Path(__file__).parent / "lab" / "standin.py"


def unique_name(prefix: str = "t") -> str:
    """A lab name no other test uses (hex never contains an 'h', so no 'hK' part)."""
    return f"{prefix}-{secrets.token_hex(3)}"


def standin_commands(components: Sequence[str]) -> dict[str, list[str]]:
    """Stand-in programs for `components` (tests/lab/standin.py)."""
    return {c: [sys.executable, str(STANDIN)] for c in components}


def recorded(root: Path, name: str) -> list[labstate.ProcRecord]:
    path = root / name / "lab.json"
    if not path.exists():
        return []
    try:
        st = labstate.load(path)
    except Exception:
        return []
    return [r for hs in st.hosts.values() for r in hs.processes.values()]


def print_logs(root: Path, name: str, lines: int = 40) -> None:
    """The last lines of every process log; with CORRAL_TEST_KEEP_LOGS=DIR set, also
    a copy of the whole logs in DIR/NAME/ (the lab's own folder goes with `down`)."""
    folder = root / name
    keep = os.environ.get("CORRAL_TEST_KEEP_LOGS")
    for log in sorted(folder.glob("h*/logs/*.log")):
        print(f"----- {log} (last {lines} lines)")
        print(labprocs.tail(log, lines))
        if keep:
            target = Path(keep) / name / log.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, target)


def assert_gone(name: str, root: Path, procs: Sequence[labstate.ProcRecord]) -> None:
    left = leftovers(name, root)
    alive = [f"{r.component} pid {r.pid}" for r in procs if labprocs.alive(r)]
    assert not left and not alive, f"lab {name} left behind: {left + alive}"


@contextlib.contextmanager
def running_lab(hosts: int = 3, control_plane: int = 3,
                components: Sequence[str] = DEFAULT_COMPONENTS, *,
                name: str | None = None, commands: dict[str, list[str]] | None = None,
                wait: bool = True, timeout: float = 90.0,
                root: Path | None = None, show_logs: bool = False) -> Iterator[Lab]:
    """A lab that exists for the block; removed (and checked gone) afterwards.
    `show_logs`: print the log tails on the way out even when the block did not
    raise (pytest fixtures: the test body's failure does not reach the fixture,
    and pytest shows captured output of failed tests only)."""
    name = name or unique_name()
    own_root = root is None
    base = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp")) if root is None else root
    failed = False
    try:
        spec = LabSpec(name=name, hosts=hosts, control_plane=control_plane,
                       components=tuple(components))
        lab = Lab.up(spec, base, commands=commands, wait=wait, timeout=timeout)
        yield lab
    except BaseException:
        failed = True
        raise
    finally:
        if failed or show_logs:
            print_logs(base, name)
        procs = recorded(base, name)
        try:
            if (base / name).exists() or leftovers(name, base):
                down(name, base)
        finally:
            try:
                assert_gone(name, base, procs)
            finally:
                if own_root:
                    shutil.rmtree(base, ignore_errors=True)


def pids_of(lab: Lab, host: str) -> dict[str, int]:
    """component -> PID of the host's recorded processes."""
    st = labstate.load(lab.plan.state_file)
    return {c: r.pid for c, r in st.host(host).processes.items()}


def in_netns_of(pid: int, netns: str) -> bool:
    """Is process `pid` in network namespace `netns`?"""
    a = os.stat(f"/proc/{pid}/ns/net")
    b = os.stat(f"/run/netns/{netns}")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
