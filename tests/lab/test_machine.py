"""The lab's machine-facing pieces one at a time, on the real machine: the busybox
image and a host's view of it, cgroup freeze-and-kill (v1 freezer and v2), unmounting
under a folder, namespaces and sysctls per namespace."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.lab import cgroups, configs, image, mounts, net
from corral.lab.spec import LabSpec, plan
from tests.labfixture import unique_name

pytestmark = pytest.mark.lab


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path("/tmp") / f"cl-{unique_name()}"
    path.mkdir()
    try:
        yield path
    finally:
        mounts.unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def test_busybox_is_static_and_a_dynamic_binary_is_not() -> None:
    bb = image.find_busybox()
    assert image.is_static_elf(bb.read_bytes()[:65536])
    assert not image.is_static_elf(Path("/bin/ls").read_bytes()[:65536])
    assert not image.is_static_elf(b"#!/bin/sh\n")


def test_image_tar_holds_busybox_and_its_applets(short_tmp: Path) -> None:
    tar = short_tmp / "bb.tar"
    image.build_tar(image.find_busybox(), tar)
    with tarfile.open(tar) as t:
        names = {m.name: m for m in t.getmembers()}
    assert names["bin/busybox"].isfile() and names["bin/busybox"].mode & 0o111
    for applet in ("sh", "httpd", "wget", "nc", "sleep", "nslookup"):
        assert names[f"bin/{applet}"].issym() and names[f"bin/{applet}"].linkname == "busybox"
    assert names["tmp"].isdir()


def test_imported_image_is_seen_by_a_hosts_podman_and_runs(short_tmp: Path) -> None:
    p = plan(LabSpec(name=unique_name()), short_tmp, run_root=short_tmp / "run")
    h = p.hosts[0]
    h.etc.mkdir(parents=True)
    (h.etc / "containers.conf").write_text(configs.containers_conf(h))
    (h.etc / "storage.conf").write_text(configs.storage_conf(p, h))
    image.import_image(p.images, p.run / "image", h.etc / "containers.conf")
    image.verify(h.etc / "storage.conf", h.etc / "containers.conf")
    env = image.podman_env(h.etc / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(h.etc / "storage.conf")
    name = f"corral-lab-test-{unique_name()}"
    try:
        out = subprocess.run(
            ["podman", "run", "--rm", "--name", name, "--network", "none",
             "--cgroup-parent", f"/corral-lab-{p.name}/h1/pods", image.IMAGE,
             "sh", "-c", "echo hello from $(hostname) && ls /bin/httpd"],
            capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert "hello from" in out.stdout and "/bin/httpd" in out.stdout
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True,
                       env=env, timeout=60)
        cgroups.remove_tree(f"/corral-lab-{p.name}")
    # A host whose storage does not list the store does not see the image.
    (short_tmp / "empty").mkdir()
    (h.etc / "storage.conf").write_text(configs.storage_conf(p, h).replace(
        str(p.images), str(short_tmp / "empty")))
    with pytest.raises(image.LabError, match="does not see localhost/busybox"):
        image.verify(h.etc / "storage.conf", h.etc / "containers.conf")


def _spawn_into(procs_file: Path) -> subprocess.Popen[bytes]:
    # A shell in the cgroup with a child of its own.
    return subprocess.Popen(["/bin/sh", "-c", f'echo $$ > {procs_file}; sleep 1000 & wait'])


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_kill_tree_freezes_and_kills_every_process_below(kind: str) -> None:
    if kind == "v1":
        backend = cgroups.detect()
        assert backend.kind == "v1", "this machine mounts a v1 freezer"
    else:
        unified = Path("/sys/fs/cgroup/unified")
        backend = cgroups.Backend("v2", unified)
    top = f"/corral-lab-{unique_name()}"
    procs = []
    try:
        for sub in ("h1", "h1/pods/c1"):
            cgroups.create(backend, f"{top}/{sub}")
            procs.append(_spawn_into(cgroups.procs_file(backend, f"{top}/{sub}")))
        deadline = time.monotonic() + 5
        while len(cgroups.pids(backend, f"{top}/h1")) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        inside = cgroups.pids(backend, f"{top}/h1")
        assert cgroups.freeze(backend, f"{top}/h1")
        # cgroup v2 counts a task frozen in cgroup_enter_frozen(), just before the
        # task schedules out, so "frozen 1" can be read while a task still shows R
        # for a moment: poll the task states (they must settle, never run on).
        deadline = time.monotonic() + 2
        while (states := {p: psutil.Process(p).status() for p in inside}) and not all(
                s in ("stopped", "sleeping", "disk-sleep") for s in states.values()):
            assert time.monotonic() < deadline, f"tasks of a frozen cgroup: {states}"
            time.sleep(0.01)
        cgroups.thaw(backend, f"{top}/h1")
        killed = cgroups.kill_tree(backend, f"{top}/h1")
        assert inside <= killed
        for proc in procs:
            assert proc.wait(timeout=5) == -9
        deadline = time.monotonic() + 5
        while cgroups.pids(backend, f"{top}/h1"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        # A failure may leave the tree frozen: its tasks could not die.
        if backend.dir(f"{top}/h1").is_dir():
            cgroups.thaw(backend, f"{top}/h1")
            cgroups.kill_tree(backend, f"{top}/h1")
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert cgroups.remove_tree(top, [backend.mount]) == []
    assert not backend.dir(top).exists()


def test_unmount_under_drops_stacked_mounts(short_tmp: Path) -> None:
    inner = short_tmp / "h1" / "storage"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(short_tmp / "h1")], check=True)
    (short_tmp / "h1" / "deep").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(short_tmp / "h1" / "deep")], check=True)
    assert len(mounts.under(short_tmp)) == 2
    done = mounts.unmount_under(short_tmp)
    assert done[0].endswith("/deep") and len(done) == 2
    assert mounts.under(short_tmp) == []


def test_namespaces_have_their_own_sysctls_and_nothing_linked_to_the_machine() -> None:
    name = f"corral-{unique_name()}-h1"
    net.create_netns(name)
    try:
        with pytest.raises(net.LabError, match="already exists"):
            net.create_netns(name)
        net.set_sysctl(name, "net.ipv4.ip_default_ttl", "33")
        assert net.get_sysctl(name, "net.ipv4.ip_default_ttl") == "33"
        assert Path("/proc/sys/net/ipv4/ip_default_ttl").read_text().strip() != "33"
        assert set(net.links(name)) == {"lo"}
        assert net.nsid(name) is None
    finally:
        assert net.remove_netns(name)
    assert not net.remove_netns(name)
    assert name not in net.list_netns()
