"""Fixtures for store tests: free loopback ports and in-process Raft clusters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.store.raft import RaftConfig, RaftStore
from controlplane.store.raftnode import RaftTuning
from tests.ports import free_port

PASSWORD = "store-tests-password"


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    """Several RaftStores in this process on 127.0.0.1 (as pysyncobj's own tests do)."""

    def __init__(self, root: Path, n: int, tuning: RaftTuning, **kw: object) -> None:
        self.root = root
        self.tuning = tuning
        self.kw = kw
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(n)]
        self.stores: list[RaftStore | None] = [None] * n
        for i in range(n):
            self.start(i)

    def config(self, i: int) -> RaftConfig:
        addr = self.addresses[i]
        return RaftConfig(
            name=f"cp{i}",
            raft_address=addr,
            peers=tuple(a for a in self.addresses if a != addr),
            data_dir=str(self.root / f"cp{i}"),
            password=PASSWORD,
            tuning=self.tuning,
            **self.kw,  # type: ignore[arg-type]
        )

    def start(self, i: int) -> RaftStore:
        assert self.stores[i] is None
        store = RaftStore(self.config(i))
        self.stores[i] = store
        return store

    def stop(self, i: int) -> None:
        store = self.stores[i]
        if store is not None:
            self.stores[i] = None
            store.close()

    def live(self) -> list[RaftStore]:
        return [s for s in self.stores if s is not None]

    def leader(self, timeout: float = 20.0) -> RaftStore:
        found: list[RaftStore] = []

        def one() -> bool:
            leaders = [s for s in self.live() if s.is_leader()]
            if len(leaders) == 1 and leaders[0].local_status().has_quorum:
                found[:] = leaders
                return True
            return False

        wait_for(one, timeout, "a single leader")
        return found[0]

    def index(self, store: RaftStore) -> int:
        return self.stores.index(store)

    def wait_converged(self, timeout: float = 30.0) -> tuple[int, str]:
        digests: list[tuple[int, str]] = []

        def same() -> bool:
            digests[:] = [s.digest() for s in self.live()]
            return len(set(digests)) == 1

        wait_for(same, timeout, "replicas to converge")
        return digests[0]

    def close(self) -> None:
        for i in range(len(self.stores)):
            self.stop(i)


def failover_times(c: Cluster, rounds: int = 3) -> list[float]:
    """Stop the leader `rounds` times (restarting it and letting it catch up in
    between); the seconds from each stop until the next single leader is known."""
    times = []
    for _ in range(rounds):
        old = c.index(c.leader())
        started = time.monotonic()
        c.stop(old)
        c.leader(timeout=10)
        times.append(time.monotonic() - started)
        c.start(old)
        c.wait_converged()
    return times


@pytest.fixture
def make_raft_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int = 3, tuning: RaftTuning | None = None, **kw: object) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", n, tuning or RaftTuning(), **kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
