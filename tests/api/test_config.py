"""corral-controlplane configuration: file and flags, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import ConfigError, load


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    return {
        "name": "cp-0",
        "raft_address": "127.0.0.1:7000",
        "peers": {"cp-1": "127.0.0.1:7001", "cp-2": "127.0.0.1:7002"},
        "listen": "127.0.0.1:6443",
        "data_dir": str(tmp_path / "data"),
        "raft_password_file": str(pw),
    }


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_file_with_defaults(tmp_path: Path, base: dict[str, Any]) -> None:
    cfg = load(["--config", write(tmp_path, base)])
    assert cfg.name == "cp-0"
    assert cfg.peers == {"cp-0": "127.0.0.1:7000", "cp-1": "127.0.0.1:7001",
                         "cp-2": "127.0.0.1:7002"}
    assert str(cfg.cluster_cidr) == "10.244.0.0/16"
    assert str(cfg.service_cidr) == "10.96.0.0/12"
    assert cfg.node_port_range == (30000, 32767)
    assert cfg.watch_history == 10000 and cfg.log_level == "info"
    assert cfg.raft_password == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert (tmp_path / "data").is_dir()


def test_flags_alone_and_flags_override_the_file(tmp_path: Path, base: dict[str, Any]) -> None:
    cfg = load(["--name", "solo", "--raft-address", "127.0.0.1:7100",
                "--socket", str(tmp_path / "api.sock"), "--data-dir", str(tmp_path / "d"),
                "--raft-password-file", base["raft_password_file"]])
    assert cfg.peers == {"solo": "127.0.0.1:7100"} and cfg.listen == ""
    cfg = load(["--config", write(tmp_path, base), "--listen", "127.0.0.1:7443",
                "--peer", "x=127.0.0.1:7200", "--log-level", "debug"])
    assert cfg.listen == "127.0.0.1:7443" and cfg.log_level == "debug"
    assert cfg.peers == {"x": "127.0.0.1:7200", "cp-0": "127.0.0.1:7000"}


def test_controllers_mapping_is_accepted(tmp_path: Path, base: dict[str, Any]) -> None:
    base["controllers"] = {"node_monitor_grace_period": 10}
    assert load(["--config", write(tmp_path, base)]).controllers == {
        "node_monitor_grace_period": 10}


def test_controllers_keys_are_checked_at_start(tmp_path: Path, base: dict[str, Any]) -> None:
    base["controllers"] = {"node_monitor_grace_perod": 10}
    with pytest.raises(ConfigError) as info:
        load(["--config", write(tmp_path, base)])
    assert info.value.key == "controllers.node_monitor_grace_perod"
    assert "unknown key" in str(info.value)


def test_api_address_replaces_a_wildcard_host(tmp_path: Path, base: dict[str, Any]) -> None:
    base["listen"] = "0.0.0.0:6443"
    assert load(["--config", write(tmp_path, base)]).api_address == "127.0.0.1:6443"


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"name": "CP_0"}, "name", "invalid value"),
    ({"name": ""}, "name", "required"),
    ({"raft_address": "localhost"}, "raft_address", "HOST:PORT"),
    ({"raft_address": "127.0.0.1:99999"}, "raft_address", "between 1 and 65535"),
    ({"listen": "127.0.0.1:x"}, "listen", "port"),
    ({"listen": "", "socket": ""}, "listen", "at least one of listen"),
    ({"peers": ["a"]}, "peers", "mapping"),
    ({"peers": {"cp-1": "nowhere"}}, "peers.cp-1", "HOST:PORT"),
    ({"peers": {"cp-9": "127.0.0.1:7000"}}, "peers", "share the address"),
    ({"raft_password_file": ""}, "raft_password_file", "required"),
    ({"raft_password_file": "/nonexistent/pw"}, "raft_password_file", "cannot read"),
    ({"cluster_cidr": "10.244.0.0/33"}, "cluster_cidr", "IPv4 CIDR"),
    ({"service_cidr": "10.244.0.0/20"}, "service_cidr", "overlaps"),
    ({"node_port_range": "32767-30000"}, "node_port_range", "LOW <= HIGH"),
    ({"watch_history": "lots"}, "watch_history", "integer"),
    ({"log_level": "chatty"}, "log_level", "must be one of"),
    ({"controllers": [1]}, "controllers", "mapping"),
])
def test_bad_settings_name_their_key(tmp_path: Path, base: dict[str, Any],
                                     change: dict[str, Any], key: str, words: str) -> None:
    base.update(change)
    with pytest.raises(ConfigError) as info:
        load(["--config", write(tmp_path, base)])
    message = str(info.value)
    assert info.value.key == key, message
    assert message.startswith(f"{key}: ") and words in message
    assert "\n" not in message


def test_data_dir_that_is_a_file(tmp_path: Path, base: dict[str, Any]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    base["data_dir"] = str(f)
    with pytest.raises(ConfigError) as info:
        load(["--config", write(tmp_path, base)])
    assert info.value.key == "data_dir"


def test_empty_password_file(tmp_path: Path, base: dict[str, Any]) -> None:
    Path(base["raft_password_file"]).write_text("\n")
    with pytest.raises(ConfigError) as info:
        load(["--config", write(tmp_path, base)])
    assert info.value.key == "raft_password_file" and "empty" in str(info.value)


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(["--config", str(tmp_path / "missing.yaml")])
    assert info.value.key == "" and str(info.value).startswith("config file ")
    assert "cannot read" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load(["--config", str(bad)])
    assert "line" in str(info.value)
