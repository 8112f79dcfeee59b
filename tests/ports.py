"""Free loopback TCP ports for the processes and stores a test starts.

Why not simply bind port 0 and hand the number on: that number comes from the
kernel's ephemeral range, the same range every outgoing connection's local port
comes from. Between the moment a test picks a port and the moment its server
binds it, a Raft peer or gRPC client connecting somewhere can be given that very
port as its local end, and the bind fails with "Address already in use" (seen in
a full run: tests/store, three in-process stores whose peers connect to each
other at once). Ports below the ephemeral range are only ever taken by an
explicit bind, so a port found free there stays free until the test binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody has bound, below the ephemeral range,
    never the same twice in this process."""
    high = _ephemeral_low()
    if high - _LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(_LOWEST, high)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    # A machine whose ephemeral range starts low: the kernel's choice.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port
