"""Named network namespaces (/run/netns/NAME, as `ip netns` makes them), without fork.

pyroute2's netns helpers fork a child to unshare or setns; forking a process
that runs gRPC threads is unsafe (gRPC says so when it happens). A network
namespace belongs to a thread, not to the process, so these helpers do the
namespace work on a short-lived thread of their own instead: `create` unshares
a new namespace on that thread and bind-mounts /proc/thread-self/ns/net;
`socket_in` switches that thread into the namespace, opens a netlink socket
(which stays bound to the namespace it was made in) and hands it to
pyroute2's `IPRoute(use_socket=...)`. The thread ends right after, so no other
thread ever runs in a foreign namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
T = TypeVar("T")


def _oserror(what: str, name: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what} {name}: {os.strerror(err)}")


def _on_thread(fn: Callable[[], T]) -> T:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="netns-helper", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _share_rundir() -> None:
    """Make /run/netns a shared mount (iproute2 does the same)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    done = False
    while _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
        if done:
            raise _oserror("share", NETNS_DIR)
        if _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC,
                       None) != 0:
            raise _oserror("bind", NETNS_DIR)
        done = True


def create(name: str) -> None:
    """A new, empty network namespace named `name` (EEXIST if it exists)."""
    target = path(name)
    _share_rundir()
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)

    def work() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _oserror("unshare", name)
        if _libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND,
                       None) != 0:
            raise _oserror("mount", name)

    try:
        _on_thread(work)
    except OSError:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise


def remove(name: str) -> None:
    target = path(name)
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def socket_in(name_or_path: str, protocol: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket living in the namespace (a name under /run/netns or a path)."""
    target = name_or_path if name_or_path.startswith("/") else path(name_or_path)

    def work() -> socket.socket:
        fd = os.open(target, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise _oserror("setns", target)
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol)

    return _on_thread(work)
