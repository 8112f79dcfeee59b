"""The lab's one error type.

A LabError is a CorralError, so the CLI prints it as every other error ("error: ...",
exit 1). Its message says what is wrong, where, and what to do about it.
"""

from __future__ import annotations

import grpc

from corral.errors import CorralError


class LabError(CorralError):
    """Something the lab cannot do (bad input, missing tool, a host that did not come up)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
