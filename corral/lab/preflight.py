"""What the lab needs from the machine, checked before it changes anything.

`missing()` is pure over a `which` function, so the message is tested without
uninstalling anything; `check()` applies it to the real machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable

from corral.lab.errors import LabError
from corral.lab.spec import AGENT, NETPROXY

# program -> Debian package that installs it.
BASE_TOOLS = {
    "nsenter": "util-linux",
    "podman": "podman",
    "conmon": "conmon",
    "runc": "runc",
}
# What the agent and netproxy run on their host.
COMPONENT_TOOLS = {
    AGENT: {"ip": "iproute2", "iptables": "iptables"},
    NETPROXY: {"iptables": "iptables", "iptables-restore": "iptables",
               "conntrack": "conntrack"},
}
EXTRA_PATHS = ("/usr/sbin", "/sbin", "/usr/libexec/podman", "/usr/bin", "/bin")


def _which(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    for folder in EXTRA_PATHS:
        path = os.path.join(folder, program)
        if os.access(path, os.X_OK):
            return path
    return None


def missing(components: Iterable[str],
            which: Callable[[str], str | None] = _which) -> dict[str, str]:
    """program -> package for every needed program `which` cannot find."""
    needed = dict(BASE_TOOLS)
    for comp in components:
        needed.update(COMPONENT_TOOLS.get(comp, {}))
    return {prog: pkg for prog, pkg in needed.items() if which(prog) is None}


def missing_message(gone: dict[str, str]) -> str:
    packages = sorted(set(gone.values()))
    return (f"corral lab needs {', '.join(sorted(gone))}, not found on this machine: "
            f"apt-get install -y {' '.join(packages)}")


def check(components: Iterable[str], *, euid: int | None = None) -> None:
    """LabError unless running as root with every needed program present."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise LabError("corral lab needs root (it makes network namespaces, cgroups and "
                       "Podman storage): run it as root, e.g. with sudo")
    gone = missing(components)
    if gone:
        raise LabError(missing_message(gone))
