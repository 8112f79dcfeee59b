"""A pod's volumes as host folders that its containers bind-mount.

Under `<state_dir>/pods/<pod uid>/`:
    volumes/<volume name>/    emptyDir, configMap and secret volumes
    hosts, resolv.conf        the pod's /etc/hosts and /etc/resolv.conf
Secret volumes and emptyDir with medium Memory are tmpfs mounts (secrets never
touch the disk); configMap and secret files are written by atomicwriter.py and
rewritten when the object changes (each pod sync calls `setup` again).
hostPath is the host folder itself (with Kubernetes' type checks);
persistentVolumeClaim is the folder its claim is bound to (spec.volumeName
"NODE:/path" on this node) or, for a claim not bound by the control plane,
`<state_dir>/pvc/<claim uid>`; PVC folders outlive the pod.

Threads model: called by pod workers; one pod's volumes are touched only by that
pod's worker, so no lock is needed here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from corral import quantity
from corral.errors import Invalid
from corral.v1 import core_pb2
from nodeagent import atomicwriter

log = logging.getLogger(__name__)

MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class VolumeError(Exception):
    """A volume cannot be set up; the message names the volume and why."""


def _mount_tmpfs(path: Path, size: int | None) -> None:
    if os.path.ismount(path):
        return
    opts = "mode=0755" + (f",size={size}" if size else "")
    if _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise VolumeError(f"mount tmpfs on {path}: {os.strerror(err)}")


def _umount(path: Path) -> None:
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise VolumeError(f"umount {path}: {os.strerror(err)}")


def _mounts_under(root: Path) -> list[Path]:
    prefix = str(root).rstrip("/") + "/"
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    out.append(Path(point))
    except OSError:
        pass
    return sorted(out, key=lambda p: len(str(p)), reverse=True)


def projected_payload(data: dict[str, bytes], items: list[core_pb2.KeyToPath],
                      default_mode: int, optional: bool, what: str
                      ) -> dict[str, tuple[bytes, int]]:
    """The files of a configMap/secret volume: every key, or the listed items."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError(f"configuration key {item.key!r} not found in {what}")
        mode = item.mode if item.HasField("mode") else default_mode
        out[item.path] = (data[item.key], mode)
    return out


class Volumes:
    def __init__(self, state_dir: Path, node_name: str, *,
                 get_configmap: Callable[[str, str], core_pb2.ConfigMap | None],
                 get_secret: Callable[[str, str], core_pb2.Secret | None],
                 get_pvc: Callable[[str, str], core_pb2.PersistentVolumeClaim | None]) -> None:
        self.pods_root = state_dir / "pods"
        self.pvc_root = state_dir / "pvc"
        self.node_name = node_name
        self._get_configmap = get_configmap
        self._get_secret = get_secret
        self._get_pvc = get_pvc

    def pod_dir(self, uid: str) -> Path:
        return self.pods_root / uid

    def existing_uids(self) -> set[str]:
        try:
            return {p.name for p in self.pods_root.iterdir() if p.is_dir()}
        except FileNotFoundError:
            return set()

    def write_pod_files(self, uid: str, hosts: str, resolv: str) -> tuple[str, str]:
        d = self.pod_dir(uid)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, content in (("hosts", hosts), ("resolv.conf", resolv)):
            path = d / name
            try:
                if path.read_text() == content:
                    paths.append(str(path))
                    continue
            except FileNotFoundError:
                pass
            tmp = d / f".{name}.tmp"
            tmp.write_text(content)
            os.chmod(tmp, 0o644)
            # Replace the content in place: containers bind-mount this inode.
            if path.exists():
                with open(path, "w") as f:
                    f.write(content)
                tmp.unlink()
            else:
                os.replace(tmp, path)
            paths.append(str(path))
        return paths[0], paths[1]

    def setup(self, pod: core_pb2.Pod, *, allow_unbound_claims: bool = True) -> dict[str, str]:
        """Volume name -> host path, every volume ready (contents refreshed).
        With `allow_unbound_claims` False, a claim the control plane has not bound
        yet is an error ("waiting ... to be bound") instead of a state-dir folder."""
        uid = pod.metadata.uid
        base = self.pod_dir(uid) / "volumes"
        base.mkdir(parents=True, exist_ok=True)
        out: dict[str, str] = {}
        for i, vol in enumerate(pod.spec.volumes):
            where = f"spec.volumes[{i}] ({vol.name})"
            try:
                out[vol.name] = self._setup_one(pod, vol, base / vol.name, where,
                                                allow_unbound_claims)
            except (atomicwriter.PayloadError, Invalid) as err:
                raise VolumeError(f"{where}: {err}") from None
            except OSError as err:
                raise VolumeError(f"{where}: {err}") from None
        return out

    def _setup_one(self, pod: core_pb2.Pod, vol: core_pb2.Volume, path: Path, where: str,
                   allow_unbound_claims: bool) -> str:
        ns = pod.metadata.namespace
        if vol.HasField("empty_dir"):
            path.mkdir(exist_ok=True)
            if vol.empty_dir.medium == "Memory":
                size = (quantity.bytes_of(vol.empty_dir.size_limit, f"{where}.sizeLimit")
                        if vol.empty_dir.size_limit else None)
                _mount_tmpfs(path, size)
            os.chmod(path, 0o777)
            return str(path)
        if vol.HasField("host_path"):
            return self._host_path(vol.host_path, where)
        if vol.HasField("config_map"):
            src = vol.config_map
            cm = self._get_configmap(ns, src.name)
            mode = src.default_mode if src.HasField("default_mode") else 0o644
            if cm is None:
                if not src.optional:
                    raise VolumeError(f'{where}: configmap "{src.name}" not found')
                data: dict[str, bytes] = {}
            else:
                data = {k: v.encode() for k, v in cm.data.items()}
                data.update(dict(cm.binary_data))
            payload = projected_payload(data, list(src.items), mode, src.optional,
                                        f"ConfigMap {ns}/{src.name}")
            path.mkdir(exist_ok=True)
            atomicwriter.write(path, payload)
            return str(path)
        if vol.HasField("secret"):
            src2 = vol.secret
            secret = self._get_secret(ns, src2.secret_name)
            mode = src2.default_mode if src2.HasField("default_mode") else 0o644
            if secret is None:
                if not src2.optional:
                    raise VolumeError(f'{where}: secret "{src2.secret_name}" not found')
                sdata: dict[str, bytes] = {}
            else:
                sdata = dict(secret.data)
            payload = projected_payload(sdata, list(src2.items), mode, src2.optional,
                                        f"Secret {ns}/{src2.secret_name}")
            path.mkdir(exist_ok=True)
            _mount_tmpfs(path, None)
            atomicwriter.write(path, payload)
            return str(path)
        if vol.HasField("persistent_volume_claim"):
            return self._claim(ns, vol.persistent_volume_claim.claim_name, where,
                               allow_unbound_claims)
        raise VolumeError(f"{where}: no volume source set (Corral supports emptyDir, hostPath, "
                          "configMap, secret and persistentVolumeClaim)")

    def _host_path(self, src: core_pb2.HostPathVolumeSource, where: str) -> str:
        path = Path(src.path)
        if not path.is_absolute():
            raise VolumeError(f"{where}: hostPath.path must be absolute, got {src.path!r}")
        kind = src.type
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"{where}: hostPath type check failed: {path} is not a directory")
        elif kind == "File" and not (path.exists() and stat.S_ISREG(path.stat().st_mode)):
            raise VolumeError(f"{where}: hostPath type check failed: {path} is not a file")
        elif kind == "" and not path.exists():
            # Kubernetes' "" type does no check; Podman needs the source to exist.
            path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _claim(self, ns: str, claim: str, where: str, allow_unbound: bool) -> str:
        pvc = self._get_pvc(ns, claim)
        if pvc is None:
            raise VolumeError(f'{where}: persistentvolumeclaim "{claim}" not found')
        bound = pvc.spec.volume_name
        if bound:
            node, sep, folder = bound.partition(":")
            if not sep or not folder.startswith("/"):
                raise VolumeError(f"{where}: claim {ns}/{claim} has volumeName {bound!r}; "
                                  "expected NODE:/path")
            if node != self.node_name:
                raise VolumeError(f"{where}: claim {ns}/{claim} is bound to a folder on node "
                                  f"{node}, not on {self.node_name}")
            path = Path(folder)
        elif not allow_unbound:
            raise VolumeError(f"{where}: waiting for persistentvolumeclaim {ns}/{claim} to be "
                              "bound")
        else:
            path = self.pvc_root / pvc.metadata.uid
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def teardown(self, uid: str) -> None:
        """Unmount and remove everything of the pod (never PVC or hostPath folders)."""
        d = self.pod_dir(uid)
        for point in _mounts_under(d):
            _umount(point)
        shutil.rmtree(d, ignore_errors=True)
