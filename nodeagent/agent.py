"""The agent: wires the parts together and routes events to pod workers.

Start order: Podman service (supervised) -> fence (fence.py: from here on, a
node cut off from the control plane stops its identity pods) -> node
registration (pod CIDR) ->
bridge, forwarding, masquerade, IPAM -> PLEG -> informers (ConfigMaps and Secrets
first, so a worker finds what its pod references; then Nodes for routes; then
this node's Pods; claims are read fresh when a pod needs them) -> NodeAgent
server -> lease and status loops -> garbage collection of anything labelled for
a pod the store no longer has.

Who wakes a pod worker: the Pod informer (spec, deletion), PLEG (a container of
the pod changed, including from outside), the prober (a verdict flipped), and
ConfigMap/Secret changes of objects the pod uses (files are rewritten).

Threads model: informer threads call the handlers here; handlers only update
maps under one lock and wake workers, they never block on Podman. One thread
per pod worker; small fixed threads for routes, usage samples and GC.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from corral.client import Client
from corral.errors import CorralError
from corral.informer import Informer
from corral.v1 import core_pb2
from nodeagent import hostnet
from nodeagent.backoff import Backoff
from nodeagent.config import AgentConfig
from nodeagent.events import EventRecorder
from nodeagent.fence import Fence, carries_identity, heard_of
from nodeagent.ipam import Ipam
from nodeagent.node import NodeRegistration
from nodeagent.pleg import Pleg
from nodeagent.podman_service import PodmanService
from nodeagent.podnet import PodNetworks
from nodeagent.podworker import PodWorker, WorkerDeps
from nodeagent.probes import Prober
from nodeagent.records import ContainerRecord
from nodeagent.runtime import Runtime, RuntimeFailure
from nodeagent.server import NodeAgentServicer, serve
from nodeagent.statusmanager import StatusManager
from nodeagent.usage import Sampler
from nodeagent.volumes import Volumes

log = logging.getLogger(__name__)

GC_PERIOD = 60.0
ROUTES_PERIOD = 60.0
SAMPLE_PERIOD = 10.0


def pod_references(pod: core_pb2.Pod) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) the pod uses in volumes and env."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for vol in pod.spec.volumes:
        if vol.HasField("config_map"):
            cms.add(vol.config_map.name)
        if vol.HasField("secret"):
            secrets.add(vol.secret.secret_name)
    for c in list(pod.spec.init_containers) + list(pod.spec.containers):
        for src in c.env_from:
            if src.HasField("config_map_ref"):
                cms.add(src.config_map_ref.name)
            if src.HasField("secret_ref"):
                secrets.add(src.secret_ref.name)
        for env in c.env:
            if env.value_from.HasField("config_map_key_ref"):
                cms.add(env.value_from.config_map_key_ref.name)
            if env.value_from.HasField("secret_key_ref"):
                secrets.add(env.value_from.secret_key_ref.name)
    return cms, secrets


def _only_status_changed(old: core_pb2.Pod, new: core_pb2.Pod) -> bool:
    if old.metadata.uid != new.metadata.uid:
        return False
    a, b = core_pb2.Pod(), core_pb2.Pod()
    a.CopyFrom(old)
    b.CopyFrom(new)
    for p in (a, b):
        p.ClearField("status")
        p.metadata.resource_version = ""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self._threads: list[threading.Thread] = []
        self._routes_kick = threading.Event()
        self._pods_synced = threading.Event()
        self._resolv_cache: tuple[float, str] = (0.0, "")
        self._net_ok = False
        self._net_message = "not set up yet"
        self.informers: dict[str, Informer] = {}
        self.grpc_server = None
        self.grpc_port = 0

        cfg.state_path.mkdir(parents=True, exist_ok=True)
        self.runtime = Runtime(str(cfg.podman_socket), call_timeout=cfg.podman.call_timeout,
                               pull_timeout=cfg.podman.pull_timeout)
        self.service = PodmanService(cfg, ping=self.runtime.ping)
        self.client = Client(list(cfg.servers), timeout=10.0, retry_for=30.0)
        self.registration = NodeRegistration(cfg, self.client,
                                             runtime_version=self.runtime.version,
                                             runtime_health=self.runtime_health,
                                             network_health=self.network_health)
        f = cfg.fencing
        self.fence = Fence(after=f.after, grace=f.grace, enabled=f.enabled,
                           last_heartbeat=self.registration.last_heartbeat,
                           confirm=self._heard_of, on_change=self._on_fence)
        # Short deadlines: the fence's confirmation must not hold its thread for the
        # main client's 30 s of retries.
        self._fence_client = Client(list(cfg.servers), timeout=5.0, retry_for=3.0)
        self.ipam = Ipam(cfg.state_path / "ipam.json")
        self.hostnet = hostnet.HostNetwork(bridge=cfg.bridge, cluster_cidr=cfg.cluster_cidr,
                                           masquerade=cfg.masquerade)
        self.networks = PodNetworks(ipam=self.ipam, bridge=cfg.bridge,
                                    netns_prefix=cfg.netns_prefix)
        self.volumes = Volumes(cfg.state_path, cfg.node_name, get_configmap=self._configmap,
                               get_secret=self._secret, get_pvc=self._pvc)
        self.pleg = Pleg(self.runtime, relist_period=cfg.relist_period,
                         on_pod_changed=self._kick_pod)
        self.prober = Prober(exec_fn=self.runtime.exec_run, on_change=self._kick_pod)
        self.status = StatusManager(self.client, self._cached_pod,
                                    resync_period=cfg.status_period)
        self.events = EventRecorder(self.client, cfg.node_name)
        self.sampler = Sampler()
        b = cfg.backoff
        self.deps = WorkerDeps(
            cfg=cfg, runtime=self.runtime, snapshot_after=self._snapshot_after,
            networks=self.networks, volumes=self.volumes, status=self.status,
            prober=self.prober, backoff=Backoff(b.base, b.max, b.reset_after),
            image_backoff=Backoff(b.base, b.max, b.reset_after), client=self.client,
            get_configmap=self._configmap, get_secret=self._secret,
            start_slots=threading.Semaphore(cfg.podman.parallel_starts),
            host_resolv=self._host_resolv, on_done=self._worker_done, events=self.events,
            fence=self.fence)

    # ---- health -----------------------------------------------------------------
    def runtime_health(self) -> tuple[bool, str]:
        h = self.runtime.health
        if not h.healthy:
            return False, h.failure or "podman has not answered yet"
        if not self.pleg.healthy():
            return False, "PLEG is not healthy: no container list from podman recently"
        return True, ""

    def network_health(self) -> tuple[bool, str]:
        return self._net_ok, self._net_message

    # ---- lookups for workers and volumes ------------------------------------------
    def _get(self, kind: str, namespace: str, name: str) -> object | None:
        inf = self.informers.get(kind)
        if inf is not None and inf.synced:
            return inf.get(name, namespace)
        try:
            return self.client.get(kind, name, namespace)
        except CorralError:
            return None

    def _configmap(self, namespace: str, name: str) -> core_pb2.ConfigMap | None:
        return self._get("ConfigMap", namespace, name)  # type: ignore[return-value]

    def _secret(self, namespace: str, name: str) -> core_pb2.Secret | None:
        return self._get("Secret", namespace, name)  # type: ignore[return-value]

    def _pvc(self, namespace: str, name: str) -> core_pb2.PersistentVolumeClaim | None:
        # Claims are read fresh: binding (issue 5) may have just happened.
        try:
            return self.client.get("PersistentVolumeClaim", name, namespace)
        except CorralError:
            return None

    def _cached_pod(self, namespace: str, name: str) -> core_pb2.Pod | None:
        inf = self.informers.get("Pod")
        return inf.get(name, namespace) if inf is not None else None

    def _snapshot_after(self, t: float) -> list[ContainerRecord]:
        return list(self.pleg.snapshot_after(t))

    def _host_resolv(self) -> str:
        at, text = self._resolv_cache
        if time.monotonic() - at > 60:
            try:
                text = Path("/etc/resolv.conf").read_text()
            except OSError:
                text = ""
            self._resolv_cache = (time.monotonic(), text)
        return text

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        log.info("corral-agent %s starting (InternalIP %s, API %s)", cfg.node_name, cfg.node_ip,
                 ", ".join(cfg.servers))
        self.service.start()
        self.fence.start()
        node = self.registration.register()
        self._setup_host_network(node.spec.pod_cidr)
        self.pleg.start()
        self.prober.start()
        self.status.start()
        self.events.start()

        for kind in ("ConfigMap", "Secret"):
            self.informers[kind] = Informer(
                self.client, kind, on_add=self._on_config, on_update=self._on_config_update,
                name=f"informer-{kind}").start()
        self.informers["Node"] = Informer(
            self.client, "Node", on_add=self._on_node, on_update=lambda _o, n: self._on_node(n),
            on_delete=self._on_node_delete, name="informer-Node").start()
        for kind in ("ConfigMap", "Secret", "Node"):
            self.informers[kind].wait_synced(30)
        self.informers["Pod"] = Informer(
            self.client, "Pod", field_selector=f"spec.nodeName={cfg.node_name}",
            on_add=self._on_pod, on_update=self._on_pod_update,
            on_delete=self._on_pod_delete, on_synced=self._pods_synced.set,
            name="informer-Pod").start()

        servicer = NodeAgentServicer(node_name=cfg.node_name, find_pod=self._cached_pod,
                                     list_pods=lambda: self.informers["Pod"].items(),
                                     pod_records=self.pleg.pod_records, runtime=self.runtime,
                                     sampler=self.sampler)
        self.grpc_server, self.grpc_port = serve(servicer, f"{cfg.node_ip}:{cfg.agent_port}")
        self.registration.start()
        for target, name in ((self._routes_loop, "routes"), (self._gc_loop, "gc"),
                             (self._sample_loop, "usage")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("corral-agent %s ready: NodeAgent on %s:%d, pod CIDR %s", cfg.node_name,
                 cfg.node_ip, self.grpc_port, node.spec.pod_cidr)

    def stop(self) -> None:
        """Stop the agent; the pods' containers keep running (the next agent adopts them)."""
        if self._stop.is_set():
            return
        self._stop.set()
        log.info("stopping (containers keep running)")
        self._routes_kick.set()
        for inf in self.informers.values():
            inf.stop()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop()
        for w in workers:
            w.join(2.0)
        if self.grpc_server is not None:
            self.grpc_server.stop(1.0)
        self.registration.stop()
        self.fence.stop()
        self.prober.stop()
        self.status.stop()
        self.events.stop()
        self.pleg.stop()
        self.service.stop()
        self.runtime.close()
        self.client.close()
        self._fence_client.close()
        log.info("stopped")

    def _setup_host_network(self, pod_cidr: str) -> None:
        try:
            self.ipam.set_cidr(pod_cidr)
            self.hostnet.setup(pod_cidr)
            self._net_ok, self._net_message = True, ""
        except (hostnet.HostNetworkError, OSError) as err:
            self._net_ok, self._net_message = False, str(err)
            log.error("host network: %s", err)

    # ---- pods ------------------------------------------------------------------------------
    def _worker(self, uid: str, pod: core_pb2.Pod | None) -> PodWorker:
        with self._lock:
            w = self.workers.get(uid)
            if w is not None:
                return w
            w = PodWorker(uid, self.deps, pod)
            self.workers[uid] = w
        w.start()
        return w

    def _on_pod(self, pod: core_pb2.Pod) -> None:
        uid = pod.metadata.uid
        with self._lock:
            w = self.workers.get(uid)
        if w is None:
            self._worker(uid, pod)
        else:
            w.update(pod)

    def _on_pod_update(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        # Someone else's status write (the node lifecycle controller's "not Ready"
        # while we were cut off) is repaired even though nothing changed here.
        self.status.observe(new)
        if _only_status_changed(old, new):
            # Usually our own status write coming back: nothing to do but remember it.
            with self._lock:
                w = self.workers.get(new.metadata.uid)
            if w is not None:
                w.update(new, kick=False)
            return
        self._on_pod(new)

    def _on_pod_delete(self, pod: core_pb2.Pod) -> None:
        with self._lock:
            w = self.workers.get(pod.metadata.uid)
        if w is not None:
            w.update(None)

    def _worker_done(self, uid: str) -> None:
        with self._lock:
            self.workers.pop(uid, None)

    def _kick_pod(self, uid: str) -> None:
        with self._lock:
            w = self.workers.get(uid)
        if w is not None:
            w.kick()
        elif (self._pods_synced.is_set() and self._cached_uid(uid) is None
              and self.pleg.pod_records(uid)):
            self._worker(uid, None)  # an orphan: its pod is gone from the store

    def _cached_uid(self, uid: str) -> core_pb2.Pod | None:
        inf = self.informers.get("Pod")
        if inf is None:
            return None
        return next((p for p in inf.items() if p.metadata.uid == uid), None)

    def _on_config(self, obj: object) -> None:
        kind = type(obj).__name__
        meta = obj.metadata  # type: ignore[attr-defined]
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            pod = w.pod
            if pod is None or pod.metadata.namespace != meta.namespace:
                continue
            cms, secrets = pod_references(pod)
            if meta.name in (cms if kind == "ConfigMap" else secrets):
                w.kick()

    def _on_config_update(self, _old: object, new: object) -> None:
        self._on_config(new)

    # ---- fencing ------------------------------------------------------------------------------
    def _heard_of(self) -> tuple[bool, str]:
        try:
            node = self._fence_client.get("Node", self.cfg.node_name)
        except CorralError as err:
            return False, f"cannot read the Node: {err}"
        return heard_of(node)

    def _on_fence(self, fenced: bool) -> None:
        with self._lock:
            workers = list(self.workers.values())
            managed = set(self.workers)
        for w in workers:
            pod = w.pod
            if pod is not None and carries_identity(pod):
                w.kick()
        if fenced:
            self._fence_unmanaged(managed)

    def _fence_unmanaged(self, managed: set[str]) -> None:
        """Identity containers no worker looks after (an agent started cut off, before it
        could register and learn its pods): stopped by their labels."""
        try:
            recs = self.runtime.list_containers()
        except RuntimeFailure as err:
            log.warning("fence: cannot list containers: %s", err)
            return
        victims = [r for r in recs if r.identity and r.running and r.pod_uid not in managed]

        def stop(rec: ContainerRecord) -> None:
            grace = min(rec.grace_seconds, int(self.cfg.fencing.grace))
            log.warning("fence: stopping %s of pod %s/%s (grace %ds)", rec.name,
                        rec.pod_namespace, rec.pod_name, grace)
            try:
                self.runtime.stop(rec.id, grace)
            except RuntimeFailure as err:
                log.warning("fence: stopping %s: %s", rec.podman_name, err)
        if victims:
            with ThreadPoolExecutor(max_workers=min(16, len(victims)),
                                    thread_name_prefix="fence-stop") as pool:
                list(pool.map(stop, victims))

    # ---- nodes and routes -------------------------------------------------------------------
    def _on_node(self, node: core_pb2.Node) -> None:
        if node.metadata.name == self.cfg.node_name:
            self.registration.set_node(node)
        self._routes_kick.set()

    def _on_node_delete(self, _node: core_pb2.Node) -> None:
        self._routes_kick.set()

    def _routes_loop(self) -> None:
        while not self._stop.is_set():
            self._routes_kick.wait(ROUTES_PERIOD)
            self._routes_kick.clear()
            if self._stop.is_set():
                return
            nodes = []
            for n in self.informers["Node"].items():
                ip = next((a.address for a in n.status.addresses if a.type == "InternalIP"), "")
                nodes.append((n.metadata.name, n.spec.pod_cidr, ip))
            try:
                self.hostnet.sync_routes(hostnet.desired_routes(self.cfg.node_name, nodes,
                                                                self.cfg.cluster_cidr))
            except Exception:
                log.exception("route sync failed")
            self._stop.wait(0.2)  # coalesce bursts of node updates

    # ---- garbage collection -------------------------------------------------------------------
    def orphans(self) -> set[str]:
        """Pod uids with containers, a netns, an IP or volumes here, but no pod in the store."""
        inf = self.informers.get("Pod")
        if inf is None or not inf.synced:
            return set()
        known = {p.metadata.uid for p in inf.items()}
        with self._lock:
            known |= set(self.workers)
        found = {r.pod_uid for r in self.pleg.records()}
        found |= self.networks.existing_uids()
        found |= self.ipam.owners()
        found |= self.volumes.existing_uids()
        return found - known

    def collect_garbage(self) -> int:
        orphans = self.orphans()
        for uid in orphans:
            log.info("cleaning up pod %s: it is no longer in the store", uid)
            self._worker(uid, None)
        return len(orphans)

    def _gc_loop(self) -> None:
        self._pods_synced.wait()
        while not self._stop.is_set():
            try:
                self.collect_garbage()
            except Exception:
                log.exception("garbage collection failed")
            self._stop.wait(GC_PERIOD)

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            pids = {r.id: r.pid for r in self.pleg.records() if r.running and r.pid}
            self.sampler.sample(pids)
