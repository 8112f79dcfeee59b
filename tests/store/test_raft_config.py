"""The `raft:` section of the control plane config: values reach RaftTuning, and
every mistake is one line naming `raft.KEY` (the process exits 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import ConfigError, load
from controlplane.store.raftconfig import RaftTuning
from tests.cluster import controlplane_command


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    return {"name": "cp-0", "raft_address": "127.0.0.1:7000", "listen": "127.0.0.1:6443",
            "data_dir": str(tmp_path / "data"), "raft_password_file": str(pw)}


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_without_a_raft_section(tmp_path: Path, base: dict[str, Any]) -> None:
    assert load(["--config", write(tmp_path, base)]).raft == RaftTuning()
    base["raft"] = None
    assert load(["--config", write(tmp_path, base)]).raft == RaftTuning()


def test_every_key_reaches_the_tuning(tmp_path: Path, base: dict[str, Any]) -> None:
    base["raft"] = {
        "heartbeat": 0.1, "election_timeout_min": 1, "election_timeout_max": 2.5,
        "connection_timeout": 5, "connection_retry": 1, "leader_fallback": 3,
        "tick_wait": 0.05, "snapshot_min_entries": 500, "snapshot_min_seconds": 60,
        "max_batch_bytes": 4 << 20, "fast_failover": False, "pre_vote": True,
    }
    tuning = load(["--config", write(tmp_path, base)]).raft
    assert tuning == RaftTuning(
        heartbeat=0.1, election_timeout_min=1.0, election_timeout_max=2.5,
        connection_timeout=5.0, connection_retry=1.0, leader_fallback=3.0, tick_wait=0.05,
        snapshot_min_entries=500, snapshot_min_seconds=60.0, max_batch_bytes=4 << 20,
        fast_failover=False, pre_vote=True)
    assert isinstance(tuning.election_timeout_min, float)
    assert isinstance(tuning.snapshot_min_entries, int)


@pytest.mark.parametrize(("raft", "key", "words"), [
    ({"snapshot_entries": 5}, "raft.snapshot_entries", "unknown key"),
    ({"heartbeat": "fast"}, "raft.heartbeat", "must be a number"),
    ({"heartbeat": float("inf")}, "raft.heartbeat", "must be a number"),
    ({"heartbeat": True}, "raft.heartbeat", "must be a number"),
    ({"pre_vote": "yes"}, "raft.pre_vote", "true or false"),
    ({"snapshot_min_entries": 1.5}, "raft.snapshot_min_entries", "must be an integer"),
    ({"snapshot_min_entries": 1}, "raft.snapshot_min_entries", "at least 2"),
    ({"election_timeout_min": 0.1}, "raft.election_timeout_min", "3 heartbeats"),
    ({"election_timeout_max": 0.2}, "raft.election_timeout_max", "election_timeout_min"),
    ({"max_batch_bytes": 1000}, "raft.max_batch_bytes", "1 MiB"),
    ([1, 2], "raft", "mapping"),
])
def test_mistakes_name_the_key(tmp_path: Path, base: dict[str, Any], raft: Any, key: str,
                               words: str) -> None:
    base["raft"] = raft
    with pytest.raises(ConfigError) as info:
        load(["--config", write(tmp_path, base)])
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ") and words in str(info.value)


def test_the_process_exits_2_with_one_line(tmp_path: Path, base: dict[str, Any]) -> None:
    base["raft"] = {"heartbeat": 0}
    proc = subprocess.run([*controlplane_command(), "--config", write(tmp_path, base)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "raft.heartbeat: must be > 0" in lines[0], proc.stderr
