"""One host's netproxy: informers, the sync loop, the DNS server and metrics, wired.

Threads model (threads throughout, no asyncio):
- one informer thread per kind (Services, Endpoints, and Pods when the DNS
  answers pod names in verified mode), each feeding the change tracker and
  the DNS index from its handlers;
- the sync thread (proxier.Proxier.run);
- the DNS server's UDP receiver, worker pool, TCP acceptor and connections;
- prometheus_client's HTTP server thread.
`stop()` ends them all and leaves the rules in the kernel: a restarted proxy
finds them in place and writes nothing, so traffic never sees a window without
rules (`cleanup()` is the explicit way to remove them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.client import Client
from corral.informer import Informer
from netproxy.config import ProxyConfig
from netproxy.dnsindex import DnsIndex
from netproxy.dnsresolver import ClusterResolver
from netproxy.dnsserver import DnsServer, UpstreamForwarder, resolv_conf_nameservers
from netproxy.iptables import Iptables
from netproxy.metrics import Metrics
from netproxy.payload import cleanup_payload
from netproxy.proxier import Proxier
from netproxy.rules import NodeFacts
from netproxy.tracker import ChangeTracker

log = logging.getLogger(__name__)

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def node_facts(cfg: ProxyConfig) -> NodeFacts:
    dns_target = f"{cfg.dns_listen}:{cfg.dns.port}" if cfg.dns.enabled else ""
    return NodeFacts(cluster_cidr=cfg.cluster_cidr, masquerade_bit=cfg.masquerade_bit,
                     dns_ip=cfg.cluster_dns if cfg.dns.enabled else "", dns_target=dns_target)


def ensure_bridge_nf_call_iptables(path: Path = BRIDGE_NF) -> str:
    """Bridged pod-to-pod frames must pass iptables, or the reply of a pod to a
    client pod on the same bridge skips conntrack and never gets its source
    turned back into the VIP. Returns a sentence for the log."""
    try:
        if path.read_text().strip() == "1":
            return "net.bridge.bridge-nf-call-iptables is 1"
        path.write_text("1")
        return "set net.bridge.bridge-nf-call-iptables to 1"
    except OSError as err:
        return (f"cannot read or set net.bridge.bridge-nf-call-iptables ({err.strerror}): "
                "a pod calling a Service whose endpoint sits on the same bridge may fail "
                "(load br_netfilter)")


class NetProxy:
    def __init__(self, cfg: ProxyConfig, *, client: Client | None = None,
                 iptables: Iptables | None = None, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.client = client or Client(list(cfg.servers), retry_for=10.0)
        self.iptables = iptables or Iptables(
            restore=cfg.iptables.restore, save=cfg.iptables.save,
            conntrack=cfg.iptables.conntrack, timeout=cfg.iptables.timeout)
        self.metrics = metrics or Metrics()
        self.tracker = ChangeTracker()
        self.index = DnsIndex()
        self.node = node_facts(cfg)
        self.proxier = Proxier(
            self.tracker, self.iptables, self.node, metrics=self.metrics,
            min_sync_period=cfg.min_sync_period, full_sync_period=cfg.full_sync_period,
            failed_payload_path=Path(cfg.state_dir) / "failed-payload.txt")
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self.informers: list[Informer] = [
            self._informer("Service", self.tracker.service_updated,
                           self.tracker.service_deleted, self.index.service_updated,
                           self.index.service_deleted),
            self._informer("Endpoints", self.tracker.endpoints_updated,
                           self.tracker.endpoints_deleted, self.index.endpoints_updated,
                           self.index.endpoints_deleted),
        ]
        if cfg.dns.enabled and cfg.dns.pods == "verified":
            self.informers.append(self._informer("Pod", None, None, self.index.pod_updated,
                                                 self.index.pod_deleted))
        self.dns: DnsServer | None = None
        self.resolver: ClusterResolver | None = None
        self.metrics_port = 0

    def _informer(self, kind: str, upd: Callable[[Any], None] | None,
                  dele: Callable[[Any], None] | None, dns_upd: Callable[[Any], None],
                  dns_del: Callable[[Any], None]) -> Informer:
        def updated(obj: Any) -> None:
            # The DNS index first: a name answers before its rules exist, never after.
            dns_upd(obj)
            if upd is not None:
                upd(obj)

        def deleted(obj: Any) -> None:
            dns_del(obj)
            if dele is not None:
                dele(obj)

        return Informer(self.client, kind, on_add=updated,
                        on_update=lambda _old, new: updated(new), on_delete=deleted,
                        name=f"netproxy-{kind.lower()}")

    def rules_ready(self) -> bool:
        """Services and Endpoints both listed: only then may rules be written."""
        return all(i.synced for i in self.informers[:2])

    def dns_ready(self) -> bool:
        return all(i.synced for i in self.informers)

    # ---- lifecycle ----------------------------------------------------------------
    def start(self) -> NetProxy:
        cfg = self.cfg
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
        if cfg.bridge_nf_call_iptables:
            log.info("%s", ensure_bridge_nf_call_iptables())
        if cfg.metrics_address:
            self.metrics_port = self.metrics.serve(cfg.metrics_address)
            log.info("metrics on %s", cfg.metrics_address)
        if cfg.dns.enabled:
            upstream = list(cfg.dns.upstream) or resolv_conf_nameservers(
                cfg.dns.resolv_conf, exclude=(cfg.cluster_dns, cfg.dns_listen))
            self.resolver = ClusterResolver(
                self.index, domain=cfg.cluster_domain, ttl=cfg.dns.ttl, pods=cfg.dns.pods,
                cluster_cidr=cfg.cluster_cidr, service_cidr=cfg.service_cidr,
                upstream=UpstreamForwarder(upstream, cfg.dns.forward_timeout) if upstream
                else None, ready=self.dns_ready, metrics=self.metrics)
            self.dns = DnsServer(self.resolver.handle, cfg.dns_listen, cfg.dns.port).start()
            log.info("cluster DNS for %s on %s:%d (UDP and TCP), %s reached there; upstream %s",
                     cfg.cluster_domain, cfg.dns_listen, self.dns.port, cfg.cluster_dns,
                     ", ".join(upstream) or "none")
        for inf in self.informers:
            inf.start()
        self._sync_thread = threading.Thread(
            target=self.proxier.run, args=(self._stop.is_set, self.rules_ready),
            name="netproxy-sync", daemon=True)
        self._sync_thread.start()
        return self

    def request_stop(self) -> None:
        """Make `wait()` return (safe from a signal handler)."""
        self._stop.set()
        self.tracker.kick()

    def stop(self) -> None:
        self.request_stop()
        for inf in self.informers:
            inf.stop()
        if self.dns is not None:
            self.dns.stop()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=self.cfg.iptables.timeout + 5)
        self.client.close()

    def wait(self) -> None:
        self._stop.wait()


def cleanup(iptables: Iptables) -> int:
    """Remove every chain and jump of ours; returns the number of chains removed."""
    payload = cleanup_payload(iptables.save())
    if not payload.empty:
        iptables.restore(payload.text)
    return payload.deleted
