"""What every verb gets: parsed flags, the streams, the client and the namespace.

The client is made on first use, from `corral.clientconfig` (flags, then
CORRAL_SERVER, then the config file), so verbs that need no server (`--help`,
client-side dry runs) never read the config. Streams are passed in so tests
can run `main()` in-process and capture what it prints.

Threads model: the CLI runs on the main thread; `exec -i` adds one thread that
gRPC uses to pull stdin.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from functools import cached_property
from typing import IO, Any

from corral import clientconfig
from corral.client import Client
from corral.errors import CorralError, Unavailable

DEFAULT_TIMEOUT = 15.0


class UsageError(CorralError):
    """Bad flags or arguments: printed as one `error:` line, exit 1 (as kubectl)."""


class Context:
    def __init__(
        self,
        args: argparse.Namespace,
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        stdin: IO[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = args
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdin = stdin if stdin is not None else sys.stdin
        self.env = env if env is not None else os.environ
        self._client: Client | None = None

    # ---- configuration ----------------------------------------------------------
    @cached_property
    def config(self) -> clientconfig.ClientConfig:
        return clientconfig.resolve(
            getattr(self.args, "server", None) or [],
            getattr(self.args, "namespace", None),
            self.env,
        )

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def namespace_given(self) -> bool:
        """True when -n/--namespace was on the command line."""
        return getattr(self.args, "namespace", None) is not None

    @property
    def all_namespaces(self) -> bool:
        return bool(getattr(self.args, "all_namespaces", False))

    @property
    def request_timeout(self) -> float | None:
        """--request-timeout in seconds; None when not given."""
        value = getattr(self.args, "request_timeout", None)
        return None if value is None else float(value)

    @property
    def client(self) -> Client:
        if self._client is None:
            cfg = self.config
            if not cfg.servers:
                raise Unavailable(
                    "no control plane endpoint given: use --server HOST:PORT, set "
                    "CORRAL_SERVER, or write servers: in ~/.corral/config.yaml "
                    "(see `corral --help`)"
                )
            timeout = self.request_timeout or DEFAULT_TIMEOUT
            self._client = Client(list(cfg.servers), timeout=timeout,
                                  retry_for=max(timeout, 10.0))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- output ---------------------------------------------------------------
    def out(self, text: str = "") -> None:
        """Write text; a line without its newline gets one."""
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def warn(self, text: str) -> None:
        self.stderr.write(text.rstrip("\n") + "\n")
        self.stderr.flush()

    def error_line(self, text: str) -> None:
        self.warn(f"error: {text}")

    def out_bytes(self, data: bytes, stream: str = "stdout") -> None:
        target: Any = self.stdout if stream == "stdout" else self.stderr
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            target.write(data.decode("utf-8", errors="replace"))
            target.flush()

    @staticmethod
    def now() -> float:
        return time.time()
