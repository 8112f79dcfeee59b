"""A 3-member etcd 3.4 cluster on loopback and a minimal native gRPC client for it.

Not a test: a baseline for bench/controlplane_bench.py. The etcd members are
Debian's `etcd` binary, started on free ports in a temporary folder with
their default settings (they fsync before acknowledging) and stopped by PID.

The client speaks etcd's own gRPC API (`etcdserverpb.KV/Put`) through grpcio,
the same stack as corral.client, so both systems are measured through the
same kind of client. It encodes the two fields it sends (PutRequest.key = 1,
value = 2, both bytes) by hand instead of shipping etcd's .proto files.

Threading: `EtcdCluster` is used from one thread; `EtcdClient` is thread-safe
(gRPC channels are).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc

from tests.ports import free_port

_PUT = "/etcdserverpb.KV/Put"
_STATUS = "/etcdserverpb.Maintenance/Status"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def status_fields(data: bytes) -> dict[int, int]:
    """Varint fields of a StatusResponse (4 = leader id, 7 = raft term) and of its
    header (submessage 1: 1 = cluster id, 2 = member id)."""
    out: dict[int, int] = {}
    i = 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out[field] = value
        elif wire == 2:
            length, i = _read_varint(data, i)
            if field == 1:  # ResponseHeader
                for k, v in status_fields(data[i : i + length]).items():
                    out[100 + k] = v
            i += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


class EtcdCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.names = [f"e{i}" for i in range(size)]
        self.client_port = {n: free_port() for n in self.names}
        self.peer_port = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for n in self.names:
            self.start(n)

    def endpoint(self, name: str) -> str:
        return f"127.0.0.1:{self.client_port[name]}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(n) for n in self.names]

    def start(self, name: str) -> None:
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_port[n]}" for n in self.names)
        data = self.root / name
        state = "existing" if data.exists() else "new"
        log = (self.root / f"{name}.log").open("ab")
        try:
            self.procs[name] = subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", str(data),
                 "--listen-client-urls", f"http://127.0.0.1:{self.client_port[name]}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.client_port[name]}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port[name]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port[name]}",
                 "--initial-cluster", initial, "--initial-cluster-state", state,
                 "--initial-cluster-token", f"bench-{os.getpid()}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def status(self, name: str, timeout: float = 1.0) -> dict[int, int]:
        with grpc.insecure_channel(self.endpoint(name)) as ch:
            call = ch.unary_unary(_STATUS, request_serializer=None, response_deserializer=None)
            return status_fields(call(b"", timeout=timeout))

    def leader(self, timeout: float = 30.0) -> str:
        """Name of the member that leads (by asking each for its status)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.names:
                if self.procs[n].poll() is not None:
                    continue
                try:
                    st = self.status(n)
                except grpc.RpcError:
                    continue
                if st.get(4) and st.get(4) == st.get(102):  # leader id == own member id
                    return n
            time.sleep(0.1)
        raise TimeoutError("etcd has no leader")

    def wait_ready(self, timeout: float = 60.0) -> None:
        client = EtcdClient(self.endpoints)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.put(b"bench-ready", b"1", timeout=2.0)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            client.close()

    def close(self) -> None:
        for n in self.names:
            with contextlib.suppress(Exception):
                self.kill(n)


class EtcdClient:
    """Puts over etcd's gRPC API, moving to the next endpoint when one fails."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = list(endpoints)
        self._channels = [grpc.insecure_channel(e) for e in self.endpoints]
        self._puts = [ch.unary_unary(_PUT, request_serializer=None, response_deserializer=None)
                      for ch in self._channels]
        self._current = 0

    def put(self, key: bytes, value: bytes, timeout: float = 10.0) -> bytes:
        i = self._current % len(self._puts)
        return self._puts[i](put_request(key, value), timeout=timeout)  # type: ignore[no-any-return]

    def put_retrying(self, key: bytes, value: bytes, retry_for: float = 30.0,
                     timeout: float = 2.0) -> bytes:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return self.put(key, value, timeout=timeout)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                self._current += 1

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
