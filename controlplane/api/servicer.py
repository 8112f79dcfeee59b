"""The Resources gRPC service: decode, call the handler, map errors to status codes.

Thin on purpose: every decision lives in handler.py. A `corral.errors` exception
becomes `context.abort(code, message)`; UNAVAILABLE gets the leader's API
address from the member registry when one is known, so a person (or a client
with one endpoint) knows where to go. The request id arrives as gRPC metadata
"corral-request-id" and goes to the store, so a client's retry of a write
applies once. Object contents (Secret values in particular) are never logged.

Threading: gRPC's sync server calls these methods from its worker pool; each
Watch holds one worker for the life of its stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from controlplane.api import codec
from controlplane.api.deadline import caller_deadline
from controlplane.api.handler import Handler
from controlplane.store.base import Store
from corral import kinds
from corral.client import REQUEST_ID_HEADER
from corral.errors import CorralError, Internal, Invalid, Unavailable
from corral.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

_EVENT_TYPES = {
    "ADDED": api_pb2.ADDED,
    "MODIFIED": api_pb2.MODIFIED,
    "DELETED": api_pb2.DELETED,
    "BOOKMARK": api_pb2.BOOKMARK,
}


def request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            return str(value)[:128]
    return ""


def leader_hint(store: Store) -> str:
    """Where the leader's API is, as a sentence ("" when no leader is known)."""
    try:
        status = store.local_status()
        members = store.members()
    except Exception:  # a hint must never hide the original error
        return ""
    leader = status.leader
    if not leader:
        return ""
    for m in members:
        if leader in (m.raft_address, m.name):
            where = m.api_address or (f"unix:{m.socket}" if m.socket else "")
            if where:
                return f"the leader is {m.name} at {where}"
            return f"the leader is {m.name} (raft {m.raft_address}; no API address registered)"
    return f"the leader is at raft address {leader} (its API address is not registered yet)"


def abort(context: grpc.ServicerContext, err: CorralError, store: Store | None = None) -> NoReturn:
    message = err.message
    if isinstance(err, Unavailable) and err.leader and "leader" not in message:
        message = f"{message}; the leader's API is at {err.leader}: retry there"
    elif isinstance(err, Unavailable) and store is not None and not err.leader:
        hint = leader_hint(store)
        if hint:
            message = f"{message}; {hint}: retry there, or retry here once it is reachable"
        else:
            message = (f"{message}; no leader is known: a majority of the control plane "
                       "members must be up and connected; retry when they are")
    context.abort(err.code, message)
    raise AssertionError("context.abort returned")  # it raises; this tells mypy


def call(context: grpc.ServicerContext, store: Store, fn: Callable[[], T]) -> T:
    try:
        with caller_deadline(context.time_remaining()):
            return fn()
    except CorralError as err:
        abort(context, err, store)
    except Exception as err:
        log.exception("internal error")
        abort(context, Internal(f"internal error: {type(err).__name__}: {err}"), store)


def unwrap(obj: api_pb2.Object) -> Any:
    if obj.WhichOneof("kind") is None:
        raise Invalid("required value: an object with one kind set", "object")
    return kinds.unwrap(obj)[1]


class ResourcesServicer(api_pb2_grpc.ResourcesServicer):
    def __init__(self, handler: Handler) -> None:
        self._h = handler
        self._store = handler.store

    def Create(self, request: api_pb2.CreateRequest,
               context: grpc.ServicerContext) -> api_pb2.Object:
        rid = request_id(context)
        return call(context, self._store, lambda: kinds.wrap(
            self._h.create(unwrap(request.object), dry_run=request.dry_run, request_id=rid)))

    def Get(self, request: api_pb2.GetRequest, context: grpc.ServicerContext) -> api_pb2.Object:
        return call(context, self._store, lambda: kinds.wrap(
            self._h.get(request.kind, request.namespace, request.name, stale=request.stale)))

    def List(self, request: api_pb2.ListRequest,
             context: grpc.ServicerContext) -> api_pb2.ListResponse:
        def run() -> api_pb2.ListResponse:
            records, rev = self._h.list_records(request.kind, request.namespace,
                                                label_selector=request.label_selector,
                                                field_selector=request.field_selector,
                                                stale=request.stale)
            resp = api_pb2.ListResponse(resource_version=str(rev))
            for rec in records:
                codec.fill_envelope(resp.items.add(), rec)
            return resp
        return call(context, self._store, run)

    def Update(self, request: api_pb2.UpdateRequest,
               context: grpc.ServicerContext) -> api_pb2.Object:
        rid = request_id(context)
        return call(context, self._store, lambda: kinds.wrap(
            self._h.update(unwrap(request.object), dry_run=request.dry_run, request_id=rid)))

    def UpdateStatus(self, request: api_pb2.UpdateRequest,
                     context: grpc.ServicerContext) -> api_pb2.Object:
        rid = request_id(context)
        return call(context, self._store, lambda: kinds.wrap(
            self._h.update_status(unwrap(request.object), dry_run=request.dry_run,
                                  request_id=rid)))

    def Delete(self, request: api_pb2.DeleteRequest,
               context: grpc.ServicerContext) -> api_pb2.DeleteResponse:
        rid = request_id(context)

        def run() -> api_pb2.DeleteResponse:
            grace = request.grace_period_seconds if request.HasField(
                "grace_period_seconds") else None
            obj, removed = self._h.delete(
                request.kind, request.namespace, request.name,
                grace_period_seconds=grace, propagation_policy=request.propagation_policy,
                precondition_resource_version=request.precondition_resource_version,
                precondition_uid=request.precondition_uid, dry_run=request.dry_run,
                request_id=rid)
            return api_pb2.DeleteResponse(object=kinds.wrap(obj), removed=removed)
        return call(context, self._store, run)

    def Apply(self, request: api_pb2.ApplyRequest,
              context: grpc.ServicerContext) -> api_pb2.ApplyResponse:
        rid = request_id(context)

        def run() -> api_pb2.ApplyResponse:
            obj, result = self._h.apply(unwrap(request.object), dry_run=request.dry_run,
                                        request_id=rid)
            return api_pb2.ApplyResponse(object=kinds.wrap(obj), result=result)
        return call(context, self._store, run)

    def Watch(self, request: api_pb2.WatchRequest,
              context: grpc.ServicerContext) -> Iterator[api_pb2.WatchEvent]:
        stream = call(context, self._store, lambda: self._h.watch(
            request.kind, request.namespace, label_selector=request.label_selector,
            field_selector=request.field_selector, resource_version=request.resource_version,
            allow_bookmarks=request.allow_bookmarks))
        info = self._h.kind_info(request.kind)
        # The client cancelling (or going away) wakes the stream at once.
        context.add_callback(stream.cancel)
        try:
            for ev in stream.events(context.is_active):
                out = api_pb2.WatchEvent(type=_EVENT_TYPES[ev.type],
                                         resource_version=str(ev.revision))
                if ev.record is None:
                    bookmark = getattr(out.object, info.field)
                    bookmark.api_version = info.api_version
                    bookmark.kind = info.kind
                    bookmark.metadata.resource_version = str(ev.revision)
                else:
                    codec.fill_envelope(out.object, ev.record)
                yield out
        except CorralError as err:
            abort(context, err, self._store)
