"""The README's run command, as a user types it: `corral lab up`, apply the example
manifests, wait for the rollout, `corral get all -A` (three Running pods),
`corral lab status`, `corral lab down` — real CLI processes, the client config
found where `up` wrote it, all of it well under two minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from corral.lab import leftovers
from tests.labfixture import unique_name

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CORRAL = str(Path(sys.executable).parent / "corral")
BUDGET = 120.0


def test_up_apply_the_examples_get_all_status_and_down_in_under_two_minutes() -> None:
    base = Path("/tmp") / f"cl-{unique_name()}"
    home = base / "home"
    home.mkdir(parents=True)
    name = unique_name("demo")
    env = dict(os.environ, CORRAL_LAB_ROOT=str(base / "labs"), HOME=str(home),
               CORRAL_LAB_NAME=name)
    for key in ("CORRAL_CONFIG", "CORRAL_SERVER"):
        env.pop(key, None)
    timings: dict[str, float] = {}

    def corral(*args: str, timeout: float = 120) -> str:
        t0 = time.monotonic()
        res = subprocess.run([CORRAL, *args], capture_output=True, text=True, env=env,
                             timeout=timeout, cwd=REPO)
        timings[" ".join(args[:2])] = time.monotonic() - t0
        assert res.returncode == 0, f"corral {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    start = time.monotonic()
    try:
        out = corral("lab", "up")
        assert "Raft leader: h" in out
        config = home / ".corral" / "config.yaml"
        servers = yaml.safe_load(config.read_text())["servers"]
        assert servers == [f"unix:{base}/labs/{name}/h{k}/api.sock" for k in (1, 2, 3)]
        applied = corral("apply", "-f", "examples/")
        assert "deployment.apps/web created" in applied
        corral("rollout", "status", "deployment", "web", "-n", "demo", "--timeout", "90s")
        everything = corral("get", "all", "-A")
        assert "deployment.apps/web" in everything and "service/web" in everything
        assert everything.count("Running") == 3, everything
        status = corral("lab", "status")
        assert status.count(" on ") == 3
        corral("lab", "down")
        assert not config.exists(), "down removes the client config it wrote"
    finally:
        if leftovers(name, base / "labs"):
            subprocess.run([CORRAL, "lab", "down"], env=env, capture_output=True, timeout=120)
        left = leftovers(name, base / "labs")
        shutil.rmtree(base, ignore_errors=True)
    total = time.monotonic() - start
    print("timings:", {k: round(v, 2) for k, v in timings.items()}, f"total {total:.1f} s")
    assert left == []
    assert total < BUDGET, f"up + examples + down took {total:.0f} s"
