"""The per-host cgroup: where every process of a lab host lives, so a power loss
can stop them all at once.

The lab puts each process it starts into /corral-lab-LAB/hK (children inherit it:
the agent's Podman service, conmon...), and the agent's containers go under
/corral-lab-LAB/hK/pods through Podman's cgroup_parent; with the cgroupfs manager
Podman puts conmon in PARENT/conmon and each container in PARENT/libpod-ID, in
every mounted hierarchy (measured with Podman 4.3 / runc 1.1 on this machine).

`kill_tree` freezes the host's tree first (no process of the host runs, or sees
another die, after that moment), SIGKILLs every task, then thaws so the signals
are delivered. Two backends, chosen by what the machine mounts:
- v1: the freezer hierarchy (/sys/fs/cgroup/freezer; freezer.state FROZEN);
- v2: the unified hierarchy (cgroup.freeze, and cgroup.kill when the kernel has it).
`remove_tree` removes the lab's directories in every hierarchy (Podman and runc
made them in all of them), deepest first; a directory with tasks left stays.
Single-threaded use; no state beyond the files.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from corral.lab import mounts
from corral.lab.errors import LabError

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Backend:
    kind: str  # "v1" or "v2"
    mount: Path  # the hierarchy the lab puts its processes in

    def dir(self, cgroup: str) -> Path:
        return self.mount / cgroup.lstrip("/")


def _fs_type(path: Path) -> str | None:
    """The file system type mounted exactly at `path`, or None."""
    for m in reversed(mounts.mounts()):
        if m.mount_point == str(path):
            return m.fstype
    return None


def detect(root: Path = CGROUP_ROOT) -> Backend:
    """The freezer v1 hierarchy if mounted, else the unified v2 one at `root`."""
    freezer = root / "freezer"
    if _fs_type(freezer) == "cgroup":
        return Backend("v1", freezer)
    if _fs_type(root) == "cgroup2":
        return Backend("v2", root)
    raise LabError(
        f"no cgroup freezer found (neither a v1 freezer hierarchy at {freezer} nor cgroup v2 "
        f"at {root}): the lab needs one to stop a host's processes at once"
    )


def all_mounts() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, named ones, v2)."""
    return [Path(m.mount_point) for m in mounts.mounts() if m.fstype in ("cgroup", "cgroup2")]


def create(backend: Backend, cgroup: str) -> Path:
    path = backend.dir(cgroup)
    path.mkdir(parents=True, exist_ok=True)
    return path


def procs_file(backend: Backend, cgroup: str) -> Path:
    return backend.dir(cgroup) / "cgroup.procs"


def pids(backend: Backend, cgroup: str) -> set[int]:
    """Every process in `cgroup` and below it."""
    top = backend.dir(cgroup)
    found: set[int] = set()
    if not top.is_dir():
        return found
    for dirpath, _dirs, _files in os.walk(top):
        try:
            text = (Path(dirpath) / "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(p) for p in text.split())
    return found


def _set_frozen(backend: Backend, cgroup: str, frozen: bool) -> None:
    path = backend.dir(cgroup)
    if not path.is_dir():
        return
    if backend.kind == "v1":
        (path / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
    else:
        (path / "cgroup.freeze").write_text("1" if frozen else "0")


def _is_frozen(backend: Backend, cgroup: str) -> bool:
    path = backend.dir(cgroup)
    try:
        if backend.kind == "v1":
            return (path / "freezer.state").read_text().strip() == "FROZEN"
        return "frozen 1" in (path / "cgroup.events").read_text()
    except OSError:
        return True


def freeze(backend: Backend, cgroup: str, timeout: float = 2.0) -> bool:
    """Freeze the tree; True once every task is frozen (False after `timeout`: a task
    in uninterruptible sleep can hold it in FREEZING; the caller kills anyway)."""
    _set_frozen(backend, cgroup, True)
    deadline = time.monotonic() + timeout
    while not _is_frozen(backend, cgroup):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def thaw(backend: Backend, cgroup: str) -> None:
    _set_frozen(backend, cgroup, False)


def kill_tree(backend: Backend, cgroup: str, extra: set[int] | None = None) -> set[int]:
    """SIGKILL every process in the tree (and the `extra` pids) at once; return the
    pids signalled. Frozen first, so none of them runs between the first kill and
    the last."""
    if not backend.dir(cgroup).is_dir():
        victims = set(extra or ())
        _kill(victims)
        return victims
    freeze(backend, cgroup)
    try:
        victims = pids(backend, cgroup) | set(extra or ())
        kill_file = backend.dir(cgroup) / "cgroup.kill"
        if backend.kind == "v2" and kill_file.exists():
            kill_file.write_text("1")
        _kill(victims)
    finally:
        thaw(backend, cgroup)
    return victims


def _kill(victims: set[int]) -> None:
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_tree(cgroup: str, mounts: list[Path] | None = None,
                timeout: float = 10.0) -> list[Path]:
    """rmdir `cgroup` and everything below it in every hierarchy; return what is left
    (directories still holding tasks). Retries for `timeout` seconds: a task that
    was just killed keeps its cgroup busy until it has been reaped, and the lab's
    daemons are orphans (the CLI that started them is gone) whose zombies wait for
    PID 1 (measured here: about a second, longer under load)."""
    deadline = time.monotonic() + timeout
    while True:
        left = _remove_once(cgroup, mounts if mounts is not None else all_mounts())
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _remove_once(cgroup: str, hierarchies: list[Path]) -> list[Path]:
    left = []
    for mount in hierarchies:
        top = mount / cgroup.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(Path(dirpath))
    return left


def exists_anywhere(cgroup: str) -> list[Path]:
    """The hierarchies in which `cgroup` still exists."""
    return [m / cgroup.lstrip("/") for m in all_mounts() if (m / cgroup.lstrip("/")).is_dir()]
