"""/etc/resolv.conf and /etc/hosts of a pod, rendered from its spec. Pure.

ClusterFirst (the default) points at the cluster DNS with Kubernetes' search
path and ndots:5; Default copies the host's resolver (the file the agent sees,
which under `ip netns exec` is the host namespace's /etc/netns/<ns>/resolv.conf).
"""

from __future__ import annotations

from corral.v1 import core_pb2

MAX_SEARCH = 6


def resolv_conf(pod: core_pb2.Pod, *, cluster_dns: str, cluster_domain: str,
                host_resolv: str = "") -> str:
    policy = pod.spec.dns_policy or "ClusterFirst"
    if policy == "Default":
        return host_resolv if host_resolv.endswith("\n") or not host_resolv \
            else host_resolv + "\n"
    ns = pod.metadata.namespace or "default"
    search = [f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
    # Host search domains follow the cluster ones, as kubelet appends them.
    for line in host_resolv.splitlines():
        parts = line.split()
        if parts and parts[0] in ("search", "domain"):
            search.extend(d for d in parts[1:] if d not in search)
    return (f"nameserver {cluster_dns}\n"
            f"search {' '.join(search[:MAX_SEARCH])}\n"
            "options ndots:5\n")


def pod_hostname(pod: core_pb2.Pod) -> str:
    # Kubernetes truncates to 63 characters (a DNS label).
    return (pod.spec.hostname or pod.metadata.name)[:63].rstrip("-.")


def pod_fqdn(pod: core_pb2.Pod, cluster_domain: str) -> str:
    """hostname.subdomain.ns.svc.domain when the pod names a subdomain, else ""."""
    if not pod.spec.subdomain:
        return ""
    ns = pod.metadata.namespace or "default"
    return f"{pod_hostname(pod)}.{pod.spec.subdomain}.{ns}.svc.{cluster_domain}"


def hosts(pod: core_pb2.Pod, pod_ip: str, *, cluster_domain: str) -> str:
    lines = [
        "# Kubernetes-managed hosts file (written by corral-agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        fqdn = pod_fqdn(pod, cluster_domain)
        name = pod_hostname(pod)
        lines.append(f"{pod_ip}\t{fqdn}\t{name}" if fqdn else f"{pod_ip}\t{name}")
    return "\n".join(lines) + "\n"
