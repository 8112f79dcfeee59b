"""The corral-controlplane command itself: bad configurations exit non-zero with one
line naming the key and start nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import controlplane_command, free_port

pytestmark = pytest.mark.integration


def run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*controlplane_command(), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Any]:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    return {"name": "cp-0", "raft_address": f"127.0.0.1:{free_port()}",
            "listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "data"),
            "raft_password_file": str(pw)}


@pytest.mark.parametrize(("change", "key"), [
    ({"unknown_setting": 1}, "unknown_setting"),
    ({"raft_address": "not-an-address"}, "raft_address"),
    ({"raft_password_file": "/nonexistent/password"}, "raft_password_file"),
    ({"raft_password_file": None}, "raft_password_file"),
    ({"data_dir": "/proc/version/data"}, "data_dir"),
    ({"name": "Not_A_Label"}, "name"),
    ({"service_cidr": "10.96.0.0/99"}, "service_cidr"),
    ({"listen": None, "socket": None}, "listen"),
])
def test_bad_config_exits_non_zero_naming_the_key(tmp_path: Path, good: dict[str, Any],
                                                  change: dict[str, Any], key: str) -> None:
    cfg = {**good, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run(["--config", str(path)])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{key}: " in lines[0]


def test_listen_address_in_use(tmp_path: Path, good: dict[str, Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        good["listen"] = f"127.0.0.1:{s.getsockname()[1]}"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(good))
        proc = run(["--config", str(path)])
    assert proc.returncode != 0
    assert "listen" in proc.stderr


def test_help() -> None:
    proc = run(["--help"])
    assert proc.returncode == 0
    assert "--raft-address" in proc.stdout and "--peer" in proc.stdout
