"""The API as `corral.client.Client` offers it, served in-process by this replica's Handler.

The controllers and the scheduler run inside the leader's process, beside the
API server. Going through gRPC to the replica's own socket costs, per call,
a protobuf encode and decode on each side, a socket round trip and two thread
hand-offs, and every watch event is encoded by the server and decoded again
by each informer, all under the one GIL the API server also needs. Calling
the Handler directly keeps every rule of the API (validation, defaulting,
compare-and-set, the read barrier, request ids for retries) and skips only the
transport: bench/scheduler_bench.py measures the difference (`in_process`).

Only the calls the controllers use are here; errors are the Handler's
CorralError classes, exactly what the gRPC client would have raised.

Threads model: as thread-safe as the Handler (gRPC calls it from many threads);
a LocalWatch is consumed by one thread and cancelled from any.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from controlplane.api import codec
from corral import kinds
from corral.client import WatchEvent


def _kind(kind: str | kinds.KindInfo) -> str:
    return kind.kind if isinstance(kind, kinds.KindInfo) else kinds.resolve(kind).kind


def _rid() -> str:
    return uuid.uuid4().hex


class LocalWatch:
    endpoint = "in-process"

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[WatchEvent]:
        for ev in self._stream.events():
            if ev.record is None:
                yield WatchEvent("BOOKMARK", None, str(ev.revision))
            else:
                yield WatchEvent(ev.type, codec.decode(ev.record), str(ev.revision))

    def cancel(self) -> None:
        self._stream.cancel()


class LocalClient:
    endpoints = ("in-process",)

    def __init__(self, handler: Any) -> None:
        self._h = handler

    def create(self, obj: Any, *, dry_run: bool = False) -> Any:
        return self._h.create(obj, dry_run=dry_run, request_id=_rid())

    def get(self, kind: str | kinds.KindInfo, name: str, namespace: str = "", *,
            stale: bool = False) -> Any:
        return self._h.get(_kind(kind), namespace, name, stale=stale)

    def list(self, kind: str | kinds.KindInfo, namespace: str = "", *,
             label_selector: str = "", field_selector: str = "",
             stale: bool = False) -> tuple[list[Any], str]:
        items, rev = self._h.list(_kind(kind), namespace, label_selector=label_selector,
                                  field_selector=field_selector, stale=stale)
        return items, str(rev)

    def update(self, obj: Any, *, dry_run: bool = False) -> Any:
        return self._h.update(obj, dry_run=dry_run, request_id=_rid())

    def update_status(self, obj: Any) -> Any:
        return self._h.update_status(obj, request_id=_rid())

    def delete(self, kind: str | kinds.KindInfo, name: str, namespace: str = "", *,
               grace_period_seconds: int | None = None, propagation_policy: str = "",
               precondition_resource_version: str = "", precondition_uid: str = "",
               dry_run: bool = False) -> tuple[Any, bool]:
        return self._h.delete(_kind(kind), namespace, name,  # type: ignore[no-any-return]
                              grace_period_seconds=grace_period_seconds,
                              propagation_policy=propagation_policy,
                              precondition_resource_version=precondition_resource_version,
                              precondition_uid=precondition_uid, dry_run=dry_run,
                              request_id=_rid())

    def apply(self, obj: Any, *, dry_run: bool = False) -> tuple[Any, str]:
        return self._h.apply(obj, dry_run=dry_run, request_id=_rid())  # type: ignore[no-any-return]

    def watch(self, kind: str | kinds.KindInfo, namespace: str = "", *,
              label_selector: str = "", field_selector: str = "",
              resource_version: str = "", allow_bookmarks: bool = False,
              timeout: float | None = None) -> LocalWatch:
        return LocalWatch(self._h.watch(_kind(kind), namespace, label_selector=label_selector,
                                        field_selector=field_selector,
                                        resource_version=resource_version,
                                        allow_bookmarks=allow_bookmarks))

    def rotate_endpoint(self, failed: str) -> None:
        """One endpoint only: nothing to rotate to."""

    def close(self) -> None:
        """Nothing to close: the Handler belongs to the replica."""
