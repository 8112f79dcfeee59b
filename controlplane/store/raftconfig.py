"""RaftNode's settings and status, and the checks made before it binds.

Threading: immutable values and pure checks (`probe_bind` opens and closes
one socket).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral import configfile
from corral.errors import Invalid, Unavailable


@dataclass(frozen=True)
class RaftTuning:
    """Timers (seconds) and sizes. Defaults aim at <= 1 s failover on a LAN.
    The control plane's config sets them in its `raft:` section (same names)."""

    heartbeat: float = 0.05  # appendEntriesPeriod
    election_timeout_min: float = 0.3
    election_timeout_max: float = 0.6
    connection_timeout: float = 2.0  # no bytes for this long: connection dead
    connection_retry: float = 0.5
    leader_fallback: float = 1.0  # a leader without a majority answering steps down
    tick_wait: float = 0.025  # longest the tick thread sleeps in poll()
    snapshot_min_entries: int = 20_000
    snapshot_min_seconds: float = 300.0
    max_batch_bytes: int = 8 << 20
    # Start an election soon after the leader's connection drops (a crash shows
    # up as a reset connection long before the election timeout).
    fast_failover: bool = True
    # Ask the peers before standing for election (prevote.py). Off only to show,
    # in tests, what it prevents.
    pre_vote: bool = True

    def validate(self, where: str = "raft") -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise Invalid(what, f"{where}.{key}")

        need(self.heartbeat > 0, "heartbeat", "must be > 0")
        need(self.election_timeout_min > 3 * self.heartbeat, "election_timeout_min",
             f"must be more than 3 heartbeats ({3 * self.heartbeat:g}s)")
        need(self.election_timeout_max > self.election_timeout_min, "election_timeout_max",
             "must be more than election_timeout_min")
        need(self.connection_timeout >= self.election_timeout_max, "connection_timeout",
             "must be at least election_timeout_max")
        need(self.connection_retry > 0, "connection_retry", "must be > 0")
        need(self.leader_fallback > self.heartbeat, "leader_fallback",
             "must be more than the heartbeat")
        need(0 < self.tick_wait <= self.heartbeat, "tick_wait", "must be in (0, heartbeat]")
        need(self.snapshot_min_entries >= 2, "snapshot_min_entries", "must be at least 2")
        need(self.snapshot_min_seconds > 0, "snapshot_min_seconds", "must be > 0")
        need(self.max_batch_bytes >= 1 << 20, "max_batch_bytes", "must be at least 1 MiB")

    @staticmethod
    def from_mapping(data: Mapping[str, Any] | None, where: str = "raft") -> RaftTuning:
        """The `raft:` section of the control plane's config: every key optional, named
        as the fields; an unknown key or a bad value raises ConfigError naming it."""
        tuning = RaftTuning(**configfile.dataclass_section(data, RaftTuning, where))
        try:
            tuning.validate(where)
        except Invalid as err:
            raise configfile.fail(err.field, err.reason) from None
        return tuning

    @property
    def max_command_bytes(self) -> int:
        # Above the batch size pysyncobj splits one entry over several messages
        # ("transmission"), whose end marker it computes from the wrong length.
        return self.max_batch_bytes // 2


@dataclass(frozen=True)
class NodeStatus:
    state: str = "follower"
    leader: str = ""
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    log_entries: int = 0
    first_index: int = 0
    has_quorum: bool = False
    connected: tuple[str, ...] = ()
    match_index: tuple[tuple[str, int], ...] = ()
    journal_syncs: int = 0
    snapshot_index: int = 0
    updated: float = field(default=0.0)


def check_address(value: str, where: str) -> tuple[str, int]:
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise Invalid(f"must be HOST:PORT with a port in 1-65535, got {value!r}", where)
    if host in ("0.0.0.0", "::", "[::]", "*"):
        raise Invalid(
            f"must be the address the peers use to reach this member, not the wildcard {host}",
            where,
        )
    return host, int(port_s)


def probe_bind(address: str, where: str) -> None:
    """Fail fast and clearly if the Raft address cannot be bound (pysyncobj would spin)."""
    host, port = check_address(address, where)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Invalid(f"cannot resolve {host!r}: {e}", where) from e
    family, _, _, _, sockaddr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sockaddr)
    except OSError as e:
        raise Unavailable(f"cannot bind the Raft address {address}: {e.strerror}") from e
    finally:
        s.close()
