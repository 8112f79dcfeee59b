"""Fixtures shared by every test folder.

- `controlplane` — a running 3-replica control plane (tests/cluster.py) in the
  test's temporary folder, killed (by PID) after the test, log tails printed
  when the test failed.
- `make_cluster(size=3, **kwargs)` — build more clusters (or other sizes); all
  are killed after the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite needs root (network namespaces, iptables, cgroups, Podman storage):
    refuse to run rather than skip what proves the features work."""
    if os.geteuid() != 0:
        raise pytest.UsageError(
            "Corral's tests need root (network namespaces, iptables, Podman): "
            "run `sudo bash scripts/test.sh`"
        )


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def make_cluster(tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(size: int = 3, **kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path, size, **kwargs)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            if _failed(request):
                for r in cluster.replicas:
                    print(cluster.tail(r, 60), file=sys.stderr)
            cluster.close()


@pytest.fixture
def controlplane(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(3)
