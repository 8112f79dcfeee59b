"""Mount points: which exist (from /proc/self/mountinfo) and unmounting those under a folder.

Podman's overlay driver bind-mounts its storage onto itself and mounts each
running container's root and /dev/shm under the host's state folder; a lab host
that loses power, or a lab being removed, must drop those before its folder can go.
`parse_mountinfo` is pure; the rest reads or changes the machine's mounts.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo (octal)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field) >= i + 4 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        rest = right.split()
        mounts.append(Mount(unescape(fields[4]), rest[0] if rest else "",
                            unescape(rest[1]) if len(rest) > 1 else ""))
    return mounts


def mounts() -> list[Mount]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return parse_mountinfo(f.read())


def under(folder: Path, table: list[Mount] | None = None) -> list[str]:
    """Mount points at or below `folder`, deepest first (the order to unmount in)."""
    top = os.path.realpath(folder)
    found = {m.mount_point for m in (table if table is not None else mounts())
             if m.mount_point == top or m.mount_point.startswith(top.rstrip("/") + "/")}
    return sorted(found, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_under(folder: Path) -> list[str]:
    """Lazily unmount everything at or below `folder`; return what was unmounted.
    Repeats until nothing is left, since a mount may be stacked on another."""
    done: list[str] = []
    for _ in range(10):
        points = under(folder)
        if not points:
            break
        for point in points:
            if _libc.umount2(point.encode(), MNT_DETACH) == 0:
                done.append(point)
            elif ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
                raise OSError(ctypes.get_errno(), f"umount {point}: "
                              f"{os.strerror(ctypes.get_errno())}")
    return done
