"""Fixtures for the CLI tests.

- `memserver`: one real control plane replica (the real API server, handler and
  validation over gRPC) on a free loopback port, running in this process over
  engineer A's MemoryStore, with the leader-only controllers switched off so a
  test can play controller itself (write statuses, ReplicaSets) deterministically.
  Fast enough to start per test; stopped after it, also when the test fails.
- `cli`: runs `corral.cli.main.main` in-process against `memserver` and returns
  (exit code, stdout, stderr).

The end-to-end tests (test_e2e.py) use the real `corral` console script against
three real replica processes instead (tests/cluster.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from corral.cli.main import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def _all_controllers() -> list[str]:
    try:
        from controlplane.controllers.config import CONTROLLER_NAMES
    except ImportError:
        return []
    return list(CONTROLLER_NAMES)


@pytest.fixture
def memserver(tmp_path: Path) -> Iterator[str]:
    from controlplane.config import load
    from controlplane.main import Replica
    from controlplane.store.memory import MemoryStore

    root = tmp_path / "memserver"
    root.mkdir()
    (root / "password").write_text("cli-tests-password\n")
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "name": "mem-0",
        "raft_address": "127.0.0.1:1",  # never bound: the MemoryStore has no Raft
        "listen": "127.0.0.1:0",
        "data_dir": str(root / "data"),
        "raft_password_file": str(root / "password"),
        "controllers": {"disabled": _all_controllers()},
    }))
    replica = Replica(load(["--config", str(config_file)]), store=MemoryStore())
    try:
        replica.handler.ensure_namespaces()
        replica.start()
        yield replica.api_address
    finally:
        replica.shutdown()


@pytest.fixture
def cli(memserver: str, tmp_path: Path) -> Callable[..., Result]:
    env = {"CORRAL_SERVER": memserver, "HOME": str(tmp_path / "home")}

    def run(*argv: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin), env=env)
        return Result(code, out.getvalue(), err.getvalue())

    return run
