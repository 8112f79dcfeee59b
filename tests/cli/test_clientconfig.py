"""corral.clientconfig: --server beats CORRAL_SERVER beats the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import clientconfig
from corral.errors import Invalid


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_precedence_flag_then_env_then_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / ".corral" / "config.yaml",
          "servers: [unix:/run/a.sock, '127.0.0.1:7001']\nnamespace: team\n")
    env = {"CORRAL_SERVER": "127.0.0.1:6001,127.0.0.1:6002"}

    cfg = clientconfig.resolve(["10.0.0.1:1", "10.0.0.2:2,10.0.0.3:3"], None, env, str(home))
    assert cfg.servers == ("10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3")
    assert cfg.servers_from == "--server"
    assert cfg.namespace == "team"  # the file still gives the namespace

    cfg = clientconfig.resolve([], None, env, str(home))
    assert cfg.servers == ("127.0.0.1:6001", "127.0.0.1:6002")
    assert cfg.servers_from == "CORRAL_SERVER"

    cfg = clientconfig.resolve([], "other", {}, str(home))
    assert cfg.servers == ("unix:/run/a.sock", "127.0.0.1:7001")
    assert cfg.servers_from == str(home / ".corral" / "config.yaml")
    assert cfg.namespace == "other"


def test_corral_config_names_the_file_and_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path / "lab.yaml", "servers:\n- /var/lib/lab/h1/api.sock\n")
    cfg = clientconfig.resolve([], None, {"CORRAL_CONFIG": path}, str(tmp_path / "nohome"))
    assert cfg.servers == ("/var/lib/lab/h1/api.sock",)
    assert cfg.namespace == "default"
    with pytest.raises(Invalid) as info:
        clientconfig.resolve([], None, {"CORRAL_CONFIG": str(tmp_path / "missing.yaml")})
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: no such file"


def test_no_config_anywhere_gives_no_servers(tmp_path: Path) -> None:
    cfg = clientconfig.resolve([], None, {}, str(tmp_path))
    assert cfg.servers == ()
    assert cfg.servers_from == ""
    assert cfg.namespace == "default"


def test_bad_config_files_and_endpoints_are_refused(tmp_path: Path) -> None:
    bad_key = write(tmp_path / "a.yaml", "server: [x:1]\n")
    with pytest.raises(Invalid) as info:
        clientconfig.resolve([], None, {"CORRAL_CONFIG": bad_key})
    assert "unknown key 'server' (known: servers, namespace)" in str(info.value)

    bad_yaml = write(tmp_path / "b.yaml", "servers: [x:1\n")
    with pytest.raises(Invalid) as info:
        clientconfig.resolve([], None, {"CORRAL_CONFIG": bad_yaml})
    assert "YAML syntax error at line 2" in str(info.value)

    bad_ns = write(tmp_path / "c.yaml", "namespace: Not_Valid\n")
    with pytest.raises(Invalid) as info:
        clientconfig.resolve([], None, {"CORRAL_CONFIG": bad_ns})
    assert "namespace: invalid namespace 'Not_Valid'" in str(info.value)

    with pytest.raises(Invalid) as info:
        clientconfig.resolve(["localhost"], None, {}, str(tmp_path))
    assert str(info.value).startswith("--server: 'localhost' is not an endpoint")
    with pytest.raises(Invalid):
        clientconfig.resolve([], None, {"CORRAL_SERVER": "host:99999"}, str(tmp_path))
    with pytest.raises(Invalid):
        clientconfig.resolve(["a:1"], "Bad!", {}, str(tmp_path))
