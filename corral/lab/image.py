"""The lab's `localhost/busybox:latest` image, made offline from Debian's busybox-static.

No registry is reachable (ENVIRONMENT.md), so the image is a tar of a folder holding
the static busybox binary and one symlink per applet, imported with `podman import`
into the lab-wide image store (a containers-storage folder). Every host's Podman
lists that folder in `additionalimagestores` and so sees the image read-only
without a copy. `verify` asks a host's Podman (with that host's storage.conf) to
list it. Shells out to podman (its CLI is the documented way to import);
single-threaded.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

from corral.lab.errors import LabError

IMAGE = "localhost/busybox:latest"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = (
    "sh", "ash", "sleep", "httpd", "wget", "nc", "hostname", "cat", "echo", "ls", "ps",
    "nslookup", "ip", "ifconfig", "ping", "env", "true", "false", "id", "mkdir", "rm",
    "cp", "mv", "grep", "sed", "awk", "head", "tail", "wc", "date", "kill", "test",
    "printf", "touch", "seq", "sort", "uniq", "tr", "cut", "find", "xargs", "vi",
    "dd", "df", "du", "free", "top", "uptime", "uname", "whoami", "tee", "sync",
    "timeout", "watch", "netstat", "route", "arp", "traceroute", "telnet", "base64",
    "md5sum", "sha256sum", "stat", "readlink", "ln", "chmod", "chown", "basename",
    "dirname", "expr", "yes", "usleep", "mount", "umount", "dmesg", "which", "less",
)
IMPORT_TIMEOUT = 120.0
PT_INTERP = 3


def is_static_elf(data: bytes) -> bool:
    """True if `data` is a 64-bit little-endian ELF with no program interpreter
    (a statically linked binary runs in an image with nothing else in it)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from("<I", data, off)
        if p_type == PT_INTERP:
            return False
    return True


def find_busybox() -> Path:
    """The static busybox binary, or LabError saying how to get it."""
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(64 * 1024)
            if is_static_elf(head):
                return path
            raise LabError(f"{path} is dynamically linked: the image needs a static busybox "
                           "(apt-get install busybox-static)")
    raise LabError("busybox not found: the lab's image needs it "
                   "(apt-get install busybox-static)")


def build_tar(busybox: Path, dest: Path) -> None:
    """A root file system tar: /bin/busybox, one symlink per applet, /tmp, /etc."""
    with tempfile.TemporaryDirectory(prefix="corral-lab-image-") as tmp:
        rootfs = Path(tmp)
        (rootfs / "bin").mkdir()
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        for folder in ("tmp", "etc", "var/www", "root", "proc", "sys", "dev"):
            (rootfs / folder).mkdir(parents=True)
        os.chmod(rootfs / "tmp", 0o1777)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                               "nobody:x:65534:65534:nobody:/:/bin/false\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
        with tarfile.open(dest, "w") as tar:
            for entry in sorted(rootfs.iterdir()):
                tar.add(entry, arcname=entry.name)


def podman_env(containers_conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf)
    env.pop("CONTAINERS_STORAGE_CONF", None)
    return env


def import_image(store: Path, run: Path, containers_conf: Path) -> str:
    """Import busybox into the containers-storage at `store`; return the image id."""
    busybox = find_busybox()
    store.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-lab-image-") as tmp:
        tar = Path(tmp) / "busybox.tar"
        build_tar(busybox, tar)
        argv = ["podman", "--root", str(store), "--runroot", str(run / "storage"),
                "--tmpdir", str(run / "libpod"), "--storage-driver", "overlay",
                "import", "--quiet", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE]
        try:
            res = subprocess.run(argv, capture_output=True, text=True,
                                 timeout=IMPORT_TIMEOUT, env=podman_env(containers_conf))
        except subprocess.TimeoutExpired:
            raise LabError(f"podman import of {IMAGE} did not finish in "
                           f"{IMPORT_TIMEOUT:.0f} s") from None
    if res.returncode != 0:
        raise LabError(f"podman import of {IMAGE} into {store} failed: "
                       f"{(res.stderr or res.stdout).strip()}")
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def verify(storage_conf: Path, containers_conf: Path) -> None:
    """LabError unless Podman with this host's storage.conf lists the image."""
    env = podman_env(containers_conf)
    env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)
    try:
        res = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                             capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        raise LabError("podman images did not answer in 60 s") from None
    if res.returncode != 0:
        raise LabError(f"podman images with {storage_conf} failed: {res.stderr.strip()}")
    if IMAGE not in res.stdout.split():
        raise LabError(f"a lab host's Podman ({storage_conf}) does not see {IMAGE} "
                       f"(it lists: {res.stdout.split() or 'nothing'})")
