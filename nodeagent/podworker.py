"""One worker per pod: kubelet's pod worker. Serializes everything done to one pod.

A worker holds the latest desired pod (or knows it is gone from the store) and
runs `sync` when told something changed (watch event, PLEG event, probe verdict,
ConfigMap/Secret change) or when a timer it set is due (back-off ending). Sync:
network namespace and IP, pod files and volumes, then plan (plan.py) against a
container list newer than its own last action, execute the actions (pull,
create, start, stop, remove), and hand the computed status to the status manager.

A pod with a deletionTimestamp (or gone from the store) is terminated: every
container gets SIGTERM and, after the grace period, SIGKILL (in parallel; the
timeout is passed to Podman explicitly), then containers, volumes, the network
namespace and the IP are released, and the final delete (grace 0, uid
precondition) removes the pod from the store.

Threads model: one thread per pod worker (they block on Podman calls with
deadlines and on grace periods, and are idle otherwise). `stop()` (agent
shutdown) ends the thread and leaves the containers running, as Nomad's client
does; the next agent adopts them.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from corral.client import Client
from corral.errors import Conflict, CorralError, NotFound
from corral.v1 import core_pb2
from nodeagent import containerspec, dnsfiles, envvars, plan, podstatus, records
from nodeagent.backoff import Backoff
from nodeagent.config import AgentConfig
from nodeagent.events import EventRecorder
from nodeagent.fence import Fence, carries_identity
from nodeagent.podnet import NetworkError, PodNet, PodNetworks
from nodeagent.podstatus import TERMINAL, Waiting
from nodeagent.probes import Prober
from nodeagent.records import ContainerRecord
from nodeagent.runtime import ContainerGone, ImageMissing, Runtime, RuntimeFailure
from nodeagent.statusmanager import StatusManager
from nodeagent.volumes import VolumeError, Volumes

log = logging.getLogger(__name__)

RESYNC_PERIOD = 60.0
# How long a pod waits for the control plane to bind its claims before an unbound
# claim gets a folder in the agent's state dir (issue 5's controller binds claims
# when their pod is bound; without it the agent's folder is the fallback).
PVC_BIND_WAIT = 10.0
MAX_ROUNDS = 8


def parse_time(text: object) -> float:
    """Epoch seconds of Podman's RFC 3339 time with nanoseconds; 0 when unset."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return 0.0
    head, _, frac = text.partition(".")
    tz = "+00:00"
    if frac:
        digits = "".join(itertools.takewhile(str.isdigit, frac))
        rest = frac[len(digits):]
        tz = "+00:00" if rest in ("Z", "") else rest
        frac_s = float("0." + digits) if digits else 0.0
    else:
        if head.endswith("Z"):
            head = head[:-1]
        elif len(head) > 19:
            head, tz = head[:19], head[19:]
        frac_s = 0.0
    try:
        base = datetime.datetime.fromisoformat(head + tz).timestamp()
    except ValueError:
        return 0.0
    return base + frac_s


@dataclass
class WorkerDeps:
    cfg: AgentConfig
    runtime: Runtime
    snapshot_after: Callable[[float], list[ContainerRecord]]
    networks: PodNetworks
    volumes: Volumes
    status: StatusManager
    prober: Prober
    backoff: Backoff
    image_backoff: Backoff
    client: Client
    get_configmap: Callable[[str, str], core_pb2.ConfigMap | None]
    get_secret: Callable[[str, str], core_pb2.Secret | None]
    start_slots: threading.Semaphore
    host_resolv: Callable[[], str]
    on_done: Callable[[str], None]
    events: EventRecorder | None = None
    fence: Fence | None = None


def default_pull_policy(image: str) -> str:
    """Kubernetes: Always for :latest or an untagged image, IfNotPresent otherwise."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


class PodWorker:
    def __init__(self, uid: str, deps: WorkerDeps, pod: core_pb2.Pod | None) -> None:
        self.uid = uid
        self.d = deps
        self._cond = threading.Condition()
        self._pod = pod
        self._gone = pod is None
        self._dirty = True
        self._stopping = False
        self._wake_at: float | None = None
        self._net: PodNet | None = None
        self._last_action = 0.0
        self._dead: dict[str, tuple[float, float, bool]] = {}
        self._reported: dict[str, str] = {}
        self._files = ("", "")
        self._first_sync = time.monotonic()
        self._pull_failed_at: dict[str, float] = {}
        # The fence generation this pod was last confirmed in the store at (fence.py).
        self._confirmed_gen = 0
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name=f"pod-{uid[:8]}", daemon=True)

    # ---- control ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def update(self, pod: core_pb2.Pod | None, *, kick: bool = True) -> None:
        with self._cond:
            if pod is None:
                self._gone = True
            else:
                self._pod = pod
                self._gone = False
            if kick:
                self._dirty = True
                self._cond.notify()

    def kick(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def pod(self) -> core_pb2.Pod | None:
        with self._cond:
            return self._pod

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wake_in(self, seconds: float | None) -> None:
        if seconds is None:
            return
        at = time.monotonic() + max(0.05, seconds)
        with self._cond:
            if self._wake_at is None or at < self._wake_at:
                self._wake_at = at

    # ---- loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._stopping:
                    timeout = RESYNC_PERIOD
                    if self._wake_at is not None:
                        timeout = min(timeout, self._wake_at - time.monotonic())
                    if timeout <= 0:
                        break
                    if not self._cond.wait(timeout=timeout) and self._wake_at is None:
                        break  # periodic resync
                if self._stopping:
                    return
                self._dirty = False
                self._wake_at = None
                pod, gone = self._pod, self._gone
            try:
                self.syncs += 1
                if gone or pod is None or pod.metadata.HasField("deletion_timestamp"):
                    if self._terminate(None if gone else pod):
                        self.d.on_done(self.uid)
                        return
                    self._wake_in(1.0)
                else:
                    again = self._sync(pod)
                    log.debug("pod %s: synced; next sync %s", self._describe(pod),
                              f"in {again:.1f}s" if again is not None else "on an event")
                    self._wake_in(again)
            except Exception:
                log.exception("pod %s: sync failed", self._describe(pod))
                self._wake_in(2.0)

    def _describe(self, pod: core_pb2.Pod | None) -> str:
        if pod is None:
            return self.uid
        return f"{pod.metadata.namespace}/{pod.metadata.name}"

    def _event(self, pod: core_pb2.Pod, etype: str, reason: str, message: str) -> None:
        if self.d.events is not None:
            self.d.events.record(pod, etype, reason, message)

    # ---- sync -------------------------------------------------------------------------------
    def _records(self) -> list[ContainerRecord]:
        recs = [r for r in self.d.snapshot_after(self._last_action) if r.pod_uid == self.uid]
        out = [self._exit_details(r) if r.exited else r for r in recs]
        live = {r.id for r in recs}
        for cid in [c for c in self._dead if c not in live]:
            del self._dead[cid]  # removed containers: forget their details
        return out

    def _exit_details(self, rec: ContainerRecord) -> ContainerRecord:
        """Podman's list gives whole seconds and no OOM flag: inspect each dead container
        once for its exact start/finish times (back-off is measured from them) and
        whether the kernel OOM-killed it."""
        got = self._dead.get(rec.id)
        if got is None:
            try:
                state = self.d.runtime.inspect(rec.id).get("State", {})
            except RuntimeFailure:
                return rec
            got = (parse_time(state.get("StartedAt")) or rec.started_at,
                   parse_time(state.get("FinishedAt")) or rec.finished_at,
                   bool(state.get("OOMKilled")))
            self._dead[rec.id] = got
        return replace(rec, started_at=got[0], finished_at=got[1], oom_killed=got[2])

    def _waiting_all(self, pod: core_pb2.Pod, reason: str, message: str) -> dict[str, Waiting]:
        w = Waiting(reason, message)
        out = {c.name: w for c in pod.spec.containers}
        out.update({"init:" + c.name: w for c in pod.spec.init_containers})
        return out

    def _publish(self, pod: core_pb2.Pod, recs: list[ContainerRecord],
                 waiting: dict[str, Waiting], p: plan.Plan | None = None) -> core_pb2.PodStatus:
        probes = {}
        for r in recs:
            if r.running and not r.init:
                probes[r.name] = self.d.prober.view(self.uid, r.name, r.id)
        facts = podstatus.PodFacts(
            records=recs, waiting=waiting, probes=probes,
            pod_ip=self._net.ip if self._net else "", host_ip=self.d.cfg.node_ip,
            now=time.time(),
            terminal_phase=p.terminal_phase if p else "",
            reason=p.reason if p else "", message=p.message if p else "")
        status = podstatus.compute(pod, facts)
        self.d.status.set(pod, status)
        return status

    def _sync(self, pod: core_pb2.Pod) -> float | None:
        if self.d.fence is not None and carries_identity(pod):
            fenced, generation = self.d.fence.state()
            if fenced:
                return self._fence(pod)
            if generation != self._confirmed_gen:
                return self._confirm_after_fence(pod, generation)
        uid = self.uid
        terminal = pod.status.phase in TERMINAL
        vol_paths: dict[str, str] = {}
        if not terminal:
            if self._net is None:
                try:
                    t_net = time.monotonic()
                    self._net = self.d.networks.setup(uid)
                    log.debug("pod %s: network %s in %.3fs", self._describe(pod), self._net.ip,
                              time.monotonic() - t_net)
                except NetworkError as err:
                    msg = f"failed to set up the pod network: {err}"
                    self._publish(pod, self._records(),
                                  self._waiting_all(pod, "ContainerCreating", msg))
                    self._event(pod, "Warning", "FailedCreatePodSandBox", msg)
                    return 5.0
            hosts = dnsfiles.hosts(pod, self._net.ip, cluster_domain=self.d.cfg.cluster_domain)
            resolv = dnsfiles.resolv_conf(pod, cluster_dns=self.d.cfg.cluster_dns,
                                          cluster_domain=self.d.cfg.cluster_domain,
                                          host_resolv=self.d.host_resolv())
            try:
                self._files = self.d.volumes.write_pod_files(uid, hosts, resolv)
                waited = time.monotonic() - self._first_sync
                vol_paths = self.d.volumes.setup(pod,
                                                 allow_unbound_claims=waited >= PVC_BIND_WAIT)
            except (VolumeError, OSError) as err:
                msg = f"MountVolume.SetUp failed: {err}"
                self._publish(pod, self._records(),
                              self._waiting_all(pod, "ContainerCreating", msg))
                self._event(pod, "Warning", "FailedMount", msg)
                return 1.0 if "to be bound" in msg else 5.0
        else:
            self._net = self._net or self.d.networks.lookup(uid)

        waiting: dict[str, Waiting] = {}
        requeue: list[float] = []
        p = plan.Plan()
        recs: list[ContainerRecord] = []
        for _round in range(MAX_ROUNDS):
            recs = self._records()
            failed = self.d.prober.failed_liveness(uid)
            p = plan.plan(pod, recs, now=time.time(), backoff=self.d.backoff,
                          liveness_failed=set(failed))
            changed = False
            for action in p.actions:
                if isinstance(action, plan.Start) and terminal:
                    continue
                if isinstance(action, plan.Kill) and action.record.id in failed:
                    self._event(pod, "Normal", "Killing",
                                f"Container {action.record.name} {action.reason}")
                changed |= self._execute(pod, action, vol_paths, waiting, requeue)
            if not changed:
                break
        waiting.update(p.waiting)
        for key, w in p.waiting.items():
            if self._reported.get(key) != w.reason:
                self._event(pod, "Warning", "BackOff",
                            f"Back-off restarting failed container {key.removeprefix('init:')}")
        self._reported = {k: w.reason for k, w in waiting.items()}
        # Probes first: a container the prober has not seen yet is not ready.
        running = {r.name: (r.id, r.started_at or time.time())
                   for r in recs if r.running and not r.init}
        self.d.prober.sync_pod(pod, running, self._net.ip if self._net else "")
        status = self._publish(pod, recs, waiting, p)
        if status.phase in TERMINAL and not any(r.running for r in recs):
            self._release_network()
        if p.requeue_after is not None:
            requeue.append(p.requeue_after)
        return min(requeue) if requeue else None

    def _release_network(self) -> None:
        try:
            self.d.networks.teardown(self.uid)
        except NetworkError as err:
            log.warning("pod %s: releasing its network: %s", self.uid, err)
            return
        self._net = None

    # ---- actions ----------------------------------------------------------------------------
    def _execute(self, pod: core_pb2.Pod, action: plan.Action, vol_paths: dict[str, str],
                 waiting: dict[str, Waiting], requeue: list[float]) -> bool:
        """Run one action; True when it changed what runs (so plan again)."""
        rt = self.d.runtime
        who = self._describe(pod)
        try:
            if isinstance(action, plan.Kill):
                log.info("pod %s: stopping %s (grace %ds): %s", who, action.record.name,
                         action.grace, action.reason)
                rt.stop(action.record.id, action.grace)
            elif isinstance(action, plan.Remove):
                log.debug("pod %s: removing %s: %s", who, action.record.podman_name,
                          action.reason)
                rt.remove(action.record.id)
            elif isinstance(action, plan.StartExisting):
                try:
                    rt.start(action.record.id)
                except RuntimeFailure:
                    rt.remove(action.record.id)
            else:
                return self._start(pod, action, vol_paths, waiting, requeue)
        except ContainerGone:
            pass
        except RuntimeFailure as err:
            log.warning("pod %s: %s", who, err)
            requeue.append(2.0)
            return False
        self._last_action = time.time()
        return True

    def _ensure_image(self, pod: core_pb2.Pod, spec: core_pb2.Container, key: str,
                      waiting: dict[str, Waiting], requeue: list[float]) -> bool:
        image = spec.image
        policy = spec.image_pull_policy or default_pull_policy(image)
        rt = self.d.runtime
        exists = rt.image_exists(image)
        if policy == "Never":
            if not exists:
                msg = f'Container image "{image}" is not present with pull policy of Never'
                waiting[key] = Waiting("ErrImageNeverPull", msg)
                self._event(pod, "Warning", "ErrImageNeverPull", msg)
                requeue.append(10.0)
                return False
            return True
        if policy == "IfNotPresent" and exists:
            return True
        bkey = (self.uid, "image:" + image)
        now = time.time()
        remaining = self.d.image_backoff.remaining(bkey, self._pull_failed_at.get(image, now),
                                                   0.0, now)
        if remaining > 0:
            waiting[key] = Waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
            requeue.append(remaining)
            return False
        try:
            log.info("pod %s: pulling %s", self._describe(pod), image)
            rt.pull(image)
        except (RuntimeFailure, ImageMissing) as err:
            failed_at = time.time()
            self._pull_failed_at[image] = failed_at
            self.d.image_backoff.restarted(bkey, failed_at)
            msg = f'Failed to pull image "{image}": {err}'
            waiting[key] = Waiting("ErrImagePull", msg)
            self._event(pod, "Warning", "Failed", msg)
            # Look again within the back-off, so the status moves on to ImagePullBackOff.
            requeue.append(min(1.0, self.d.image_backoff.delay(bkey) / 2))
            return False
        self.d.image_backoff.reset(bkey)
        self._pull_failed_at.pop(image, None)
        return True

    def _start(self, pod: core_pb2.Pod, action: plan.Start, vol_paths: dict[str, str],
               waiting: dict[str, Waiting], requeue: list[float]) -> bool:
        spec = action.spec
        key = ("init:" if action.init else "") + spec.name
        specs = pod.spec.init_containers if action.init else pod.spec.containers
        index = next(i for i, c in enumerate(specs) if c.name == spec.name)
        where = f"spec.{'initContainers' if action.init else 'containers'}[{index}]"
        if not self._ensure_image(pod, spec, key, waiting, requeue):
            return False
        try:
            env = envvars.resolve(pod, spec, pod_ip=self._net.ip if self._net else "",
                                  host_ip=self.d.cfg.node_ip,
                                  get_configmap=self.d.get_configmap,
                                  get_secret=self.d.get_secret)
            mounts = containerspec.mounts_for(spec, vol_paths, where)
            hosts_path, resolv_path = self._files
            assert self._net is not None
            kwargs = containerspec.create_kwargs(
                pod, spec,
                name=records.podman_name(pod, spec.name, action.attempt),
                labels=records.container_labels(pod, spec, init=action.init,
                                                 attempt=action.attempt,
                                                 node_name=self.d.cfg.node_name),
                env=env, netns_path=self._net.netns_path, mounts=mounts,
                hosts_path=hosts_path, resolv_path=resolv_path,
                cgroup_parent=self.d.cfg.cgroup_parent,
                hostname=dnsfiles.pod_hostname(pod), where=where)
        except envvars.ContainerConfigError as err:
            waiting[key] = Waiting("CreateContainerConfigError", str(err))
            self._event(pod, "Warning", "Failed", f"Error: {err}")
            requeue.append(5.0)
            return False
        rt = self.d.runtime
        t_wait = time.monotonic()
        with self.d.start_slots:
            t_create = time.monotonic()
            try:
                cid = self._create(kwargs)
            except RuntimeFailure as err:
                waiting[key] = Waiting("CreateContainerError", str(err))
                self._event(pod, "Warning", "Failed", f"Error: {err}")
                requeue.append(5.0)
                return False
            try:
                rt.start(cid)
            except RuntimeFailure as err:
                # The container stays (exited): its exit code and back-off apply.
                log.warning("pod %s: start of %s failed: %s", self._describe(pod), spec.name, err)
                self._event(pod, "Warning", "Failed", f"Error: {err}")
        if action.replaces is not None:
            self.d.backoff.restarted((self.uid, key), action.replaces.finished_at)
        log.info("pod %s: started %s (attempt %d; waited %.3fs for a slot, create+start "
                 "%.3fs)", self._describe(pod), key, action.attempt, t_create - t_wait,
                 time.monotonic() - t_create)
        self._last_action = time.time()
        return True

    def _create(self, kwargs: dict[str, Any]) -> str:
        try:
            return self.d.runtime.create(kwargs)
        except RuntimeFailure as err:
            if "already in use" not in str(err):
                raise
        # A container of that name is left from a crash between create and label
        # bookkeeping: remove it and create again.
        self.d.runtime.remove(kwargs["name"])
        return self.d.runtime.create(kwargs)

    # ---- fencing (fence.py) ---------------------------------------------------------------------
    def _fence(self, pod: core_pb2.Pod) -> float | None:
        """Stop every container of the pod and start nothing: the node may be cut off
        and the control plane about to start this identity elsewhere."""
        assert self.d.fence is not None
        try:
            recs = self._records()
        except RuntimeFailure as err:
            log.warning("pod %s: fenced, but its containers cannot be listed: %s",
                        self._describe(pod), err)
            return 1.0
        self.d.prober.sync_pod(pod, {}, self._net.ip if self._net else "")
        live = [r for r in recs if r.running]
        if not live:
            return None
        grace = min(plan.grace_of(pod), int(self.d.fence.grace))
        log.warning("pod %s: fenced: stopping %d container(s), grace %ds",
                    self._describe(pod), len(live), grace)
        errors = self._stop_all(live, grace)
        self._last_action = time.time()
        if errors:
            log.warning("pod %s: fencing: %s", self._describe(pod), "; ".join(errors))
            return 1.0
        self._publish(pod, self._records(), {})
        return None

    def _confirm_after_fence(self, pod: core_pb2.Pod, generation: int) -> float | None:
        """After a fence, start nothing before a linearizable read shows the pod is
        still ours: it may have been force-deleted (and its identity given to a
        replacement) while the informer's copy says otherwise."""
        try:
            fresh: core_pb2.Pod = self.d.client.get("Pod", pod.metadata.name,
                                                    pod.metadata.namespace)
        except NotFound:
            fresh = core_pb2.Pod()
        except CorralError as err:
            log.info("pod %s: cannot confirm it after the fence yet: %s", self._describe(pod),
                     err)
            return 2.0
        if fresh.metadata.uid != self.uid:
            log.info("pod %s: gone from the store during the fence: cleaning up",
                     self._describe(pod))
            self.update(None)
            return None
        self._confirmed_gen = generation
        if fresh.metadata.HasField("deletion_timestamp"):
            self.update(fresh)  # being deleted meanwhile: terminate it, start nothing
            return None
        log.info("pod %s: still bound here after the fence: resuming", self._describe(pod))
        self.kick()
        return None

    def _stop_all(self, live: list[ContainerRecord], grace: int) -> list[str]:
        """Stop containers in parallel (SIGTERM, SIGKILL after `grace`); the errors."""
        errors: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=len(live), thread_name_prefix=f"stop-{self.uid[:8]}") as pool:
            futures = {pool.submit(self.d.runtime.stop, r.id, grace): r for r in live}
            for fut, rec in futures.items():
                try:
                    fut.result()
                except ContainerGone:
                    pass
                except RuntimeFailure as err:
                    errors.append(f"{rec.name}: {err}")
        return errors

    # ---- termination ------------------------------------------------------------------------
    def _terminate(self, pod: core_pb2.Pod | None) -> bool:
        """Stop and release everything of the pod; True when done."""
        uid = self.uid
        try:
            recs = self._records()
        except RuntimeFailure as err:
            log.warning("pod %s: cannot list its containers: %s", self._describe(pod), err)
            return False
        if pod is not None:
            grace = plan.grace_of(pod)
        else:
            grace = max((r.grace_seconds for r in recs), default=0)
        live = [r for r in recs if r.running]
        if live:
            log.info("pod %s: stopping %d container(s), grace %ds", self._describe(pod),
                     len(live), grace)
        errors = self._stop_all(live, grace) if live else []
        if errors:
            log.warning("pod %s: stopping failed: %s", self._describe(pod), "; ".join(errors))
            return False
        for rec in recs:
            try:
                self.d.runtime.remove(rec.id)
            except ContainerGone:
                pass
            except RuntimeFailure as err:
                log.warning("pod %s: remove %s: %s", self._describe(pod), rec.name, err)
                return False
        self._last_action = time.time()
        self.d.prober.forget_pod(uid)
        try:
            self.d.volumes.teardown(uid)
            self.d.networks.teardown(uid)
        except (VolumeError, NetworkError) as err:
            log.warning("pod %s: release: %s", self._describe(pod), err)
            return False
        self._net = None
        self.d.backoff.forget_pod(uid)
        self.d.image_backoff.forget_pod(uid)
        self.d.status.forget(uid)
        if pod is not None:
            try:
                self.d.client.delete("Pod", pod.metadata.name, pod.metadata.namespace,
                                     grace_period_seconds=0, precondition_uid=uid)
                log.info("pod %s: terminated and removed", self._describe(pod))
            except (NotFound, Conflict):
                pass
            except CorralError as err:
                log.warning("pod %s: final delete: %s", self._describe(pod), err)
                return False
        else:
            log.info("pod %s: cleaned up (no longer in the store)", uid)
        return True
