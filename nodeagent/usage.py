"""CPU and memory of pods' containers, read from their cgroups; node totals from psutil.

Podman's Docker-compatible stats inflate CPU for containers in pods (DESIGN,
lessons), so pod usage comes from the cgroup files themselves: the container's
cgroup is found from /proc/<pid>/cgroup of its main process (any cgroup manager,
v1 or v2), CPU from cpuacct.usage (v1) or cpu.stat usage_usec (v2), memory as
the working set (usage minus inactive file cache), as kubectl top shows it.
CPU is a rate: the sampler keeps the previous reading per container, and a
reading is compared with the last one at least `min_interval` older.

Threads model: `sample()` from a periodic thread and from Top calls; one lock
guards the previous readings. `parse_*` helpers are pure.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Reading:
    at: float  # monotonic seconds
    cpu_ns: int
    memory_bytes: int


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> controller -> path ("" for the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def parse_memory_stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def working_set(usage: int, stat: dict[str, int]) -> int:
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return max(0, usage - inactive)


def millicores(prev: Reading, cur: Reading) -> int:
    dt = cur.at - prev.at
    if dt <= 0 or cur.cpu_ns < prev.cpu_ns:
        return 0
    return round((cur.cpu_ns - prev.cpu_ns) / dt / 1e6)


def _read(path: Path) -> str:
    return path.read_text()


def read_container(pid: int, root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """(cpu nanoseconds used, working-set bytes) of the cgroup of `pid`; None when gone."""
    try:
        groups = parse_proc_cgroup(_read(Path(f"/proc/{pid}/cgroup")))
    except OSError:
        return None
    try:
        if "cpuacct" in groups and (root / "cpuacct").is_dir():
            cpu_ns = int(_read(root / "cpuacct" / groups["cpuacct"].lstrip("/") / "cpuacct.usage"))
            mem_dir = root / "memory" / groups.get("memory", "/").lstrip("/")
            usage = int(_read(mem_dir / "memory.usage_in_bytes"))
            stat = parse_memory_stat(_read(mem_dir / "memory.stat"))
            return cpu_ns, working_set(usage, stat)
        if "" in groups:
            d = root / groups[""].lstrip("/")
            cpu = parse_memory_stat(_read(d / "cpu.stat"))
            usage = int(_read(d / "memory.current"))
            stat = parse_memory_stat(_read(d / "memory.stat"))
            return cpu.get("usage_usec", 0) * 1000, working_set(usage, stat)
    except (OSError, ValueError):
        return None
    return None


class Sampler:
    def __init__(self, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        # container id -> readings, oldest first (at most 3)
        self._readings: dict[str, list[Reading]] = {}

    def sample(self, containers: dict[str, int]) -> dict[str, tuple[int, int]]:
        """container id -> pid in; container id -> (millicores, bytes) out, for
        those with a reading at least `min_interval` old to compare against
        (others report 0 millicores until the next sample)."""
        now = time.monotonic()
        out: dict[str, tuple[int, int]] = {}
        fresh: dict[str, Reading] = {}
        for cid, pid in containers.items():
            got = read_container(pid)
            if got is not None:
                fresh[cid] = Reading(now, got[0], got[1])
        with self._lock:
            for cid, reading in fresh.items():
                history = self._readings.setdefault(cid, [])
                base = next((r for r in reversed(history)
                             if reading.at - r.at >= self.min_interval), None)
                out[cid] = (millicores(base, reading) if base else 0, reading.memory_bytes)
                # Frequent callers must not push the baseline out: keep readings
                # at least min_interval apart.
                if not history or reading.at - history[-1].at >= self.min_interval:
                    history.append(reading)
                    del history[:-3]
            for cid in [c for c in self._readings if c not in containers]:
                del self._readings[cid]
        return out
