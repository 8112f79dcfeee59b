"""The DNS transport: UDP and TCP listeners, and forwarding to upstream resolvers.

Threads model (threads, no asyncio, like the rest of the proxy):
- one UDP receiver thread hands each datagram to a bounded pool of worker
  threads (a query forwarded upstream may block for `timeout`; the pool keeps
  that from stalling cluster names) and drops datagrams when `max_pending`
  are already waiting (clients retry: better than unbounded memory);
- one TCP accept thread, and one thread per connection (at most
  `max_connections`), reading length-prefixed queries until the client closes
  or is idle for `tcp_idle` seconds (RFC 7766 allows several per connection).
`stop()` closes the sockets; every thread ends on its next socket error.

dnslib parses and builds packets (dnsresolver.py); this module moves bytes.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

Handler = Callable[[bytes, bool], "bytes | None"]


def resolv_conf_nameservers(path: str | Path, exclude: Sequence[str] = ()) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, minus `exclude` (our own addresses:
    forwarding to ourselves would loop)."""
    out: list[str] = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in exclude:
            out.append(parts[1])
    return out


def _split_hostport(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if sep and host and port.isdigit():
        return host.strip("[]"), int(port)
    return server, 53


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class UpstreamForwarder:
    """Forwards raw queries to the first upstream that answers (UDP, then TCP on TC)."""

    def __init__(self, servers: Sequence[str], timeout: float = 2.0) -> None:
        self.servers = [_split_hostport(s) for s in servers]
        self.timeout = timeout

    def forward(self, packet: bytes, tcp: bool) -> bytes | None:
        for host, port in self.servers:
            try:
                if not tcp:
                    reply = self._udp(packet, host, port)
                    if reply is not None and len(reply) > 2 and not reply[2] & 0x02:
                        return reply
                    # Truncated (TC bit): ask again over TCP for the whole answer.
                reply = self._tcp(packet, host, port)
                if reply is not None:
                    return reply
            except OSError as err:
                log.debug("upstream %s:%d: %s", host, port, err)
        return None

    def _udp(self, packet: bytes, host: str, port: int) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(self.timeout)
            s.connect((host, port))
            s.send(packet)
            while True:
                reply = s.recv(65535)
                if reply[:2] == packet[:2]:  # same query id; else a stray reply
                    return reply

    def _tcp(self, packet: bytes, host: str, port: int) -> bytes | None:
        with socket.create_connection((host, port), timeout=self.timeout) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            head = _recv_exact(s, 2)
            if head is None:
                return None
            return _recv_exact(s, struct.unpack("!H", head)[0])


class DnsServer:
    def __init__(self, handler: Handler, address: str, port: int, *, workers: int = 8,
                 max_pending: int = 512, max_connections: int = 64,
                 tcp_idle: float = 10.0) -> None:
        self.handler = handler
        self.address = address
        self.port = port
        self.tcp_idle = tcp_idle
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns-worker")
        self._pending = threading.BoundedSemaphore(max_pending)
        self._connections = threading.BoundedSemaphore(max_connections)
        self._stopped = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> DnsServer:
        """Bind both sockets (port 0: one free port for both) and start serving."""
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind((self.address, self.port))
            self.port = tcp.getsockname()[1]
            udp.bind((self.address, self.port))
        except OSError:
            tcp.close()
            udp.close()
            raise
        tcp.listen(64)
        self._tcp, self._udp = tcp, udp
        for target, name in ((self._serve_udp, "dns-udp"), (self._serve_tcp, "dns-tcp")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopped.set()
        for s in (self._udp, self._tcp):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        for t in self._threads:
            t.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- UDP ------------------------------------------------------------------------
    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stopped.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                return
            if not self._pending.acquire(blocking=False):
                log.debug("DNS: %s dropped, too many queries waiting", peer)
                continue
            try:
                self._pool.submit(self._answer_udp, sock, data, peer)
            except RuntimeError:  # pool shut down
                self._pending.release()
                return

    def _answer_udp(self, sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        try:
            reply = self.handler(data, False)
            if reply is not None:
                sock.sendto(reply, peer)
        except OSError as err:
            log.debug("DNS reply to %s: %s", peer, err)
        finally:
            self._pending.release()

    # ---- TCP ------------------------------------------------------------------------
    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stopped.is_set():
            try:
                conn, peer = self._tcp.accept()
            except OSError:
                return
            if not self._connections.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._connection, args=(conn, peer), name="dns-tcp-conn",
                             daemon=True).start()

    def _connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            conn.settimeout(self.tcp_idle)
            while not self._stopped.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = self.handler(data, True)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError as err:
            log.debug("DNS TCP %s: %s", peer, err)
        finally:
            conn.close()
            self._connections.release()
