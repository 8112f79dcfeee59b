"""The lab: a multi-host Corral cluster on one machine, each host a network namespace.

    spec.py       what a lab is made of (names, addresses, folders), pure
    configs.py    the files written per host (control plane, agent, netproxy,
                  Podman, client), pure
    state.py      lab.json: what was made, PIDs with start times; the lab lock
    net.py        namespaces, the switch bridge, host links (pyroute2)
    cgroups.py    the per-host cgroup: freeze and kill everything of a host
    procs.py      starting processes inside a host, finding and killing them
    mounts.py     mount points under a folder, unmounting them
    image.py      localhost/busybox from busybox-static, the lab image store
    preflight.py  root and the system tools the lab needs
    health.py     is there a Raft leader, are the nodes Ready (decisions pure)
    power.py      a host's power: on (wire, start) and off (power loss)
    lab.py        the Lab handle (up, status, kill, start, partition, heal, exec,
                  logs) and down()

docs/lab.md is the user's and operator's guide.
"""

from corral.lab.errors import LabError
from corral.lab.lab import Lab, down, leftovers
from corral.lab.spec import LabSpec

__all__ = ["Lab", "LabError", "LabSpec", "down", "leftovers"]
