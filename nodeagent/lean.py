"""Use less memory: what the agent process does before it imports its libraries.

Measured on this machine (RSS of `import nodeagent.agent`, BENCHMARKS.md section 3):

- pyroute2's package `__init__` imports every protocol module it has (NDB, IPDB,
  IPSet, WireGuard, nl80211, ...; about 380 modules) although the agent uses only
  `pyroute2.iproute.linux.IPRoute` and `pyroute2.netlink.exceptions`. Python runs a
  package's `__init__` before any of its submodules, so `skip_package_init`
  registers the package module made from its spec *without executing it*; the
  submodules then import as usual (they import each other by full name, never
  through names the package `__init__` defines). About 5 MiB less.
- pyroute2's iprsocket imports `unittest.mock` (for its mock mode); the package
  `unittest` would run its `__init__`, which imports the test framework (case,
  loader, runner, main, ...), although mock needs only `unittest.util`. The same
  `skip_package_init` keeps that out: about 0.9 MiB less at import, 0.5 MiB in
  the running agent. No code in the agent uses the test framework.
- podman-py's images manager imports `rich.progress` if it can, for the progress
  bar of `images.pull(progress_bar=True)`, and otherwise carries on without it.
  The agent pulls through the libpod endpoint itself (runtime.py) and never asks
  for a progress bar; rich is installed for the `corral` CLI. `block_optional`
  makes that import fail as if rich were absent: about 2 MiB less.
- requests imports charset_normalizer (with its codec tables) to guess the text
  encoding of responses that name none, and falls back to UTF-8 without it
  (`Response.apparent_encoding`). Podman's API speaks JSON in UTF-8 and the agent
  reads it with `.json()`/`.content`: blocked as well, about 3 MiB less. requests
  warns once at import that no detector is installed; that one warning is
  filtered out.
- glibc gives each thread that allocates an arena of its own, up to 8 per core;
  the agent runs ~60 threads (one per pod) that are idle nearly always, and each
  arena keeps its freed memory. `limit_malloc_arenas` caps them at 2 (what
  MALLOC_ARENA_MAX=2 does, set with mallopt so no wrapper script is needed):
  about 1.2 MiB less with 20 pods. Python's own small-object allocator is not
  affected; contention for the two arenas is nil on an idle agent.
- hashlib uses OpenSSL's digests through `_hashlib` when it can and otherwise its
  built-in ones (the same digests; the agent hashes a few short strings: veth
  names, record checksums). `_hashlib` initialises OpenSSL's digest providers,
  touching about 0.55 MiB more of libcrypto's pages (libcrypto stays mapped: the
  `ssl` module, which pyroute2 imports unconditionally, needs it). Blocked.
- glibc keeps freed heap memory for reuse and gives back only the top of the
  main heap on its own; a burst of pod starts leaves free pages in the middle.
  `HeapTrimmer` (the main loop ticks it every second) calls `malloc_trim(0)` at
  most every 30 s and only when the process used under 5 % of a core since the
  last look: about 0.6-0.9 MiB back, for well under a millisecond of CPU.
- Tried and dropped: loading `unittest.mock` lazily (pyroute2's iprsocket imports
  it for its netlink mock mode) saves nothing, because that module calls
  `mock.Mock()` in a class body at import time (hence the skipped `unittest`
  package `__init__` instead).

Threads model: only `main` calls `apply()`, first thing (before anything imports
pyroute2 and before any thread starts). A process that imported these libraries
already (a test) keeps them whole; nodeagent imports only pyroute2's submodules,
so it works either way. `HeapTrimmer.tick` is called by the main thread only
(malloc_trim itself is thread-safe: it takes each arena's lock).
tests/agent/test_unit_parts.py checks, in a fresh interpreter, that none of the
modules the agent loads needs a name from the skipped `__init__` of pyroute2 or
unittest, that the agent imports without rich, charset_normalizer and _hashlib,
and what `HeapTrimmer` decides.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable

SKIP_INIT = ("pyroute2", "unittest")
# Optional imports of libraries that carry on without them (see above).
BLOCK_OPTIONAL = ("rich.progress", "charset_normalizer", "_hashlib")
_NO_DETECTOR = "Unable to find acceptable character detection dependency"
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc malloc.h


def skip_package_init(name: str) -> bool:
    """Register package `name` without running its __init__; False if already imported
    (or not installed)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return False
    sys.modules[name] = importlib.util.module_from_spec(spec)
    return True


def block_optional(name: str) -> bool:
    """Make `import name` raise ImportError (None in sys.modules means "not found");
    False if it is imported already."""
    if name in sys.modules:
        return False
    sys.modules[name] = None  # type: ignore[assignment]
    return True


def limit_malloc_arenas(count: int) -> bool:
    """mallopt(M_ARENA_MAX, count); False where there is no glibc."""
    try:
        # dlopen(NULL): the process's own symbols, libc's among them.
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False


def trim_heap() -> bool:
    """malloc_trim(0): hand the free pages of every malloc arena back to the kernel;
    False where there is no glibc (or nothing was released)."""
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


class HeapTrimmer:
    """Trims the heap at most every `period` seconds, and only when the process was
    idle since the last look (used under `busy` of one core): the pages a burst
    freed go back once it is over, and a busy agent does not refault them."""

    def __init__(self, period: float = 30.0, busy: float = 0.05, *,
                 trim: Callable[[], bool] = trim_heap,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = cpu_seconds) -> None:
        if period <= 0 or not 0 < busy <= 1:
            raise ValueError(f"HeapTrimmer: period must be > 0 and busy in (0, 1], "
                             f"got period={period}, busy={busy}")
        self.period = period
        self.busy = busy
        self._trim = trim
        self._clock = clock
        self._cpu = cpu
        self._since = clock()
        self._cpu_since = cpu()
        self.trims = 0

    def tick(self) -> bool:
        """Call often (the main loop does, every second); True if it trimmed now."""
        now = self._clock()
        if now - self._since < self.period:
            return False
        used = self._cpu()
        idle = used - self._cpu_since < self.busy * (now - self._since)
        self._since, self._cpu_since = now, used
        if idle:
            self._trim()
            self.trims += 1
        return idle


def apply() -> list[str]:
    """Returns what was changed (for the debug log)."""
    done = [f"{n} imported without its __init__" for n in SKIP_INIT if skip_package_init(n)]
    done += [f"optional {n} not imported" for n in BLOCK_OPTIONAL if block_optional(n)]
    if sys.modules.get("charset_normalizer", False) is None:
        warnings.filterwarnings("ignore", message=_NO_DETECTOR)
    if limit_malloc_arenas(MALLOC_ARENAS):
        done.append(f"at most {MALLOC_ARENAS} malloc arenas")
    return done
