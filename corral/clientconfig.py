"""Where the CLI finds the control plane, and which namespace it works in.

Endpoints, first match wins:
  1. `--server` flags (each comma-separated, repeatable),
  2. the CORRAL_SERVER environment variable (comma-separated),
  3. the config file: $CORRAL_CONFIG if set (then it must exist), else
     ~/.corral/config.yaml (if it exists).

The namespace: `-n/--namespace`, else the config file's `namespace:`, else
"default".

The config file (the lab writes one; see docs/cli.md):

    servers:
    - unix:/var/lib/corral-lab/lab/h1/api.sock
    - 127.0.0.1:6443
    namespace: default

An endpoint is "HOST:PORT", "unix:/path" or an absolute socket path. Several
endpoints may be given: corral.client.Client skips dead ones.

Pure functions over the flags, the environment and the file; no threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from corral.errors import Invalid
from corral.names import check_dns1123_label

DEFAULT_NAMESPACE = "default"
ENV_SERVER = "CORRAL_SERVER"
ENV_CONFIG = "CORRAL_CONFIG"
CONFIG_KEYS = ("servers", "namespace")


@dataclass(frozen=True)
class ClientConfig:
    servers: tuple[str, ...]
    namespace: str
    # Where the servers came from, for error messages: "--server", "CORRAL_SERVER",
    # or the config file's path ("" when nothing named any).
    servers_from: str
    config_path: str  # the file read, or "" when none was


def default_config_path(env: Mapping[str, str], home: str | None = None) -> str:
    explicit = env.get(ENV_CONFIG, "")
    if explicit:
        return explicit
    home = home if home is not None else os.path.expanduser("~")
    return os.path.join(home, ".corral", "config.yaml")


def split_endpoints(values: Sequence[str], where: str) -> tuple[str, ...]:
    """Comma-separated and repeated endpoints, checked for shape."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                check_endpoint(part, where)
                out.append(part)
    return tuple(out)


def check_endpoint(endpoint: str, where: str) -> None:
    if endpoint.startswith("unix:"):
        if len(endpoint) <= len("unix:"):
            raise Invalid(f"{endpoint!r} names no socket path", where)
        return
    if endpoint.startswith("/"):
        return
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(
            f"{endpoint!r} is not an endpoint (use HOST:PORT, unix:/path/to.sock or /path/to.sock)",
            where,
        )


def read_config_file(path: str) -> dict[str, Any]:
    """The file's settings, checked: servers (a list or a comma-separated string) and
    namespace. Unknown keys are refused so a typo does not silently do nothing."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise Invalid("no such file", path) from None
    except OSError as err:
        raise Invalid(f"cannot read: {err.strerror}", path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise Invalid(f"YAML syntax error{at}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid("expected a mapping with servers and namespace", path)
    for key in data:
        if key not in CONFIG_KEYS:
            raise Invalid(f"unknown key {key!r} (known: {', '.join(CONFIG_KEYS)})", path)
    out: dict[str, Any] = {}
    servers = data.get("servers")
    if servers is not None:
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise Invalid("servers: expected a list of endpoints", path)
        out["servers"] = split_endpoints(servers, f"{path}: servers")
    namespace = data.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str):
            raise Invalid("namespace: expected a string", path)
        check_namespace(namespace, f"{path}: namespace")
        out["namespace"] = namespace
    return out


def check_namespace(namespace: str, where: str) -> None:
    problems = check_dns1123_label(namespace)
    if problems:
        raise Invalid(f"invalid namespace {namespace!r}: {problems[0]}", where)


def resolve(
    server_flags: Sequence[str],
    namespace_flag: str | None,
    env: Mapping[str, str],
    home: str | None = None,
) -> ClientConfig:
    """The endpoints and namespace to use, by the precedence in this module's doc."""
    path = default_config_path(env, home)
    settings: dict[str, Any] = {}
    config_path = ""
    if env.get(ENV_CONFIG) or os.path.exists(path):
        settings = read_config_file(path)
        config_path = path

    servers = split_endpoints(server_flags, "--server")
    servers_from = "--server"
    if not servers:
        servers = split_endpoints([env.get(ENV_SERVER, "")], ENV_SERVER)
        servers_from = ENV_SERVER
    if not servers:
        servers = settings.get("servers", ())
        servers_from = config_path if servers else ""

    if namespace_flag is not None:
        check_namespace(namespace_flag, "--namespace")
        namespace = namespace_flag
    else:
        namespace = settings.get("namespace", DEFAULT_NAMESPACE)
    return ClientConfig(tuple(servers), namespace, servers_from, config_path)
