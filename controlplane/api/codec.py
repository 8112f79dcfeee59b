"""Objects to store bytes and back, deterministically, within the size cap.

The stored form is the corral.v1.Object envelope serialized with
`deterministic=True` (map entries sorted), with metadata.resourceVersion left
empty: the store's Record.revision is the resourceVersion, filled in on read.
Determinism matters twice: every replica stores identical bytes (the
convergence digest compares them), and Apply can say "unchanged" by comparing
bytes.

Pure functions; safe from any thread.
"""

from __future__ import annotations

from typing import Any

from controlplane.store.base import Record
from corral import kinds
from corral.errors import TooLarge
from corral.limits import MAX_OBJECT_BYTES
from corral.v1 import api_pb2


def encode(obj: Any) -> bytes:
    """The stored bytes of a kind message (its resourceVersion is not stored)."""
    env = kinds.wrap(obj)
    inner = getattr(env, env.WhichOneof("kind") or "")
    rv = inner.metadata.resource_version
    if rv:
        # wrap() copied the message: clearing here does not touch the caller's object.
        inner.metadata.resource_version = ""
    data = env.SerializeToString(deterministic=True)
    check_size(obj, len(data))
    return data


def check_size(obj: Any, size: int) -> None:
    if size > MAX_OBJECT_BYTES:
        raise TooLarge(
            f"{kinds.describe(obj)} is too large: {size} bytes serialized "
            f"({size / 1048576:.2f} MiB); the limit is {MAX_OBJECT_BYTES} bytes (1 MiB)"
        )


def decode(record: Record) -> Any:
    """The kind message of a stored record, with resourceVersion filled in."""
    env = api_pb2.Object()
    env.ParseFromString(record.data)
    _, msg = kinds.unwrap(env)
    msg.metadata.resource_version = str(record.revision)
    return msg


def fill_envelope(target: api_pb2.Object, record: Record) -> None:
    """Parse a record straight into an Object inside a response (a List item, a
    watch event): no intermediate message and no copy, which matters for Lists
    of thousands and for watch fan-out."""
    target.ParseFromString(record.data)
    field = target.WhichOneof("kind") or ""
    getattr(target, field).metadata.resource_version = str(record.revision)


def copy(obj: Any) -> Any:
    out = type(obj)()
    out.CopyFrom(obj)
    return out
