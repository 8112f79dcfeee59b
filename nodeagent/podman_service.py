"""The agent's own `podman system service`, supervised.

Each agent runs its own Podman service on a unix socket in its state folder,
with its own storage (graph root, run root, libpod tmp dir) and the
CONTAINERS_CONF its config names, so several agents on one machine never see
each other's containers. The storage settings go into a storage.conf the agent
writes (CONTAINERS_STORAGE_CONF), including the read-only additional image
stores (the lab's shared store holding localhost/busybox).

Threads model: one supervisor thread starts the service, waits on it, restarts
it (with back-off) when it exits, and is the runtime watchdog: it pings the API
every `watch_period` seconds and restarts a service that has not answered for
`restart_unhealthy_after` seconds. Containers survive a service restart (conmon
runs them, not the service).

The service is started through `setpriv --pdeathsig SIGTERM` when available, so
it ends with the agent; the PID file (pid + start time, so a recycled PID is never
signalled) lets the next agent stop a service left over by one that was SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import psutil

from nodeagent.config import AgentConfig

log = logging.getLogger(__name__)


def storage_conf(cfg: AgentConfig) -> str:
    stores = ", ".join(f'"{s}"' for s in cfg.podman.additional_image_stores)
    return (
        "# Written by corral-agent; regenerated on every start.\n"
        "[storage]\n"
        f'driver = "{cfg.podman.storage_driver}"\n'
        f'graphroot = "{cfg.storage_root}"\n'
        f'runroot = "{cfg.run_root}"\n'
        "[storage.options]\n"
        f"additionalimagestores = [{stores}]\n"
    )


def conf_tmp_dir(containers_conf: str) -> str:
    """engine.tmp_dir of a containers.conf ("" when unset or unreadable)."""
    if not containers_conf:
        return ""
    try:
        with open(containers_conf, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    value = data.get("engine", {}).get("tmp_dir", "")
    return value if isinstance(value, str) else ""


def tmp_dir(cfg: AgentConfig) -> str:
    """Podman's libpod tmp dir (alive marker, exit files, events log): podman.tmp_dir,
    else the containers.conf's engine.tmp_dir, else <run_root>/libpod. Never
    Podman's default /run/libpod, which every agent of the machine would share."""
    return cfg.podman.tmp_dir or conf_tmp_dir(cfg.podman.containers_conf) \
        or str(Path(cfg.run_root) / "libpod")


def service_command(cfg: AgentConfig) -> list[str]:
    cmd = [
        cfg.podman.binary,
        "--tmpdir", tmp_dir(cfg),
        "--events-backend", "file",
        "system", "service", "--time", "0", f"unix://{cfg.podman_socket}",
    ]
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "SIGTERM", "--", *cmd]
    return cmd


def service_env(cfg: AgentConfig, storage_conf_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "USER")}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["CONTAINERS_STORAGE_CONF"] = str(storage_conf_path)
    if cfg.podman.containers_conf:
        env["CONTAINERS_CONF"] = cfg.podman.containers_conf
    env["TMPDIR"] = str(cfg.state_path / "tmp")
    return env


class PodmanService:
    def __init__(self, cfg: AgentConfig, *, ping: Callable[[float], bool],
                 watch_period: float = 2.0) -> None:
        self.cfg = cfg
        self._ping = ping
        self.watch_period = watch_period
        self._pidfile = cfg.state_path / "podman-service.pid"
        self._logfile = cfg.state_path / "podman-service.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = threading.Event()
        self.restarts = 0
        self._unanswered_since = 0.0

    # ---- lifecycle --------------------------------------------------------------
    def start(self, wait: float = 60.0) -> None:
        """Start the service and the supervisor; return once the API answers."""
        for path in (self.cfg.state_path, self.cfg.state_path / "tmp", Path(tmp_dir(self.cfg))):
            path.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="podman-supervisor",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self._ping(2.0):
                log.info("podman service answers on %s (pid %s)", self.cfg.podman_socket,
                         self.pid)
                return
            proc = self._proc
            if proc is not None and proc.poll() is not None and self.restarts > 3:
                break
            time.sleep(0.1)
        raise RuntimeError(f"podman service did not answer on {self.cfg.podman_socket} "
                           f"within {wait:g}s; see {self._logfile}:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._pidfile.unlink()
        except FileNotFoundError:
            pass

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def restart(self, why: str) -> None:
        """Kill the service; the supervisor starts a new one."""
        log.warning("restarting the podman service: %s", why)
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- internals ----------------------------------------------------------------
    def _stop_leftover(self) -> None:
        """Stop a service an earlier agent (SIGKILLed) left running, by its recorded PID.

        A zombie is not a leftover: after a power loss (`corral lab kill`) the
        service was killed with everything else in the host's cgroup, and when its
        parent, the agent, died too it waits for PID 1 to reap it (measured: a
        second or more where PID 1 is slow to reap). It still "exists" with the
        same start time, so without this check the new agent reported stopping a
        service that was already dead, and waited on it in vain."""
        try:
            pid_text, created_text = self._pidfile.read_text().split()
            pid, created = int(pid_text), float(created_text)
        except (OSError, ValueError):
            pid, created = 0, 0.0
        if pid:
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01 and \
                        proc.status() != psutil.STATUS_ZOMBIE:
                    log.info("stopping the podman service left by an earlier agent (pid %d)", pid)
                    proc.terminate()
                    try:
                        proc.wait(5)
                    except psutil.TimeoutExpired:
                        proc.kill()
                        try:
                            proc.wait(5)
                        except psutil.TimeoutExpired:
                            # Killed; only its reaping is late (see above).
                            log.warning("podman service pid %d did not go away after "
                                        "SIGKILL", pid)
            except psutil.NoSuchProcess:
                pass
        try:
            self.cfg.podman_socket.unlink()
        except FileNotFoundError:
            pass

    def _spawn(self) -> None:
        conf = self.cfg.state_path / "storage.conf"
        conf.write_text(storage_conf(self.cfg))
        cmd = service_command(self.cfg)
        with open(self._logfile, "ab") as logf:
            proc = subprocess.Popen(cmd, env=service_env(self.cfg, conf), stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, close_fds=True)
        try:
            created = psutil.Process(proc.pid).create_time()
            self._pidfile.write_text(f"{proc.pid} {created}\n")
        except psutil.NoSuchProcess:
            pass
        with self._lock:
            self._proc = proc
        self._unanswered_since = 0.0
        log.info("started podman service (pid %d): %s", proc.pid, " ".join(cmd))

    def _supervise(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            proc = self._proc
            assert proc is not None
            try:
                code = proc.wait(self.watch_period)
            except subprocess.TimeoutExpired:
                self._watch()
                continue
            if self._stop.is_set():
                return
            log.error("podman service (pid %d) exited with %s; restarting in %.1fs: %s",
                      proc.pid, code, delay, self.log_tail(5))
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            self.restarts += 1
            try:
                self._spawn()
            except OSError as err:
                log.error("cannot start the podman service: %s", err)
                continue
            if self._ping(5.0):
                delay = 0.5

    def _watch(self) -> None:
        if self._ping(min(5.0, self.watch_period * 2)):
            self._unanswered_since = 0.0
            return
        now = time.monotonic()
        if not self._unanswered_since:
            self._unanswered_since = now
            log.warning("podman service does not answer on %s", self.cfg.podman_socket)
            return
        if now - self._unanswered_since >= self.cfg.podman.restart_unhealthy_after:
            self.restart(f"no answer for {now - self._unanswered_since:.0f}s")
            self._unanswered_since = 0.0

    def signal(self, sig: signal.Signals) -> None:
        """Tests: send a signal to the service (e.g. SIGSTOP to simulate a hang)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
