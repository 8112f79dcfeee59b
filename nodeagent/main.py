"""corral-agent: the node agent process (Corral's kubelet).

    corral-agent --config /etc/corral/agent.yaml [--node-name N] [--node-ip IP]
                 [--server HOST:PORT ...] [--state-dir DIR] [--agent-port P]
                 [--log-level L]

Flags override the file's keys. A bad configuration prints one line naming the
key and exits 2; a failure to start (Podman, the network) exits 1. SIGTERM or
SIGINT stops the agent and leaves the pods' containers running: the next agent
adopts them. Threads model: see agent.py; the main thread only waits for a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from nodeagent.config import ConfigError, load

log = logging.getLogger("nodeagent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="corral-agent",
                                description="Corral's node agent: runs the pods bound to "
                                            "this node on Podman.")
    p.add_argument("--config", help="YAML configuration file (docs/agent.md)")
    p.add_argument("--node-name", help="this node's name (default: the hostname)")
    p.add_argument("--node-ip", help="this node's InternalIP")
    p.add_argument("--server", action="append",
                   help="a control plane endpoint, HOST:PORT or unix:/path (repeatable)")
    p.add_argument("--state-dir", help="the agent's state folder")
    p.add_argument("--agent-port", type=int, help="the NodeAgent gRPC port (default 10250)")
    p.add_argument("--log-level", help="debug, info, warning or error")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"node_name": args.node_name, "node_ip": args.node_ip, "servers": args.server,
            "state_dir": args.state_dir, "agent_port": args.agent_port,
            "log_level": args.log_level}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load(args.config, overrides(args))
    except ConfigError as err:
        print(f"corral-agent: bad configuration: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from nodeagent import lean

    # Before pyroute2 is imported and threads start (lean.py). CORRAL_AGENT_LEAN=0
    # leaves it out, to measure what it saves (bench/agent_bench.py).
    lean_on = os.environ.get("CORRAL_AGENT_LEAN", "1") != "0"
    leaner = lean.apply() if lean_on else []
    from nodeagent.agent import Agent  # heavy imports after the config is known good

    # After the import: pyroute2 resets its logger's level when it is imported.
    for noisy in ("urllib3", "podman", "pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.debug("memory: %s", ", ".join(leaner) or "nothing changed")

    done = threading.Event()
    starting = True
    main_pid = os.getpid()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            # A forked helper (pyroute2 creates sockets in other namespaces from a
            # fork) inherits this handler; it must simply end.
            os._exit(0)
        log.info("received %s", signal.Signals(signum).name)
        done.set()
        if starting:
            # start() may be waiting for the control plane: leave it.
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(cfg)
    try:
        agent.start()
    except SystemExit:
        agent.stop()
        return 0
    except Exception as err:
        log.error("cannot start: %s", err)
        agent.stop()
        return 1
    starting = False
    # Gives back what bursts of pod starts freed once they are over (lean.py).
    trimmer = lean.HeapTrimmer() if lean_on else None
    try:
        while not done.wait(1.0):
            if trimmer is not None:
                trimmer.tick()
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
