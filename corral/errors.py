"""Corral's one exception hierarchy, shared by the server, the client and the CLI.

    CorralError                      every error Corral raises on purpose
     ├── NotFound                    NOT_FOUND
     ├── AlreadyExists               ALREADY_EXISTS
     ├── Conflict                    ABORTED: a resourceVersion/uid precondition failed
     ├── Invalid                     INVALID_ARGUMENT: names the field path(s)
     ├── FailedPrecondition          FAILED_PRECONDITION: e.g. an immutable field changed
     ├── Expired                     OUT_OF_RANGE: watch from a revision older than history
     ├── Unavailable                 UNAVAILABLE: no quorum, no leader, replica unreachable
     ├── Timeout                     DEADLINE_EXCEEDED: the outcome of a write is unknown
     ├── TooLarge                    RESOURCE_EXHAUSTED: object over the size cap
     └── Internal                    INTERNAL: a bug; the message says where

The gRPC status code is the wire form; `to_status` and `from_rpc_error` map both
ways so a client sees the same class the server raised.
"""

from __future__ import annotations

import grpc


class CorralError(Exception):
    """Base of every error Corral raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(CorralError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CorralError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(CorralError):
    code = grpc.StatusCode.ABORTED


class Invalid(CorralError):
    """Validation failed. `field` is the path of the first bad field, if known."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class FailedPrecondition(CorralError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Expired(CorralError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(CorralError):
    """No quorum or no reachable replica. `leader` is the last known leader's address."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class Timeout(CorralError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class TooLarge(CorralError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(CorralError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[CorralError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Conflict,
        Invalid,
        FailedPrecondition,
        Expired,
        Unavailable,
        Timeout,
        TooLarge,
        Internal,
    )
}


def from_rpc_error(err: grpc.RpcError) -> CorralError:
    """The CorralError a failed gRPC call stands for (message kept as the server wrote it)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    cls = _BY_CODE.get(code, CorralError)
    if cls is Invalid:
        exc: CorralError = Invalid(details)
    else:
        exc = cls(details)
    exc.code = code
    return exc


def to_status(err: CorralError) -> tuple[grpc.StatusCode, str]:
    return err.code, err.message
