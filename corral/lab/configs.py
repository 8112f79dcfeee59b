"""The files the lab writes for each host, rendered as pure functions of the plan.

These are the same files the Ansible roles write on VMs: the control plane's YAML
(keys of docs/api.md), the agent's and the netproxy's YAML (docs/agent.md,
docs/netproxy.md), Podman's containers.conf and storage.conf, and the client
config (docs/cli.md: `servers: [...]`). Rendering returns text; `lab.py` writes it.
"""

from __future__ import annotations

from typing import Any

import yaml

from corral.lab.spec import AGENT, CONTROLPLANE, NETPROXY, HostPlan, LabPlan

CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Marks a client config as written by a lab, so `down` removes only its own.
CLIENT_MARK = "# written by corral lab "


def _dump(data: dict[str, Any], header: str) -> str:
    return f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def controlplane_config(lab: LabPlan, host: HostPlan) -> dict[str, Any]:
    return {
        "name": host.name,
        "raft_address": host.raft_address,
        "peers": {h.name: h.raft_address for h in lab.control_plane_hosts},
        "listen": host.api_address,
        "socket": str(host.socket),
        "data_dir": str(host.data(CONTROLPLANE)),
        "raft_password_file": str(lab.password_file),
        "cluster_cidr": lab.spec.cluster_cidr,
        "service_cidr": lab.spec.service_cidr,
        "node_port_range": lab.spec.node_port_range,
        "log_level": lab.spec.log_level,
        # PersistentVolumeClaim folders ("NODE:ROOT/NS/CLAIM-UID") inside the lab's
        # own folder: every lab host shares this machine's file system.
        "controllers": {"volume_root": str(lab.dir / "volumes")},
    }


def _servers(lab: LabPlan) -> list[str]:
    # Agents and proxies reach the replicas over the lab network, as they would
    # on VMs; only clients outside the lab use the unix sockets.
    return [h.api_address for h in lab.control_plane_hosts]


def agent_config(lab: LabPlan, host: HostPlan) -> dict[str, Any]:
    return {
        "node_name": host.name,
        "node_ip": host.ip,
        "servers": _servers(lab),
        "state_dir": str(host.data(AGENT)),
        "cluster_cidr": lab.spec.cluster_cidr,
        "service_cidr": lab.spec.service_cidr,
        "cluster_dns": CLUSTER_DNS,
        "cluster_domain": CLUSTER_DOMAIN,
        "netns_prefix": host.netns_prefix,
        "labels": {"corral.dev/lab": lab.name},
        "log_level": lab.spec.log_level,
        "podman": {
            "containers_conf": str(host.etc / "containers.conf"),
            "storage_root": str(host.storage),
            "run_root": str(host.podman_runroot),
            "additional_image_stores": [str(lab.images)],
            "cgroup_parent": host.pod_cgroup,
        },
    }


def netproxy_config(lab: LabPlan, host: HostPlan) -> dict[str, Any]:
    return {
        "node_name": host.name,
        "node_ip": host.ip,
        "servers": _servers(lab),
        "state_dir": str(host.data(NETPROXY)),
        "cluster_cidr": lab.spec.cluster_cidr,
        "service_cidr": lab.spec.service_cidr,
        "cluster_dns": CLUSTER_DNS,
        "cluster_domain": CLUSTER_DOMAIN,
        "log_level": lab.spec.log_level,
    }


RENDERERS = {
    CONTROLPLANE: controlplane_config,
    AGENT: agent_config,
    NETPROXY: netproxy_config,
}


def render_component(lab: LabPlan, host: HostPlan, component: str) -> str:
    data = RENDERERS[component](lab, host)
    return _dump(data, f"corral-{component} on lab {lab.name} host {host.name} "
                       "(written by corral lab)")


def containers_conf(host: HostPlan) -> str:
    """Podman's engine settings for this machine (ENVIRONMENT.md), plus a per-host
    tmp_dir: Podman keeps its "alive" marker and exit files there, and finding it
    gone is how Podman notices a reboot (the lab wipes it on power loss)."""
    return (
        f"# Podman settings of lab host {host.name} (written by corral lab)\n"
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        f'tmp_dir = "{host.run / "libpod"}"\n'
    )


def storage_conf(lab: LabPlan, host: HostPlan) -> str:
    return (
        f"# Podman storage of lab host {host.name} (written by corral lab)\n"
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{host.storage}"\n'
        f'runroot = "{host.podman_runroot}"\n'
        "\n"
        "[storage.options]\n"
        f'additionalimagestores = ["{lab.images}"]\n'
    )


def client_config(lab: LabPlan) -> str:
    return f"{CLIENT_MARK}{lab.name} ({lab.dir})\n" + yaml.safe_dump(
        {"servers": lab.sockets()}, sort_keys=False, default_flow_style=False)


def written_by(text: str) -> str | None:
    """The lab directory a client config was written for, or None if not by a lab."""
    first = text.splitlines()[0] if text else ""
    if not first.startswith(CLIENT_MARK):
        return None
    rest = first[len(CLIENT_MARK):]
    if "(" not in rest or not rest.endswith(")"):
        return None
    return rest[rest.index("(") + 1:-1]

