"""corral-controlplane: one control plane replica (Raft member + gRPC API).

Wiring, in order: configuration (config.py) -> the replicated store (A's
RaftStore) -> the API handler -> the gRPC server (server.py) -> background
duties: register this member's API address in the store, report health, and
follow leadership.

Leadership: the store calls back on its own thread when this replica gains or
loses leadership; `LeaderSupervisor` turns that into start()/stop() calls on a
thread of its own (store callbacks must not block). On gaining it first makes
sure the system namespaces exist (idempotent: a fixed request id), then starts
every leader-only service. THE HOOK for issue 5 is in controlplane/leader.py
(`leader_services()`); a service is anything with `name`,
`start()` and `stop()` (`stop()` must return promptly).

Threads: main thread (waits for SIGTERM/SIGINT), the store's tick thread,
gRPC's worker pool, "leader" (supervisor), "register" (member registration
until it succeeds), "health" (readiness every 0.5 s).

Exit codes: 0 after a clean stop, 2 for a bad configuration (one line naming
the key), 1 when the store or server cannot start.
"""

from __future__ import annotations

import os

# gRPC reads this once, when it is first imported, so it is set before any import
# below can pull gRPC in. Accepted connections then run on gRPC's classic I/O
# manager (the server thread's completion-queue poll reads and writes the socket)
# instead of EventEngine threads that hand every read over to that poll: measured
# here, 4-5 context switches fewer per write on the replica serving it and ~16 %
# less server CPU per unary call (docs/api.md, "CPU per write"). An operator's own
# GRPC_EXPERIMENTS wins.
os.environ.setdefault("GRPC_EXPERIMENTS",
                      "-event_engine_listener,-event_engine_for_all_other_endpoints")

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from controlplane.api.handler import Handler
from controlplane.api.settings import SYSTEM_NAMESPACES, ApiSettings
from controlplane.cluster import ClusterServicer, Self
from controlplane.config import Config, ConfigError, load
from controlplane.leader import LeaderContext, LeaderService, LeaderSupervisor
from controlplane.podproxy import PodProxy
from controlplane.server import ApiServer, BindError
from controlplane.store.base import MemberInfo, Store
from corral.errors import CorralError

log = logging.getLogger("corral.controlplane")


def open_store(config: Config) -> Store:
    """The replicated store of this replica (engineer A's RaftStore)."""
    from controlplane.store.raft import RaftConfig, RaftStore

    peers = tuple(addr for name, addr in sorted(config.peers.items()) if name != config.name)
    return RaftStore(RaftConfig(
        name=config.name,
        raft_address=config.raft_address,
        peers=peers,
        data_dir=str(config.data_dir),
        password=config.raft_password,
        max_history=config.watch_history,
        tuning=config.raft,
    ))


class Replica:
    """One running replica; `run()` blocks until `shutdown()`."""

    def __init__(self, config: Config, store: Store | None = None, *,
                 services: Callable[[LeaderContext], list[LeaderService]] | None = None,
                 ) -> None:
        """`store` and `services` replace the RaftStore and the leader-only services
        hook (in-process tests of the API layer)."""
        self.config = config
        self.stopping = threading.Event()
        self.store = store if store is not None else open_store(config)
        settings = ApiSettings(cluster_cidr=config.cluster_cidr,
                               service_cidr=config.service_cidr,
                               node_port_range=config.node_port_range)
        self.handler = Handler(self.store, settings)
        me = Self(config.name, config.raft_address, config.api_address, config.socket)
        self.cluster = ClusterServicer(self.store, me, config.peers)
        try:
            self.server = ApiServer(self.handler, self.cluster, PodProxy(self.handler),
                                    listen=config.listen, socket=config.socket,
                                    workers=config.api_workers)
        except BaseException:
            self.store.close()  # its threads would keep the process alive
            raise
        if config.listen and self.server.port:
            # With port 0 in `listen`, the port the server got is the one to advertise.
            host = config.api_address.rpartition(":")[0]
            self.api_address = f"{host}:{self.server.port}"
        else:
            self.api_address = config.api_address
        self.cluster.set_api_address(self.api_address)
        self.supervisor = LeaderSupervisor(self.handler, self._leader_context, services)

    def _leader_context(self) -> LeaderContext:
        c = self.config
        endpoints = tuple(e for e in (f"unix:{c.socket}" if c.socket else "", self.api_address)
                          if e)
        return LeaderContext(config=c, handler=self.handler, store=self.store,
                             endpoints=endpoints)

    def start(self) -> None:
        self.server.start()
        where = ", ".join(x for x in (self.api_address,
                                      f"unix:{self.config.socket}" if self.config.socket
                                      else "") if x)
        log.info("replica %s: API on %s, raft on %s, peers %s", self.config.name, where,
                 self.config.raft_address,
                 ", ".join(f"{n}={a}" for n, a in sorted(self.config.peers.items())))
        self.supervisor.start()
        self.store.on_leadership_change(self.supervisor.on_change)
        threading.Thread(target=self._register, name="register", daemon=True).start()
        threading.Thread(target=self._health, name="health", daemon=True).start()

    def _register(self) -> None:
        c = self.config
        member = MemberInfo(name=c.name, raft_address=c.raft_address,
                            api_address=self.api_address, socket=c.socket)
        delay = 0.2
        while not self.stopping.is_set():
            try:
                if member in self.store.members():
                    return
                self.store.register_member(member, timeout=5.0)
                log.info("registered member %s (API %s)", c.name,
                         self.api_address or f"unix:{c.socket}")
                return
            except CorralError as err:
                log.debug("member registration failed (%s); retrying", err)
            self.stopping.wait(delay)
            delay = min(delay * 2, 2.0)

    def ready(self) -> bool:
        """Serving once the system namespaces and this replica's own member record
        (its API address, which `cluster status` and clients discover it by) exist
        here, and the store has a quorum."""
        for name in SYSTEM_NAMESPACES:
            if self.store.get(("Namespace", "", name), linearizable=False) is None:
                return False
        if not any(m.name == self.config.name for m in self.store.members()):
            return False
        return self.store.local_status().has_quorum

    def _health(self) -> None:
        while not self.stopping.is_set():
            try:
                ok = self.ready()
            except CorralError:
                ok = False
            if ok != self.server.serving:
                log.info("health: %s", "SERVING" if ok else "NOT_SERVING (no quorum or not "
                                                          "bootstrapped yet)")
                self.server.set_serving(ok)
            self.stopping.wait(0.5)

    def shutdown(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("stopping: ending watch streams and calls")
        self.supervisor.stop()
        self.server.stop(grace=3.0)
        self.store.close()
        log.info("stopped")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as err:
        print(f"corral-controlplane: bad configuration: {err}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    try:
        replica = Replica(config)
    except BindError as err:
        print(f"corral-controlplane: bad configuration: {err}", file=sys.stderr)
        return 2
    except CorralError as err:
        print(f"corral-controlplane: cannot start: {err}", file=sys.stderr)
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica.start()
    try:
        while not done.wait(1.0):
            pass
    finally:
        replica.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
