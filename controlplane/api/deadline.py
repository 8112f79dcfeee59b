"""The caller's deadline, carried from the gRPC call to the store write.

A client that gave up (DEADLINE_EXCEEDED) must not have its write keep being
resubmitted by the server afterwards: on a replica cut off from the others, a
write retried past the client's deadline would land once the partition heals,
long after the client was told it failed. So the servicer records the call's
deadline here (a context variable: gRPC's sync server runs each call on one
worker thread) and the handler bounds every store write by it.

In-process callers (the controllers) set no deadline and get the configured
write timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from corral.errors import Timeout

# Keep this much of the caller's time to send the answer back.
ANSWER_MARGIN = 0.05

_deadline: ContextVar[float | None] = ContextVar("corral_call_deadline", default=None)


@contextmanager
def caller_deadline(seconds_left: float | None) -> Iterator[None]:
    """Within this block, writes end by `seconds_left` from now (None: no bound)."""
    token = _deadline.set(None if seconds_left is None else time.monotonic() + seconds_left)
    try:
        yield
    finally:
        _deadline.reset(token)


def write_timeout(configured: float) -> float:
    """How long a store write may take: the configured timeout, cut to the caller's
    deadline. Raises Timeout (nothing written) when the caller's time is up."""
    deadline = _deadline.get()
    if deadline is None:
        return configured
    left = deadline - time.monotonic() - ANSWER_MARGIN
    if left <= 0:
        raise Timeout("the caller's deadline passed before the write was sent; nothing "
                      "was written")
    return min(configured, left)
