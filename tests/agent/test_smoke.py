"""The agent registers its node and runs a bound pod on real Podman."""

from __future__ import annotations

import pytest

from tests.agent import podutil as pu
from tests.agent.agentfixture import AgentHost

pytestmark = pytest.mark.integration


def test_node_registered_with_cidr_lease_and_usage(host: AgentHost) -> None:
    node = host.client.get("Node", host.node_name)
    assert node.spec.pod_cidr.startswith("10.244.")
    assert node.metadata.labels["kubernetes.io/hostname"] == host.node_name
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    addrs = {a.type: a.address for a in node.status.addresses}
    assert addrs["InternalIP"] == host.node_ip
    assert node.status.daemon_endpoints.kubelet_endpoint.port == 10250
    assert int(node.status.capacity["cpu"]) >= 1
    assert node.status.node_info.container_runtime_version.startswith("podman://4.")
    assert node.status.usage.memory_available_bytes > 0
    conds = {c.type: c.status for c in node.status.conditions}
    assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
                     "PIDPressure": "False", "RuntimeUnhealthy": "False"}
    lease = host.client.get("Lease", host.node_name, "corral-system")
    assert lease.spec.holder_identity == host.node_name
    first = lease.spec.renew_time.ToNanoseconds()
    pu.wait_for("lease renewed", lambda: host.client.get(
        "Lease", host.node_name, "corral-system").spec.renew_time.ToNanoseconds() > first,
        timeout=10)


def test_pod_runs_with_ip_and_status(host: AgentHost, ns: str) -> None:
    p = pu.pod("web", ns, host.node_name, pu.container("main", "httpd", "-f", "-p", "8080"))
    host.client.create(p)
    got = pu.wait_pod(host.client, ns, "web", pu.ready, "Ready")
    assert got.status.phase == "Running"
    assert got.status.pod_ip.startswith(host.client.get("Node", host.node_name)
                                        .spec.pod_cidr.rsplit(".", 2)[0])
    assert got.status.host_ip == host.node_ip
    st = pu.cstatus(got, "main")
    assert st.state.HasField("running") and st.ready and st.restart_count == 0
    assert st.container_id.startswith("podman://")
    # The pod's address answers from the host namespace (httpd inside the pod netns).
    status, body = host.http_get(f"http://{got.status.pod_ip}:8080/")
    assert status == 404, body  # busybox httpd answers; it has no index page
