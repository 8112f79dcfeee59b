"""Atomic updates of a folder of projected files (ConfigMap and Secret volumes),
the way kubelet's AtomicWriter does it.

Layout of a target folder:

    ..2026_11_23_10_00_00.123456789/   the payload, complete
    ..data -> ..2026_11_23_10_00_00.123456789
    key1 -> ..data/key1                 what containers see

An update writes a new timestamped folder, points a temporary symlink at it and
renames that over `..data` (rename is atomic), so a reader sees the old payload or
the new one, never a mix; then it adds/removes the user-visible symlinks and
removes the old folder. All symlinks are relative, so the folder can be bind
mounted anywhere. No threads; the caller serializes writes per folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"

Payload = Mapping[str, tuple[bytes, int]]  # relative path -> (content, mode)


class PayloadError(Exception):
    pass


def check_path(path: str) -> None:
    if not path or path.startswith("/") or ".." in path.split("/") or path.startswith(".."):
        raise PayloadError(f"invalid path {path!r}: must be relative, without '..' and "
                           "not start with '..'")


def current(target: Path) -> dict[str, tuple[bytes, int]]:
    """The payload the folder holds now (empty when never written)."""
    data_dir = target / DATA
    if not data_dir.is_dir():
        return {}
    out: dict[str, tuple[bytes, int]] = {}
    for root, _dirs, files in os.walk(data_dir, followlinks=True):
        for name in files:
            full = Path(root) / name
            rel = str(full.relative_to(data_dir))
            out[rel] = (full.read_bytes(), full.stat().st_mode & 0o777)
    return out


def write(target: Path, payload: Payload) -> bool:
    """Make the folder hold exactly `payload`; False when it already did."""
    for rel in payload:
        check_path(rel)
    target.mkdir(parents=True, exist_ok=True)
    if current(target) == {k: (v[0], v[1]) for k, v in payload.items()}:
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    new_dir = target / stamp
    new_dir.mkdir(mode=0o755)
    for rel, (content, mode) in payload.items():
        path = new_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(path, mode)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else ""
    tmp_link = target / DATA_TMP
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, target / DATA)

    wanted = {rel.split("/", 1)[0] for rel in payload}
    for top in wanted:
        link = target / top
        if not link.is_symlink():
            if link.exists():
                raise PayloadError(f"{link} exists and is not a link of this writer")
            os.symlink(f"{DATA}/{top}", link)
    for entry in os.listdir(target):
        if entry.startswith(".."):
            continue
        if entry not in wanted and (target / entry).is_symlink():
            (target / entry).unlink()
    if old and old != stamp and (target / old).is_dir():
        shutil.rmtree(target / old, ignore_errors=True)
    return True
