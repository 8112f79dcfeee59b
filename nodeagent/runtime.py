"""Podman, reached through podman-py, treated as unreliable.

Threads model: any thread may call a Runtime. Every call runs on a worker of a
bounded pool (elasticpool.py: idle workers end) and the caller waits at most its
deadline (`call_timeout`, or the stop grace + call_timeout, or `pull_timeout`); a
call that overruns raises `RuntimeTimeout` and leaves its worker to finish or
fail on the HTTP read timeout (the socket timeout is the deadline plus a
margin), so a hung Podman (conmon stuck on `start` is a known case) never hangs
the agent. Every result feeds `health`: the watchdog and the RuntimeUnhealthy
node condition read it.

Streams (logs -f, events, interactive exec) use a second podman-py client
without a read timeout, because an idle stream is not a hung one; they are
ended by closing them.

What podman-py does not offer is done through its APIClient (still podman-py),
with the libpod endpoint's own parameters: DELETE with `timeout=0` (podman-py's
remove waits Podman's default 10 s stop timeout) and exec start with stdin,
which needs a hijacked connection (HTTP/1.1 Upgrade: tcp, then the raw
multiplexed stream; Podman closes the process's stdin on our half-close, which
we checked on Podman 4.3).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import podman
import podman.errors
import requests
import urllib3.exceptions

from nodeagent import records
from nodeagent.elasticpool import ElasticPool
from nodeagent.records import ContainerRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a read of a stream raises once the stream was ended or the peer went away.
_STREAM_ENDED = (OSError, ValueError, AttributeError, http.client.HTTPException,
                 urllib3.exceptions.HTTPError, requests.RequestException)
# The libpod API version prefix used on the raw (hijacked) connection.
LIBPOD_PREFIX = "/v4.0.0/libpod"


class RuntimeFailure(Exception):
    """A Podman call failed; the message says which call and why."""


class RuntimeTimeout(RuntimeFailure):
    pass


class RuntimeUnavailable(RuntimeFailure):
    pass


class ImageMissing(RuntimeFailure):
    pass


class ContainerGone(RuntimeFailure):
    pass


@dataclass
class Health:
    """What the watchdog and the node status read."""

    last_ok: float = 0.0
    last_failure: float = 0.0
    failure: str = ""
    consecutive_failures: int = 0

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0 and self.last_ok > 0


def _explain(err: Exception) -> str:
    if isinstance(err, podman.errors.APIError):
        return str(getattr(err, "explanation", "") or err)
    return str(err) or type(err).__name__


class Runtime:
    def __init__(self, socket_path: str, *, call_timeout: float = 30.0,
                 pull_timeout: float = 300.0, workers: int = 32) -> None:
        self.socket_path = socket_path
        self.call_timeout = call_timeout
        self.pull_timeout = pull_timeout
        url = f"unix://{socket_path}"
        self._client = podman.PodmanClient(base_url=url, timeout=call_timeout + 5,
                                           max_pool_size=workers)
        self._long = podman.PodmanClient(base_url=url, timeout=pull_timeout + 5,
                                         max_pool_size=workers)
        self._stream = podman.PodmanClient(base_url=url, max_pool_size=workers)
        # Its threads end after a minute without calls: a burst of pod starts
        # grows it to `workers`, idle needs one or two (elasticpool.py).
        self._pool = ElasticPool(workers, idle_exit=60.0, name="podman-call")
        self._lock = threading.Lock()
        self.health = Health()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in (self._client, self._long, self._stream):
            try:
                c.close()
            except Exception:
                pass

    # ---- plumbing -------------------------------------------------------------
    def _ok(self) -> None:
        with self._lock:
            self.health.last_ok = time.time()
            self.health.consecutive_failures = 0
            self.health.failure = ""

    def _failed(self, why: str) -> None:
        with self._lock:
            self.health.last_failure = time.time()
            self.health.consecutive_failures += 1
            self.health.failure = why

    def _call(self, what: str, fn: Callable[[], T], timeout: float | None = None) -> T:
        deadline = self.call_timeout if timeout is None else timeout
        try:
            fut = self._pool.submit(fn)
        except RuntimeError as err:  # pool shut down
            raise RuntimeUnavailable(f"podman {what}: {err}") from None
        try:
            result = fut.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            why = f"podman {what} did not answer within {deadline:g}s"
            self._failed(why)
            raise RuntimeTimeout(why) from None
        except podman.errors.ImageNotFound as err:
            self._ok()
            raise ImageMissing(f"podman {what}: {_explain(err)}") from None
        except podman.errors.NotFound as err:
            self._ok()
            raise ContainerGone(f"podman {what}: {_explain(err)}") from None
        except podman.errors.APIError as err:
            cause = err.__cause__
            if isinstance(cause, OSError):
                # podman-py wraps transport errors (refused, read timeout) in APIError:
                # the service did not answer.
                why = f"podman {what}: no answer from {self.socket_path}: {cause}"
                self._failed(why)
                if isinstance(cause, requests.Timeout):
                    raise RuntimeTimeout(why) from None
                raise RuntimeUnavailable(why) from None
            self._ok()
            raise RuntimeFailure(f"podman {what}: {_explain(err)}") from None
        except (requests.ConnectionError, podman.errors.PodmanError, OSError) as err:
            why = f"podman {what}: cannot reach the service at {self.socket_path}: {err}"
            self._failed(why)
            raise RuntimeUnavailable(why) from None
        except requests.Timeout:
            why = f"podman {what} timed out"
            self._failed(why)
            raise RuntimeTimeout(why) from None
        self._ok()
        return result

    # ---- system ---------------------------------------------------------------
    def ping(self, timeout: float = 5.0) -> bool:
        def do() -> bool:
            resp = self._client.api.get("/_ping", timeout=timeout)
            return bool(resp.status_code == 200)
        try:
            return self._call("ping", do, timeout)
        except RuntimeFailure:
            return False

    def version(self) -> str:
        """Podman's version, from the _ping headers (podman-py's version() asks every
        component for its version and takes a second or more)."""
        def do() -> str:
            resp = self._client.api.get("/_ping")
            return str(resp.headers.get("Libpod-Api-Version", "unknown"))
        return self._call("version", do)

    # ---- containers -----------------------------------------------------------------
    def list_containers(self) -> list[ContainerRecord]:
        """Every container of this agent (by the pod uid label), any state, as
        Podman's database says (see pleg.py for containers that died with conmon)."""
        def do() -> list[ContainerRecord]:
            params = {"all": True, "filters": json.dumps({"label": [records.POD_UID]})}
            resp = self._client.api.get("/containers/json", params=params)
            resp.raise_for_status()
            out = []
            for attrs in resp.json() or []:
                rec = records.from_podman(attrs)
                if rec is not None:
                    out.append(rec)
            return out
        return self._call("list containers", do)

    def inspect(self, cid: str) -> dict[str, Any]:
        def do() -> dict[str, Any]:
            resp = self._client.api.get(f"/containers/{cid}/json")
            resp.raise_for_status()
            return dict(resp.json())
        return self._call(f"inspect {cid[:12]}", do)

    def create(self, kwargs: dict[str, Any]) -> str:
        args = dict(kwargs)
        image = args.pop("image")
        command = args.pop("command", None)

        def do() -> str:
            # podman-py's create() inspects the new container afterwards; we only
            # need its id, so post the rendered payload ourselves.
            payload = dict(args, image=image, command=command)
            body = self._client.containers._render_payload(payload)
            resp = self._client.api.post("/containers/create",
                                         headers={"content-type": "application/json"},
                                         data=podman.api.prepare_body(body))
            resp.raise_for_status(not_found=podman.errors.ImageNotFound)
            return str(resp.json()["Id"])
        return self._call(f"create {args.get('name', '')}", do)

    def start(self, cid: str) -> None:
        def do() -> None:
            resp = self._client.api.post(f"/containers/{cid}/start")
            resp.raise_for_status()
        self._call(f"start {cid[:12]}", do)

    def stop(self, cid: str, grace: int) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (passed to Podman explicitly:
        its own default is 10 s)."""
        grace = max(0, int(grace))

        def do() -> None:
            resp = self._client.api.post(f"/containers/{cid}/stop", params={"timeout": grace},
                                         timeout=grace + self.call_timeout + 5)
            if resp.status_code in (204, 304):
                return
            resp.raise_for_status()
        self._call(f"stop {cid[:12]}", do, timeout=grace + self.call_timeout)

    def kill(self, cid: str, signal: str = "SIGKILL") -> None:
        def do() -> None:
            resp = self._client.api.post(f"/containers/{cid}/kill", params={"signal": signal})
            resp.raise_for_status()
        self._call(f"kill {cid[:12]}", do)

    def remove(self, cid: str) -> None:
        def do() -> None:
            resp = self._client.api.delete(f"/containers/{cid}",
                                           params={"force": True, "timeout": 0})
            if resp.status_code == 404:
                return
            resp.raise_for_status()
        self._call(f"remove {cid[:12]}", do)

    # ---- images -------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        def do() -> bool:
            return bool(self._client.images.exists(ref))
        return self._call(f"image exists {ref}", do)

    def pull(self, ref: str) -> None:
        """Pull an image; raises with Podman's message when the pull fails. (The
        libpod endpoint answers 200 and reports a failure inside its JSON stream,
        which podman-py's pull() does not turn into an error, so read it here.)"""
        def do() -> None:
            resp = self._long.api.post("/images/pull",
                                       params={"reference": ref, "quiet": True},
                                       stream=True, timeout=self.pull_timeout + 5)
            resp.raise_for_status()
            error = ""
            pulled = False
            for line in resp.iter_lines():
                if not line:
                    continue
                item = json.loads(line)
                if item.get("error"):
                    error = str(item["error"])
                if item.get("images") or item.get("id"):
                    pulled = True
            if error or not pulled:
                raise podman.errors.APIError(error or "the pull reported no image",
                                             explanation=error or "no image pulled")
        self._call(f"pull {ref}", do, timeout=self.pull_timeout)

    # ---- exec (probes) --------------------------------------------------------------------
    def exec_run(self, cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes, bytes]:
        """Run a command to completion; (exit code, stdout, stderr)."""
        def do() -> tuple[int, bytes, bytes]:
            resp = self._client.api.post(
                f"/containers/{cid}/exec",
                data=json.dumps({"AttachStdout": True, "AttachStderr": True, "Cmd": cmd}))
            resp.raise_for_status()
            eid = resp.json()["Id"]
            start = self._client.api.post(f"/exec/{eid}/start",
                                          data=json.dumps({"Detach": False, "Tty": False}),
                                          timeout=timeout + 5)
            start.raise_for_status()
            out, err = demux(start.content)
            info = self._client.api.get(f"/exec/{eid}/json")
            info.raise_for_status()
            code = info.json().get("ExitCode")
            return (int(code) if code is not None else -1), out, err
        return self._call(f"exec in {cid[:12]}", do, timeout=timeout)

    # ---- streams ----------------------------------------------------------------------------
    def logs(self, cid: str, *, follow: bool, tail: int | None, timestamps: bool
             ) -> tuple[Iterator[bytes], Callable[[], None]]:
        """(chunks, end). Chunks are raw log bytes (stdout and stderr interleaved);
        `end()`, from any thread and without blocking, makes the chunks stop."""
        params: dict[str, Any] = {"follow": follow, "stdout": True, "stderr": True,
                                  "timestamps": timestamps}
        if tail is not None:
            params["tail"] = max(0, tail)

        def do() -> Any:
            resp = self._stream.api.get(f"/containers/{cid}/logs", params=params, stream=True)
            resp.raise_for_status()
            return resp
        stream = HttpStream(self._call(f"logs {cid[:12]}", do))

        def chunks() -> Iterator[bytes]:
            with stream:
                for _kind, data in iter_frames(stream.raw):
                    yield data

        return chunks(), stream.end

    def events(self, since: float | None = None) -> tuple[Iterator[dict[str, Any]],
                                                         Callable[[], None]]:
        """Container events (died, start, remove, ...), decoded; and how to end the
        stream (from any thread, without blocking)."""
        params: dict[str, Any] = {"stream": True,
                                  "filters": json.dumps({"type": ["container"]})}
        if since:
            params["since"] = str(int(since))

        def do() -> Any:
            resp = self._stream.api.get("/events", params=params, stream=True)
            resp.raise_for_status()
            return resp
        stream = HttpStream(self._call("events", do))

        def items() -> Iterator[dict[str, Any]]:
            with stream:
                for line in stream.lines():
                    if line:
                        yield json.loads(line)
        return items(), stream.end

    def exec_session(self, cid: str, cmd: list[str], *, stdin: bool, tty: bool) -> ExecSession:
        """An interactive exec: write stdin, read (stream, bytes), then the exit code."""
        def create() -> str:
            resp = self._client.api.post(
                f"/containers/{cid}/exec",
                data=json.dumps({"AttachStdin": stdin, "AttachStdout": True,
                                 "AttachStderr": True, "Tty": tty, "Cmd": cmd}))
            resp.raise_for_status()
            return str(resp.json()["Id"])
        eid = self._call(f"exec in {cid[:12]}", create)
        session = ExecSession(self, eid, tty)
        self._call(f"exec start in {cid[:12]}", session.connect)
        return session

    def exec_exit_code(self, eid: str) -> int:
        def do() -> int:
            resp = self._client.api.get(f"/exec/{eid}/json")
            resp.raise_for_status()
            data = resp.json()
            if data.get("Running"):
                return -1
            code = data.get("ExitCode")
            return int(code) if code is not None else -1
        return self._call("exec status", do)


class HttpStream:
    """A streamed Podman response: read by one thread, ended by any other.

    Ending must not block: gRPC runs a cancelled call's callbacks on the server's
    one polling thread, so a callback that blocks stops the whole NodeAgent
    server (every later Logs, Exec and Top call hit DEADLINE_EXCEEDED). Closing
    the response from another thread does block: http.client reads through a
    BufferedReader whose lock the blocked read holds until data comes, which
    for a quiet container is never (measured: close() waits until the socket
    is shut down). So `end()` only shuts the socket down (urllib3's
    HTTPResponse.shutdown, SHUT_RD: the blocked read returns at once and the
    peer's writes fail), and the reading thread closes the response when it
    leaves the `with` block. A lock keeps shutdown and close apart, so a
    shutdown never lands on a descriptor number that was closed and reused.
    """

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.raw = resp.raw
        self._lock = threading.Lock()
        self._closed = False
        self._ended = False

    def lines(self) -> Iterator[bytes]:
        yield from self._resp.iter_lines()

    def end(self) -> None:
        with self._lock:
            if self._closed or self._ended:
                return
            self._ended = True
            try:
                self.raw.shutdown()
            except (OSError, ValueError, RuntimeError, AttributeError):
                pass  # already released or closed: the reader is not blocked on it

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._resp.close()
        except Exception:  # closing a broken connection: nothing left to do
            pass

    def __enter__(self) -> HttpStream:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.close()
        # A read cut by end(), or a connection Podman dropped, ends the stream quietly.
        return exc_type is not None and issubclass(exc_type, _STREAM_ENDED)


class ExecSession:
    """One hijacked exec connection. `send`/`close_stdin` from one thread,
    `output()` and `close()` from another, `end()` from any (as HttpStream.end:
    a shutdown that wakes the reader and tells Podman we are gone, so the
    process sees its stdin close; never a close under a blocked reader)."""

    def __init__(self, runtime: Runtime, exec_id: str, tty: bool) -> None:
        self._runtime = runtime
        self.exec_id = exec_id
        self.tty = tty
        self._sock: socket.socket | None = None
        self._rest = b""
        self._lock = threading.Lock()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._runtime.call_timeout)
        sock.connect(self._runtime.socket_path)
        body = json.dumps({"Detach": False, "Tty": self.tty}).encode()
        head = (f"POST {LIBPOD_PREFIX}/exec/{self.exec_id}/start HTTP/1.1\r\n"
                "Host: d\r\nContent-Type: application/json\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock.sendall(head + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise RuntimeFailure("podman exec start: connection closed before the answer")
            buf += chunk
            if len(buf) > 65536:
                sock.close()
                raise RuntimeFailure("podman exec start: oversized answer")
        head_bytes, self._rest = buf.split(b"\r\n\r\n", 1)
        status_line = head_bytes.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split()
        if len(parts) < 2 or parts[1] not in ("101", "200"):
            sock.close()
            raise RuntimeFailure(f"podman exec start: {status_line}: "
                                 f"{self._rest.decode(errors='replace')[:300]}")
        sock.settimeout(None)
        self._sock = sock

    def send(self, data: bytes) -> None:
        if self._sock is not None and data:
            self._sock.sendall(data)

    def close_stdin(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def output(self) -> Iterator[tuple[int, bytes]]:
        """(1 for stdout / 2 for stderr, data) until the command ends."""
        sock = self._sock
        if sock is None:
            return
        reader = _SocketReader(sock, self._rest)
        try:
            if self.tty:
                while True:
                    data = reader.read_some()
                    if not data:
                        return
                    yield 1, data
            else:
                yield from iter_frames(reader)
        except OSError:
            return

    def exit_code(self) -> int:
        # The exit code is recorded a moment after the stream ends.
        for _ in range(50):
            code = self._runtime.exec_exit_code(self.exec_id)
            if code != -1:
                return code
            time.sleep(0.05)
        return -1

    def end(self) -> None:
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class _SocketReader:
    def __init__(self, sock: socket.socket, initial: bytes) -> None:
        self._sock = sock
        self._buf = initial

    def read_some(self) -> bytes:
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        return self._sock.recv(65536)

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                break
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


def iter_frames(stream: Any) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed stream: 8-byte header (stream, 0, 0, 0, big-endian size)."""
    while True:
        header = _read_exactly(stream, 8)
        if len(header) < 8:
            return
        kind, size = struct.unpack(">BxxxL", header)
        data = _read_exactly(stream, size)
        if data:
            yield kind, data
        if len(data) < size:
            return


def _read_exactly(stream: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def demux(data: bytes) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    pos = 0
    while pos + 8 <= len(data):
        kind, size = struct.unpack(">BxxxL", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + size]
        (err if kind == 2 else out).extend(chunk)
        pos += 8 + size
    return bytes(out), bytes(err)
