"""Fixtures of the agent tests.

- `image_store` (session): a read-only Podman image store with localhost/busybox.
- `cp` (module): B's 3-replica control plane (tests/cluster.py), its claim
  folders (controllers.volume_root) in the test's temporary folder.
- `host` (module): one corral-agent in a network namespace of its own
  (agentfixture.py), registered with `cp`.
- `ns`: a fresh Corral namespace per test, deleted afterwards.

Real-Podman tests are marked `integration`; they need root, podman, runc and
busybox-static.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import kinds
from corral.errors import CorralError
from tests.agent.agentfixture import AgentHost, build_image_store
from tests.cluster import Cluster


def _can_run_real() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("podman", "runc", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if shutil.which("busybox") is None and not Path("/bin/busybox").exists():
        return "needs busybox-static"
    return ""


@pytest.fixture(scope="session")
def image_store() -> Iterator[Path]:
    why = _can_run_real()
    if why:
        pytest.fail(f"the agent's real tests {why}")
    # Short path: Podman's sockets under it must stay below 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="e-img-"))
    try:
        yield build_image_store(root)
    finally:
        _podman_reset(root)
        shutil.rmtree(root, ignore_errors=True)


def _podman_reset(root: Path) -> None:
    """Unmount what Podman left mounted under the image store's folder."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root) + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture(scope="module")
def cp() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="e-cp-"))
    # Claims bound by the control plane get folders under the test's own root.
    cluster = Cluster(root, 3, extra_config={"controllers": {
        "volume_root": str(root / "volumes")}})
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def sockets(cluster: Cluster) -> list[str]:
    return [f"unix:{r.socket}" for r in cluster.replicas]


@pytest.fixture(scope="module")
def host(cp: Cluster, image_store: Path, request: pytest.FixtureRequest) -> Iterator[AgentHost]:
    root = Path(tempfile.mkdtemp(prefix="e-ag-"))
    # A test module may tune its agent: AGENT_CONFIG = {"podman": {...}, ...}.
    h = AgentHost(root, sockets(cp), image_store,
                  extra=getattr(request.module, "AGENT_CONFIG", None))
    try:
        yield h
    finally:
        if getattr(request.session, "testsfailed", 0):
            # A failure so far: keep the whole agent log (the next run overwrites it).
            kept = Path(tempfile.gettempdir()) / f"corral-agent-{request.module.__name__}.log"
            shutil.copy(h.log_path, kept)
            print(f"agent log kept in {kept}\n{h.log_tail(150)}", file=sys.stderr)
        h.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ns(host: AgentHost) -> Iterator[str]:
    name = f"t-{secrets.token_hex(3)}"
    obj = kinds.by_kind("Namespace").new()
    obj.metadata.name = name
    host.client.create(obj)
    try:
        yield name
    finally:
        try:
            host.client.delete("Namespace", name)
        except CorralError:
            pass
