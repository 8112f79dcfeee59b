"""`corral-netproxy`: the per-host Service proxy and cluster DNS.

    corral-netproxy --config /etc/corral/netproxy.yaml
    corral-netproxy --node-name h1 --node-ip 10.250.0.11 --servers 10.250.0.11:6443
    corral-netproxy --config FILE --cleanup      # remove every rule of ours and exit

Threads model: the main thread parses the configuration, starts `NetProxy`
(proxy.py, which owns the worker threads) and waits for SIGTERM/SIGINT; then
it stops the threads and exits, leaving the rules in place for the next start.
A bad configuration is one line naming the key and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from netproxy.config import ConfigError, load
from netproxy.iptables import Iptables, IptablesError
from netproxy.proxy import NetProxy, cleanup

log = logging.getLogger("netproxy")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral-netproxy",
        description="Corral's per-host Service proxy (iptables NAT) and cluster DNS.")
    p.add_argument("--config", help="YAML configuration file (keys: docs/netproxy.md)")
    p.add_argument("--node-name", help="this host's Node name")
    p.add_argument("--node-ip", help="this host's address (node ports, DNS)")
    p.add_argument("--servers", help="control plane endpoints, comma separated")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--metrics-address", help='HOST:PORT for /metrics ("" disables)')
    p.add_argument("--cleanup", action="store_true",
                   help="remove every chain and jump this proxy writes, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        "node_name": args.node_name, "node_ip": args.node_ip, "servers": args.servers,
        "log_level": args.log_level, "metrics_address": args.metrics_address,
    }
    try:
        cfg = load(args.config, overrides)
    except ConfigError as err:
        print(f"corral-netproxy: bad configuration: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if args.cleanup:
        ipt = Iptables(restore=cfg.iptables.restore, save=cfg.iptables.save,
                       timeout=cfg.iptables.timeout)
        try:
            removed = cleanup(ipt)
        except IptablesError as err:
            log.error("cleanup failed: %s", err)
            return 1
        log.info("cleanup: removed %d chains and their jumps", removed)
        return 0

    proxy = NetProxy(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping (rules stay in place)", signal.Signals(signum).name)
        proxy.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        proxy.start()
    except OSError as err:
        log.error("cannot start: %s (DNS on %s:%d, metrics on %s: is the address in use "
                  "or not on this host?)", err, cfg.dns_listen, cfg.dns.port,
                  cfg.metrics_address or "-")
        proxy.stop()
        return 1
    log.info("corral-netproxy on %s (%s): servers %s", cfg.node_name, cfg.node_ip,
             ", ".join(cfg.servers))
    proxy.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
