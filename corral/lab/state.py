"""lab.json: what a lab has made, so any later command (or `down` after a crash) finds it.

The record is written before each thing is made (intent first), so a crash between
the two leaves a record naming something that may not exist: every removal in the
lab is idempotent. Processes are recorded with their start time (psutil's
create_time): a PID whose start time differs is a recycled PID and is never killed.

Writes are atomic (temp file, fsync, rename, fsync of the folder). `locked(path)`
serialises commands on one lab across processes with flock(2).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corral.lab.errors import LabError
from corral.lab.spec import LabSpec

VERSION = 1


@dataclass
class ProcRecord:
    component: str
    pid: int
    start_time: float
    argv: list[str]
    log: str


@dataclass
class HostState:
    # "on" (processes started), "off" (killed / never started).
    power: str = "off"
    # The switch bridge this host's port is on: br0, or an island when partitioned.
    bridge: str = "br0"
    processes: dict[str, ProcRecord] = field(default_factory=dict)


@dataclass
class LabState:
    spec: LabSpec
    # "creating" until `up` finished, "up", then "removing" during `down`.
    phase: str = "creating"
    created: float = field(default_factory=time.time)
    hosts: dict[str, HostState] = field(default_factory=dict)
    # Island bridges made by `partition`, in the switch namespace.
    islands: list[str] = field(default_factory=list)
    # Everything made, by kind, for the record and for `down`.
    made: dict[str, list[str]] = field(default_factory=dict)
    # The default client config `up` wrote (removed by `down` if still ours).
    default_client_config: str = ""
    # component -> the program it runs (argv before `--config FILE`).
    commands: dict[str, list[str]] = field(default_factory=dict)

    def host(self, name: str) -> HostState:
        return self.hosts.setdefault(name, HostState())

    def note(self, kind: str, what: str) -> None:
        items = self.made.setdefault(kind, [])
        if what not in items:
            items.append(what)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "spec": self.spec.to_dict(),
            "phase": self.phase,
            "created": self.created,
            "hosts": {n: asdict(h) for n, h in self.hosts.items()},
            "islands": self.islands,
            "made": self.made,
            "default_client_config": self.default_client_config,
            "commands": self.commands,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != VERSION:
            raise LabError(f"lab.json version {data.get('version')!r}: this corral reads "
                           f"version {VERSION}")
        hosts = {}
        for name, h in data.get("hosts", {}).items():
            procs = {c: ProcRecord(**p) for c, p in h.get("processes", {}).items()}
            hosts[name] = HostState(power=h.get("power", "off"), bridge=h.get("bridge", "br0"),
                                    processes=procs)
        return cls(
            spec=LabSpec.from_dict(data["spec"]),
            phase=data.get("phase", "creating"),
            created=float(data.get("created", 0.0)),
            hosts=hosts,
            islands=list(data.get("islands", [])),
            made={k: list(v) for k, v in data.get("made", {}).items()},
            default_client_config=data.get("default_client_config", ""),
            commands={k: list(v) for k, v in data.get("commands", {}).items()},
        )


def save(path: Path, state: LabState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load(path: Path) -> LabState:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabError(f"no lab record at {path}") from None
    try:
        data = json.loads(text)
        return LabState.from_dict(data)
    except (ValueError, KeyError, TypeError) as err:
        raise LabError(f"{path}: unreadable lab record ({err}); "
                       "`corral lab down` still removes what the lab's names point at") from None


@contextlib.contextmanager
def locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(f"{path}: another corral lab command holds this lab "
                                   f"for more than {timeout:.0f} s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
