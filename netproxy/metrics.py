"""The proxy's Prometheus metrics, in a registry of its own (tests build several).

Threads model: prometheus_client metrics are thread-safe; the sync thread and
the DNS server threads update them, `serve` answers scrapes on a daemon thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DNS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram(
            "corral_netproxy_sync_duration_seconds",
            "Time of one sync (render, read back for full syncs, restore).",
            ["kind"], buckets=SYNC_BUCKETS, registry=r)
        self.syncs = Counter(
            "corral_netproxy_syncs_total",
            "Syncs by kind (full, partial) and result (applied, unchanged, failed).",
            ["kind", "result"], registry=r)
        self.rules_written = Counter(
            "corral_netproxy_rules_written_total",
            "Rule lines handed to iptables-restore.", ["kind"], registry=r)
        self.last_sync_rules = Gauge(
            "corral_netproxy_last_sync_rules",
            "Rule lines written by the last applied sync.", registry=r)
        self.last_sync_timestamp = Gauge(
            "corral_netproxy_last_sync_timestamp_seconds",
            "Unix time of the last successful sync.", registry=r)
        self.services = Gauge(
            "corral_netproxy_services", "Services with NAT rules.", registry=r)
        self.endpoints = Gauge(
            "corral_netproxy_endpoints", "Ready endpoints across those Services.", registry=r)
        self.dns_requests = Counter(
            "corral_netproxy_dns_requests_total",
            "DNS queries answered, by transport, answer source and rcode.",
            ["transport", "source", "rcode"], registry=r)
        self.dns_duration = Histogram(
            "corral_netproxy_dns_request_duration_seconds",
            "Time to answer one DNS query.", ["source"], buckets=DNS_BUCKETS, registry=r)

    def serve(self, address: str) -> int:
        """Serve /metrics on "host:port" (port 0: any); returns the port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0",
                                            registry=self.registry)
        return int(server.server_port)
