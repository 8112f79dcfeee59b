"""Liveness, readiness and startup probes, run by the agent (not Podman healthchecks).

Pure part: `ProbeState` and `record()`/`defaults()` implement Kubernetes' rules
(initialDelaySeconds after the container started, every periodSeconds,
successThreshold/failureThreshold consecutive results flip the verdict;
readiness starts False, liveness True, startup False; liveness and readiness
wait until startup has succeeded; a startup probe stops once it succeeded).

`Prober` (threads): one scheduler thread keeps a heap of due probes and hands
them to a small pool of runner threads; exec probes go through the runtime (with
timeoutSeconds as the deadline), httpGet and tcpSocket connect from the agent's
network namespace to the pod IP. A verdict change calls `on_change(pod_uid)` so
the pod's worker acts (restart on liveness/startup failure, Ready on readiness).
"""

from __future__ import annotations

import concurrent.futures
import heapq
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.v1 import core_pb2
from nodeagent.podstatus import ProbeView

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
STARTUP = "startup"


@dataclass(frozen=True)
class ProbeSettings:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int


def defaults(probe: core_pb2.Probe, kind: str) -> ProbeSettings:
    """Kubernetes' defaults for unset (zero) fields."""
    success = probe.success_threshold or 1
    if kind != READINESS:
        success = 1  # Kubernetes requires 1 for liveness and startup
    return ProbeSettings(
        initial_delay=float(max(0, probe.initial_delay_seconds)),
        period=float(probe.period_seconds or 10),
        timeout=float(probe.timeout_seconds or 1),
        success_threshold=success,
        failure_threshold=probe.failure_threshold or 3,
    )


@dataclass
class ProbeState:
    kind: str
    settings: ProbeSettings
    container_id: str
    result: bool
    next_due: float
    successes: int = 0
    failures: int = 0
    last_output: str = ""

    @classmethod
    def new(cls, kind: str, settings: ProbeSettings, container_id: str,
            started_at: float) -> ProbeState:
        return cls(kind, settings, container_id, result=(kind == LIVENESS),
                   next_due=started_at + settings.initial_delay)


def record(state: ProbeState, ok: bool, now: float, output: str = "") -> bool:
    """Count one result; True when the verdict flipped."""
    state.next_due = now + state.settings.period
    state.last_output = output
    if ok:
        state.successes += 1
        state.failures = 0
        if not state.result and state.successes >= state.settings.success_threshold:
            state.result = True
            return True
    else:
        state.failures += 1
        state.successes = 0
        if state.result and state.failures >= state.settings.failure_threshold:
            state.result = False
            return True
        if not state.result and state.kind != READINESS \
                and state.failures >= state.settings.failure_threshold:
            # Startup failing its threshold: say so once (the worker restarts).
            return state.failures == state.settings.failure_threshold
    return False


def _port(value: object, container: core_pb2.Container) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    kind = value.WhichOneof("kind") if hasattr(value, "WhichOneof") else None
    if kind == "number_value":
        return int(value.number_value)  # type: ignore[attr-defined]
    if kind == "string_value":
        text = value.string_value  # type: ignore[attr-defined]
        if text.isdigit():
            return int(text)
        for p in container.ports:
            if p.name == text:
                return p.container_port
        raise ValueError(f"no container port named {text!r}")
    raise ValueError("probe port is not set")


def probe_http(action: core_pb2.HTTPGetAction, container: core_pb2.Container, pod_ip: str,
               timeout: float) -> tuple[bool, str]:
    scheme = (action.scheme or "HTTP").upper()
    if scheme != "HTTP":
        return False, f"scheme {scheme} is not supported"
    host = action.host or pod_ip
    port = _port(action.port, container)
    headers = {"User-Agent": "kube-probe/corral", "Accept": "*/*"}
    for h in action.http_headers:
        headers[h.name] = h.value
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", action.path or "/", headers=headers)
        resp = conn.getresponse()
        resp.read(10240)
        ok = 200 <= resp.status < 400
        return ok, f"HTTP probe failed with statuscode: {resp.status}" if not ok else ""
    except (OSError, http.client.HTTPException) as err:
        return False, f'Get "http://{host}:{port}{action.path or "/"}": {err}'
    finally:
        conn.close()


def probe_tcp(action: core_pb2.TCPSocketAction, container: core_pb2.Container, pod_ip: str,
              timeout: float) -> tuple[bool, str]:
    host = action.host or pod_ip
    port = _port(action.port, container)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as err:
        return False, f"dial tcp {host}:{port}: {err}"


ExecFn = Callable[[str, list[str], float], tuple[int, bytes, bytes]]


@dataclass
class _Target:
    pod_uid: str
    container: core_pb2.Container
    probe: core_pb2.Probe
    pod_ip: str
    state: ProbeState


@dataclass(order=True)
class _Due:
    at: float
    key: tuple[str, str, str] = field(compare=False)
    generation: int = field(compare=False)


class Prober:
    def __init__(self, *, exec_fn: ExecFn, on_change: Callable[[str], None],
                 workers: int = 4, clock: Callable[[], float] = time.time) -> None:
        self._exec = exec_fn
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # (pod uid, container name, kind) -> target
        self._targets: dict[tuple[str, str, str], _Target] = {}
        self._generation: dict[tuple[str, str, str], int] = {}
        self._heap: list[_Due] = []
        self._running: set[tuple[str, str, str]] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                           thread_name_prefix="probe")
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- what the pod worker tells us -----------------------------------------------
    def sync_pod(self, pod: core_pb2.Pod, running: dict[str, tuple[str, float]],
                 pod_ip: str) -> None:
        """`running`: container name -> (container id, started_at) of the pod's
        running app containers. Probes start for new ids, stop for gone ones."""
        uid = pod.metadata.uid
        with self._cond:
            wanted: set[tuple[str, str, str]] = set()
            for spec in pod.spec.containers:
                if spec.name not in running:
                    continue
                cid, started_at = running[spec.name]
                for kind, probe in ((STARTUP, spec.startup_probe),
                                    (LIVENESS, spec.liveness_probe),
                                    (READINESS, spec.readiness_probe)):
                    if not probe.ByteSize():
                        continue
                    key = (uid, spec.name, kind)
                    wanted.add(key)
                    target = self._targets.get(key)
                    if target is not None and target.state.container_id == cid:
                        target.pod_ip = pod_ip
                        continue
                    state = ProbeState.new(kind, defaults(probe, kind), cid, started_at)
                    self._targets[key] = _Target(uid, spec, probe, pod_ip, state)
                    self._schedule(key, state.next_due)
            for key in [k for k in self._targets if k[0] == uid and k not in wanted]:
                del self._targets[key]
            self._cond.notify_all()

    def forget_pod(self, uid: str) -> None:
        with self._cond:
            for key in [k for k in self._targets if k[0] == uid]:
                del self._targets[key]

    # ---- what the pod worker asks -------------------------------------------------------
    def view(self, uid: str, name: str, container_id: str) -> ProbeView:
        with self._lock:
            startup = self._targets.get((uid, name, STARTUP))
            readiness = self._targets.get((uid, name, READINESS))
            started = True
            if startup is not None and startup.state.container_id == container_id:
                started = startup.state.result
            ready = True
            if readiness is not None:
                ready = readiness.state.container_id == container_id and readiness.state.result
            return ProbeView(started=started, ready=started and ready)

    def failed_liveness(self, uid: str) -> dict[str, str]:
        """container id -> why, for containers a liveness/startup probe says to restart."""
        out: dict[str, str] = {}
        with self._lock:
            for (puid, _name, kind), t in self._targets.items():
                if puid != uid or kind not in (LIVENESS, STARTUP):
                    continue
                s = t.state
                if kind == LIVENESS and not s.result:
                    out[s.container_id] = f"Liveness probe failed: {s.last_output}"
                elif kind == STARTUP and not s.result \
                        and s.failures >= s.settings.failure_threshold:
                    out[s.container_id] = f"Startup probe failed: {s.last_output}"
        return out

    # ---- scheduling ---------------------------------------------------------------------------
    def _schedule(self, key: tuple[str, str, str], at: float) -> None:
        gen = self._generation.get(key, 0) + 1
        self._generation[key] = gen
        heapq.heappush(self._heap, _Due(at, key, gen))

    def _gated(self, key: tuple[str, str, str]) -> bool:
        """Liveness/readiness wait until the startup probe of the same container succeeded."""
        uid, name, kind = key
        if kind == STARTUP:
            target = self._targets.get(key)
            return target is not None and target.state.result  # done: stop probing
        startup = self._targets.get((uid, name, STARTUP))
        target = self._targets[key]
        return (startup is not None and startup.state.container_id == target.state.container_id
                and not startup.state.result)

    def _loop(self) -> None:
        with self._cond:
            while not self._stop:
                now = self._clock()
                while self._heap and self._heap[0].at <= now:
                    due = heapq.heappop(self._heap)
                    key = due.key
                    if self._generation.get(key) != due.generation or key not in self._targets:
                        continue
                    if key in self._running:
                        continue
                    target = self._targets[key]
                    if self._gated(key):
                        if key[2] != STARTUP:
                            self._schedule(key, now + 1.0)
                        continue
                    self._running.add(key)
                    self._pool.submit(self._run, key, target)
                wait = self._heap[0].at - now if self._heap else None
                self._cond.wait(timeout=wait)

    def _run(self, key: tuple[str, str, str], target: _Target) -> None:
        ok, output = False, ""
        state = target.state
        try:
            ok, output = self._execute(target)
        except Exception as err:  # a probe must never kill the prober
            ok, output = False, str(err)
        changed = False
        with self._cond:
            self._running.discard(key)
            current = self._targets.get(key)
            if current is target:
                changed = record(state, ok, self._clock(), output)
                if not (key[2] == STARTUP and state.result):
                    self._schedule(key, state.next_due)
                self._cond.notify_all()
        if changed:
            log.info("%s probe of %s/%s: %s%s", key[2], target.pod_uid[:8], key[1],
                     "success" if state.result else "failure",
                     f" ({output})" if output else "")
            self._on_change(target.pod_uid)

    def _execute(self, target: _Target) -> tuple[bool, str]:
        probe = target.probe
        timeout = target.state.settings.timeout
        if probe.HasField("exec"):
            try:
                code, out, err = self._exec(target.state.container_id, list(probe.exec.command),
                                            timeout)
            except Exception as exc:
                return False, f"command timed out or failed: {exc}"
            text = (out + err).decode(errors="replace").strip()[:200]
            return code == 0, text if code != 0 else ""
        if probe.HasField("http_get"):
            return probe_http(probe.http_get, target.container, target.pod_ip, timeout)
        if probe.HasField("tcp_socket"):
            return probe_tcp(probe.tcp_socket, target.container, target.pod_ip, timeout)
        return True, ""
