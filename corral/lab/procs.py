"""Starting, finding and killing a lab host's processes.

A process is started detached from the caller (its own session, stdin /dev/null,
stdout and stderr appended to its log file) through a two-step shim: `sh` writes
its own PID into the host's cgroup.procs and then execs `nsenter --net=NS`, which
execs the command. So the process is in the host's cgroup before it runs a single
instruction of its own (no child can escape by forking early), and the PID the
lab records is the final program's (exec keeps the PID).

Only the network namespace changes: the process shares the machine's mount
namespace. (`ip netns exec` would give each process a private mount namespace, so
pod namespaces and container mounts the agent makes would vanish for every other
process and for its own restarted self.)

A recorded process is the same process only if its start time (psutil's
create_time) is the recorded one: a recycled PID is never signalled.
Single-threaded use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from corral.lab import net
from corral.lab.state import ProcRecord

# Start times are floats from /proc/PID/stat in clock ticks: equal within this.
START_TIME_SLACK = 0.05

def shim_argv(procs_file: Path, netns: str, argv: list[str]) -> list[str]:
    # dash has no ${@:2}: shift twice instead.
    script = 'echo $$ > "$1" || exit 97; ns="$2"; shift 2; exec nsenter --net="$ns" -- "$@"'
    return ["/bin/sh", "-c", script, "corral-lab", str(procs_file),
            str(net.netns_path(netns)), *argv]


def start(component: str, argv: list[str], *, netns: str, procs_file: Path, log: Path,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcRecord:
    """Start `argv` inside `netns` and the cgroup of `procs_file`; return its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        out.write(f"---- {stamp} corral lab starts: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            shim_argv(procs_file, netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
            close_fds=True,
        )
    _children[proc.pid] = proc
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    return ProcRecord(component=component, pid=proc.pid, start_time=created,
                      argv=list(argv), log=str(log))


# The processes this Python process started, so it can reap them: they would stay
# zombies until it exits (a zombie still "exists" for kill(pid, 0)).
_children: dict[int, subprocess.Popen[bytes]] = {}


def reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def alive(rec: ProcRecord) -> bool:
    """Is the recorded process still running (same PID and start time, not a zombie)?"""
    reap()
    try:
        p = psutil.Process(rec.pid)
        if abs(p.create_time() - rec.start_time) > START_TIME_SLACK:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pids_in_netns(names: Iterable[str]) -> set[int]:
    """Every process whose network namespace is one of `names`."""
    wanted = {ino for ino in (net.netns_inode(n) for n in names) if ino is not None}
    found: set[int] = set()
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in wanted:
            found.add(int(entry))
    return found


def live_pids(records: Iterable[ProcRecord]) -> set[int]:
    return {r.pid for r in records if alive(r)}


def signal_records(records: Iterable[ProcRecord], sig: int) -> None:
    for rec in records:
        if alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, sig)


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> set[int]:
    """Wait until none of `pids` runs (zombies count as gone); return those left."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left:
        reap()
        for pid in list(left):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    left.discard(pid)
            except psutil.NoSuchProcess:
                left.discard(pid)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    # A child of ours that died since the last reap is a zombie until reaped, and a
    # zombie keeps its cgroup busy (rmdir fails with EBUSY).
    reap()
    return left


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tail(path: Path | str, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
