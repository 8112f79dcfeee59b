"""The Corral API client every tool uses: the CLI, node agents, proxies, controllers.

Threads model: a Client is thread-safe (gRPC channels are); a WatchStream is
consumed by one thread.

Endpoints are "host:port" or "unix:/path/to/socket"; several may be given, and
a call that finds its replica unreachable (or without quorum) moves to the next
one and retries until `retry_for` seconds have passed. Writes carry a request
id (gRPC metadata "corral-request-id") that the store remembers, so a retry of a
write whose first attempt did land returns that first result instead of
applying twice: retries are safe for every call.

Errors are `corral.errors` exceptions (NotFound, Conflict, Invalid, ...), the
same classes the server raised.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from corral import kinds
from corral.errors import CorralError, Unavailable, from_rpc_error
from corral.limits import CLIENT_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "corral-request-id"


def normalize_endpoint(endpoint: str) -> str:
    """gRPC target for "host:port", "unix:/p", "unix:///p" or a bare socket path."""
    endpoint = endpoint.strip()
    if endpoint.startswith("/"):
        return f"unix:{endpoint}"
    return endpoint


def _kind_name(kind: str | kinds.KindInfo) -> str:
    return kind.kind if isinstance(kind, kinds.KindInfo) else kinds.resolve(kind).kind


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "ADDED", "MODIFIED", "DELETED", "BOOKMARK"
    object: Any  # the kind message (for BOOKMARK: an empty one with resourceVersion)
    resource_version: str


class WatchStream:
    """An iterator of WatchEvents from one replica. `cancel()` ends it from any thread.

    Iteration raises `corral.errors.Expired` when the requested resourceVersion is
    older than the replica's history, and `Unavailable` when the replica goes away.
    """

    def __init__(self, call: Any, endpoint: str) -> None:
        self._call = call
        self.endpoint = endpoint

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            for ev in self._call:
                if ev.object.WhichOneof("kind") is None:
                    obj: Any = None
                else:
                    _, obj = kinds.unwrap(ev.object)
                yield WatchEvent(
                    api_pb2.WatchEventType.Name(ev.type), obj, ev.resource_version
                )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(err) from None

    def cancel(self) -> None:
        self._call.cancel()


class Client:
    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 15.0,
        retry_for: float = 20.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise Unavailable(
                "no control plane endpoint given (use --server, CORRAL_SERVER or a config file)"
            )
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self.retry_for = retry_for
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._current = 0

    # ---- plumbing ------------------------------------------------------------
    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(endpoint)
            if ch is None:
                ch = grpc.insecure_channel(endpoint, options=CLIENT_OPTIONS)
                self._channels[endpoint] = ch
            return ch

    def _stub(self, service: str, endpoint: str) -> Any:
        stub = self._stubs.get((service, endpoint))
        if stub is None:
            stub = _STUBS[service](self._channel(endpoint))
            self._stubs[(service, endpoint)] = stub
        return stub

    def _endpoint(self) -> str:
        with self._lock:
            return self.endpoints[self._current % len(self.endpoints)]

    def _rotate(self, failed: str) -> None:
        with self._lock:
            if self.endpoints[self._current % len(self.endpoints)] == failed:
                self._current += 1

    def _call(self, service: str, method: str, request: Message, *, write: bool = False,
              timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        metadata = [(REQUEST_ID_HEADER, uuid.uuid4().hex)] if write else []
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        last: CorralError | None = None
        tried: set[str] = set()
        while True:
            endpoint = self._endpoint()
            stub = self._stub(service, endpoint)
            try:
                return getattr(stub, method)(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as err:
                exc = from_rpc_error(err)
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise exc from None
                last = exc
                tried.add(endpoint)
                log.debug("%s.%s on %s: %s", service, method, endpoint, exc)
                self._rotate(endpoint)
            if time.monotonic() >= deadline:
                where = ", ".join(sorted(tried))
                raise Unavailable(f"no control plane replica answered ({where}): {last}") from None
            # Try every endpoint once quickly, then back off.
            if len(tried) >= len(self.endpoints):
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- resources -----------------------------------------------------------
    def create(self, obj: Message, *, dry_run: bool = False) -> Any:
        req = api_pb2.CreateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        return kinds.unwrap(self._call("Resources", "Create", req, write=True))[1]

    def get(self, kind: str | kinds.KindInfo, name: str, namespace: str = "", *,
            stale: bool = False) -> Any:
        req = api_pb2.GetRequest(kind=_kind_name(kind), namespace=namespace, name=name,
                                 stale=stale)
        return kinds.unwrap(self._call("Resources", "Get", req))[1]

    def list(self, kind: str | kinds.KindInfo, namespace: str = "", *,
             label_selector: str = "", field_selector: str = "",
             stale: bool = False) -> tuple[list[Any], str]:
        """(objects, resourceVersion to watch from)."""
        req = api_pb2.ListRequest(kind=_kind_name(kind), namespace=namespace,
                                  label_selector=label_selector,
                                  field_selector=field_selector, stale=stale)
        resp = self._call("Resources", "List", req)
        return [kinds.unwrap(o)[1] for o in resp.items], resp.resource_version

    def update(self, obj: Message, *, dry_run: bool = False) -> Any:
        req = api_pb2.UpdateRequest(object=kinds.wrap(obj), dry_run=dry_run)
        return kinds.unwrap(self._call("Resources", "Update", req, write=True))[1]

    def update_status(self, obj: Message) -> Any:
        req = api_pb2.UpdateRequest(object=kinds.wrap(obj))
        return kinds.unwrap(self._call("Resources", "UpdateStatus", req, write=True))[1]

    def delete(self, kind: str | kinds.KindInfo, name: str, namespace: str = "", *,
               grace_period_seconds: int | None = None, propagation_policy: str = "",
               precondition_resource_version: str = "", precondition_uid: str = "",
               dry_run: bool = False) -> tuple[Any, bool]:
        """(the object as removed or as it is now, removed?)."""
        req = api_pb2.DeleteRequest(
            kind=_kind_name(kind), namespace=namespace, name=name,
            propagation_policy=propagation_policy,
            precondition_resource_version=precondition_resource_version,
            precondition_uid=precondition_uid, dry_run=dry_run,
        )
        if grace_period_seconds is not None:
            req.grace_period_seconds = grace_period_seconds
        resp = self._call("Resources", "Delete", req, write=True)
        obj = kinds.unwrap(resp.object)[1] if resp.object.WhichOneof("kind") else None
        return obj, resp.removed

    def apply(self, obj: Message, *, dry_run: bool = False) -> tuple[Any, str]:
        """(the object, "created" | "configured" | "unchanged")."""
        req = api_pb2.ApplyRequest(object=kinds.wrap(obj), dry_run=dry_run)
        resp = self._call("Resources", "Apply", req, write=True)
        return kinds.unwrap(resp.object)[1], resp.result

    def watch(self, kind: str | kinds.KindInfo, namespace: str = "", *,
              label_selector: str = "", field_selector: str = "",
              resource_version: str = "", allow_bookmarks: bool = False,
              timeout: float | None = None) -> WatchStream:
        """A stream from the current endpoint. Does not fail over by itself: use
        `corral.informer.Informer` for a watch that survives replica loss."""
        req = api_pb2.WatchRequest(kind=_kind_name(kind), namespace=namespace,
                                   label_selector=label_selector,
                                   field_selector=field_selector,
                                   resource_version=resource_version,
                                   allow_bookmarks=allow_bookmarks)
        endpoint = self._endpoint()
        stub = api_pb2_grpc.ResourcesStub(self._channel(endpoint))
        call = stub.Watch(req, timeout=timeout)
        return WatchStream(call, endpoint)

    def rotate_endpoint(self, failed: str) -> None:
        """Move off an endpoint a caller found broken (e.g. a dead watch stream)."""
        self._rotate(failed)

    # ---- cluster ---------------------------------------------------------------
    def cluster_status(self) -> api_pb2.ClusterStatus:
        return self._call("Cluster", "Status", api_pb2.ClusterStatusRequest())  # type: ignore[no-any-return]

    def local_status(self) -> api_pb2.MemberStatus:
        return self._call("Cluster", "LocalStatus", api_pb2.MemberStatusRequest())  # type: ignore[no-any-return]

    # ---- pods --------------------------------------------------------------------
    def logs(self, name: str, namespace: str, *, container: str = "", follow: bool = False,
             tail_lines: int | None = None, previous: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        req = api_pb2.PodLogsRequest(namespace=namespace, name=name, container=container,
                                     follow=follow, previous=previous, timestamps=timestamps)
        if tail_lines is not None:
            req.tail_lines = tail_lines
        endpoint = self._endpoint()
        stub = api_pb2_grpc.PodsStub(self._channel(endpoint))
        call = stub.Logs(req, timeout=None if follow else self.timeout)
        try:
            for chunk in call:
                yield chunk.data
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(err) from None

    def exec_stream(self, requests: Iterable[api_pb2.ExecRequest],
                    timeout: float | None = None) -> Iterator[api_pb2.ExecResponse]:
        endpoint = self._endpoint()
        stub = api_pb2_grpc.PodsStub(self._channel(endpoint))
        try:
            yield from stub.Exec(iter(requests), timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def exec(self, name: str, namespace: str, command: Sequence[str], *, container: str = "",
             stdin: bytes | None = None, timeout: float | None = 60.0) -> tuple[bytes, bytes, int]:
        """Run a command in a pod's container; (stdout, stderr, exit code)."""
        start = api_pb2.ExecStart(namespace=namespace, name=name, container=container,
                                  command=list(command), stdin=stdin is not None)

        def requests() -> Iterator[api_pb2.ExecRequest]:
            yield api_pb2.ExecRequest(start=start)
            if stdin is not None:
                if stdin:
                    yield api_pb2.ExecRequest(stdin=stdin)
                yield api_pb2.ExecRequest(stdin_eof=True)

        out, err, code = bytearray(), bytearray(), -1
        for resp in self.exec_stream(requests(), timeout=timeout):
            out += resp.stdout
            err += resp.stderr
            if resp.HasField("exit_code"):
                code = resp.exit_code
        return bytes(out), bytes(err), code

    def top(self, namespace: str = "", name: str = "",
            label_selector: str = "") -> api_pb2.TopResponse:
        req = api_pb2.TopRequest(namespace=namespace, name=name, label_selector=label_selector)
        return self._call("Pods", "Top", req)  # type: ignore[no-any-return]


_STUBS: dict[str, Any] = {
    "Resources": api_pb2_grpc.ResourcesStub,
    "Cluster": api_pb2_grpc.ClusterStub,
    "Pods": api_pb2_grpc.PodsStub,
}
