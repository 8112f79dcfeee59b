"""What a lab is made of, as pure data: names, addresses, folders and processes.

`LabSpec` is what the user asked for (`corral lab up --hosts N ...`); `plan(spec, root)`
turns it into a `LabPlan` that names every namespace, link, address, folder,
socket, config file and process the lab will make. Nothing here touches the
machine, so every naming and addressing rule is tested without root.

Naming (LAB is the lab name, hK the host):
    switch namespace     corral-LAB-sw     holding bridge br0 (islands br1, br2, ...), whose
                                           address .1 is every host's default gateway
    host namespace       corral-LAB-hK     interface eth0, address on the lab subnet
    switch port          hK                the switch end of hK's veth
    pod namespaces       corral-LAB-hK-*   made by hK's agent (netns_prefix)
    cgroup               /corral-lab-LAB/hK  every process of the host, containers under
                                           /corral-lab-LAB/hK/pods
    volatile state       /run/corral-lab/LAB/hK  Podman's runroot and tmp_dir (kept short:
                                           Podman refuses a runroot over 50 characters)
Lab names may not contain a dash-separated part of the form hK: otherwise lab "a"
would claim the namespaces of lab "a-h1" as its pod namespaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from corral.lab.errors import LabError

DEFAULT_ROOT = Path("/var/lib/corral-lab")
# Volatile state (Podman's runroot and tmp_dir), as /run is on a real host.
RUN_ROOT = Path("/run/corral-lab")
# Podman refuses a runroot longer than this ("the specified runroot is longer than
# 50 characters": its attach sockets live there).
MAX_RUNROOT = 50
DEFAULT_NAME = "lab"
DEFAULT_SUBNET = "10.250.0.0/24"
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = "30000-32767"

RAFT_PORT = 7000
API_PORT = 6443
# Host hK gets the subnet's address number HOST_OFFSET + K (10.250.0.11 for h1).
HOST_OFFSET = 10
MAX_HOSTS = 64
MAX_NAME = 20
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

CONTROLPLANE = "controlplane"
AGENT = "agent"
NETPROXY = "netproxy"
COMPONENTS = (CONTROLPLANE, AGENT, NETPROXY)
# The processes `up` starts unless told otherwise (`--components`): all of them.
# `--components controlplane` gives a control plane only (the Raft tests use it).
DEFAULT_COMPONENTS: tuple[str, ...] = (CONTROLPLANE, AGENT, NETPROXY)
# Console script per component; the lab runs `SCRIPT --config FILE`.
SCRIPTS = {
    CONTROLPLANE: "corral-controlplane",
    AGENT: "corral-agent",
    NETPROXY: "corral-netproxy",
}

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HOST_PART = re.compile(r"^h[0-9]+$")
_HOST = re.compile(r"^h([1-9][0-9]*)$")


@dataclass(frozen=True)
class LabSpec:
    """What the user asked for."""

    name: str = DEFAULT_NAME
    hosts: int = 3
    control_plane: int = 3
    subnet: str = DEFAULT_SUBNET
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    node_port_range: str = DEFAULT_NODE_PORT_RANGE
    log_level: str = "info"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "hosts": self.hosts,
            "control_plane": self.control_plane,
            "subnet": self.subnet,
            "components": list(self.components),
            "cluster_cidr": self.cluster_cidr,
            "service_cidr": self.service_cidr,
            "node_port_range": self.node_port_range,
            "log_level": self.log_level,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabSpec:
        comps = data.get("components", list(DEFAULT_COMPONENTS))
        assert isinstance(comps, list)
        return cls(
            name=str(data["name"]),
            hosts=int(str(data["hosts"])),
            control_plane=int(str(data["control_plane"])),
            subnet=str(data.get("subnet", DEFAULT_SUBNET)),
            components=tuple(str(c) for c in comps),
            cluster_cidr=str(data.get("cluster_cidr", DEFAULT_CLUSTER_CIDR)),
            service_cidr=str(data.get("service_cidr", DEFAULT_SERVICE_CIDR)),
            node_port_range=str(data.get("node_port_range", DEFAULT_NODE_PORT_RANGE)),
            log_level=str(data.get("log_level", "info")),
        )


def check_name(name: str) -> None:
    """Raise LabError unless `name` can name a lab."""
    if not name:
        raise LabError("lab name: must not be empty")
    if len(name) > MAX_NAME:
        raise LabError(f"lab name {name!r}: at most {MAX_NAME} characters, got {len(name)}")
    if not _NAME.match(name):
        raise LabError(
            f"lab name {name!r}: lower-case letters, digits and '-', starting with a letter "
            "and ending with a letter or digit (e.g. 'lab', 'test-3')"
        )
    for part in name.split("-"):
        if _HOST_PART.match(part):
            raise LabError(
                f"lab name {name!r}: the part {part!r} looks like a host name (hK); "
                "choose another name so the lab's namespaces cannot be confused with "
                "another lab's"
            )


def _network(value: str, what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise LabError(f"{what} {value!r}: not an IPv4 network in CIDR form ({err})") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise LabError(f"{what} {value!r}: only IPv4 is supported")
    return net


def check_spec(spec: LabSpec) -> None:
    """Raise LabError naming the first bad setting of `spec`."""
    check_name(spec.name)
    if not 1 <= spec.hosts <= MAX_HOSTS:
        raise LabError(f"--hosts: must be between 1 and {MAX_HOSTS}, got {spec.hosts}")
    if not 1 <= spec.control_plane <= spec.hosts:
        raise LabError(
            f"--control-plane: must be between 1 and the number of hosts ({spec.hosts}), "
            f"got {spec.control_plane}"
        )
    unknown = [c for c in spec.components if c not in COMPONENTS]
    if unknown:
        raise LabError(
            f"--components: unknown {', '.join(unknown)} (known: {', '.join(COMPONENTS)})"
        )
    if CONTROLPLANE not in spec.components:
        raise LabError("--components: must include controlplane (every lab runs one)")
    if len(set(spec.components)) != len(spec.components):
        raise LabError(f"--components: listed twice in {','.join(spec.components)}")
    subnet = _network(spec.subnet, "--subnet")
    cluster = _network(spec.cluster_cidr, "cluster CIDR")
    service = _network(spec.service_cidr, "service CIDR")
    for other, what in ((cluster, "cluster CIDR"), (service, "service CIDR")):
        if subnet.overlaps(other):
            raise LabError(f"--subnet {subnet}: overlaps the {what} {other}")
    if cluster.overlaps(service):
        raise LabError(f"cluster CIDR {cluster} overlaps the service CIDR {service}")
    last = HOST_OFFSET + spec.hosts
    if last >= subnet.num_addresses - 1:
        raise LabError(
            f"--subnet {subnet}: too small for {spec.hosts} hosts (host hK gets address "
            f"number {HOST_OFFSET}+K; use a /24 or larger)"
        )
    if spec.log_level not in ("debug", "info", "warning", "error"):
        raise LabError(f"log level {spec.log_level!r}: one of debug, info, warning, error")


@dataclass(frozen=True)
class ProcessPlan:
    """One process of a host: `argv` run in the host's namespace and cgroup."""

    component: str
    config: Path
    log: Path

    def argv(self, bindir: Path | None = None) -> list[str]:
        script = SCRIPTS[self.component]
        exe = str(bindir / script) if bindir is not None else script
        return [exe, "--config", str(self.config)]


@dataclass(frozen=True)
class HostPlan:
    name: str
    index: int
    netns: str
    port: str
    ip: str
    prefixlen: int
    dir: Path
    control_plane: bool
    processes: tuple[ProcessPlan, ...]
    cgroup: str
    pod_cgroup: str
    netns_prefix: str
    # The host's NIC address: fixed, so after a power loss its neighbours' ARP
    # caches still point at it, as they would at a rebooted machine's.
    mac: str
    # The host's volatile /run: wiped when the host loses power.
    run: Path

    @property
    def socket(self) -> Path:
        return self.dir / "api.sock"

    @property
    def raft_address(self) -> str:
        return f"{self.ip}:{RAFT_PORT}"

    @property
    def api_address(self) -> str:
        return f"{self.ip}:{API_PORT}"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def podman_runroot(self) -> Path:
        return self.run / "storage"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    def data(self, component: str) -> Path:
        return self.dir / component

    def process(self, component: str) -> ProcessPlan:
        for proc in self.processes:
            if proc.component == component:
                return proc
        raise LabError(
            f"host {self.name} runs no {component} "
            f"(it runs: {', '.join(p.component for p in self.processes)})"
        )


@dataclass(frozen=True)
class LabPlan:
    spec: LabSpec
    dir: Path
    switch_ns: str
    bridge: str
    hosts: tuple[HostPlan, ...]
    cgroup: str
    subnet: str
    prefixlen: int
    run: Path
    # The hosts' default gateway: held by the switch, which forwards nothing.
    gateway: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state_file(self) -> Path:
        return self.dir / "lab.json"

    @property
    def lock_file(self) -> Path:
        return self.dir / ".lock"

    @property
    def password_file(self) -> Path:
        return self.dir / "raft-password"

    @property
    def client_config(self) -> Path:
        return self.dir / "client.yaml"

    @property
    def images(self) -> Path:
        """The lab-wide read-only image store every host's Podman reads."""
        return self.dir / "images"

    @property
    def control_plane_hosts(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.control_plane)

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns, *(h.netns for h in self.hosts)]

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(
            f"lab {self.name} has no host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})"
        )

    def sockets(self) -> list[str]:
        return [f"unix:{h.socket}" for h in self.control_plane_hosts]

    def owns_netns(self, name: str) -> bool:
        """Is the network namespace `name` one of this lab's (pod namespaces included)?"""
        return name == self.switch_ns or owner_host(self.name, name) is not None


def owner_host(lab: str, netns: str) -> str | None:
    """The host ("h2") whose namespace or pod namespace `netns` is in lab `lab`, or None."""
    prefix = f"corral-{lab}-"
    if not netns.startswith(prefix):
        return None
    host, _, _rest = netns[len(prefix):].partition("-")
    return host if _HOST.match(host) else None


def lab_dir(root: Path, name: str) -> Path:
    return root / name


def plan(spec: LabSpec, root: Path, run_root: Path = RUN_ROOT) -> LabPlan:
    """Every name, address and path of the lab `spec` under the state root `root`
    (volatile state under `run_root`)."""
    check_spec(spec)
    subnet = ipaddress.ip_network(spec.subnet)
    base = lab_dir(root, spec.name)
    run = run_root / spec.name
    cgroup = f"/corral-lab-{spec.name}"
    hosts = []
    for k in range(1, spec.hosts + 1):
        name = f"h{k}"
        hdir = base / name
        is_cp = k <= spec.control_plane
        procs = []
        for comp in spec.components:
            if comp == CONTROLPLANE and not is_cp:
                continue
            procs.append(ProcessPlan(comp, hdir / "etc" / f"{comp}.yaml",
                                     hdir / "logs" / f"{comp}.log"))
        host = HostPlan(
            name=name,
            index=k,
            netns=f"corral-{spec.name}-{name}",
            port=name,
            ip=str(subnet.network_address + HOST_OFFSET + k),
            prefixlen=subnet.prefixlen,
            dir=hdir,
            control_plane=is_cp,
            processes=tuple(procs),
            cgroup=f"{cgroup}/{name}",
            pod_cgroup=f"{cgroup}/{name}/pods",
            netns_prefix=f"corral-{spec.name}-{name}-",
            mac=host_mac(spec.name, k),
            run=run / name,
        )
        if len(str(host.socket)) > MAX_SOCKET_PATH:
            raise LabError(
                f"state folder {base}: the API socket path {host.socket} is "
                f"{len(str(host.socket))} bytes, over the {MAX_SOCKET_PATH} a unix socket "
                "allows; use a shorter CORRAL_LAB_ROOT"
            )
        if len(str(host.podman_runroot)) > MAX_RUNROOT:
            raise LabError(
                f"Podman's runroot {host.podman_runroot} would be "
                f"{len(str(host.podman_runroot))} characters, over the {MAX_RUNROOT} Podman "
                "accepts; use a shorter lab name"
            )
        hosts.append(host)
    return LabPlan(
        spec=spec,
        dir=base,
        switch_ns=f"corral-{spec.name}-sw",
        bridge="br0",
        hosts=tuple(hosts),
        cgroup=cgroup,
        subnet=str(subnet),
        prefixlen=subnet.prefixlen,
        run=run,
        gateway=str(subnet.network_address + 1),
    )


def host_mac(lab: str, index: int) -> str:
    """A locally administered unicast MAC, stable for (lab, host)."""
    digest = hashlib.sha256(f"{lab}/{index}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, digest[0], digest[1], digest[2], digest[3],
                                          index & 0xFF))


