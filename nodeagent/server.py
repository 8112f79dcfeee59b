"""The NodeAgent gRPC service on node_ip:agent_port: Logs, Exec, Top.

The control plane's Pods service forwards `corral logs/exec/top` here (clients
need no route to nodes). Thin servicer: find the pod among this node's pods and
its container (kubelet's rules and messages: a pod with several containers needs
`-c`; `--previous` needs a dead attempt), then stream from the runtime.

Threads model: gRPC's sync server; a Logs follow or an Exec holds one worker for
its life; Exec pumps the client's stdin on a helper thread. A call the client
leaves (cancel, deadline, connection gone) ends its Podman stream through a
callback that only shuts the stream's socket down: gRPC runs those callbacks on
the server's single polling thread, so one that blocked would stop the whole
server (grpc/_server.py `_process_event_and_continue`). The worker thread, woken
by the shutdown, closes the stream itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from corral import selectors
from corral.errors import CorralError, FailedPrecondition, Invalid, NotFound
from corral.limits import SERVER_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc, core_pb2
from nodeagent.records import ContainerRecord, latest_by_name
from nodeagent.runtime import Runtime, RuntimeFailure
from nodeagent.usage import Sampler

log = logging.getLogger(__name__)

PodLookup = Callable[[str, str], "core_pb2.Pod | None"]


def _abort(context: grpc.ServicerContext, err: CorralError) -> NoReturn:
    context.abort(err.code, err.message)
    raise AssertionError("unreachable")


def pick_container(pod: core_pb2.Pod, requested: str) -> str:
    names = [c.name for c in pod.spec.containers]
    init_names = [c.name for c in pod.spec.init_containers]
    if requested:
        if requested in names or requested in init_names:
            return requested
        raise Invalid(f'container {requested} is not valid for pod {pod.metadata.name}')
    if len(names) == 1:
        return names[0]
    raise Invalid(f"a container name must be specified for pod {pod.metadata.name}, "
                  f"choose one of: [{' '.join(names)}]"
                  + (f" or one of the init containers: [{' '.join(init_names)}]"
                     if init_names else ""))


def pick_record(pod: core_pb2.Pod, container: str, recs: list[ContainerRecord], *,
                previous: bool) -> ContainerRecord:
    is_init = container not in [c.name for c in pod.spec.containers]
    attempts = latest_by_name(recs, init=is_init).get(container, [])
    if previous:
        # The attempt before the newest one (its lastState).
        if len(attempts) < 2:
            raise FailedPrecondition(f'previous terminated container "{container}" in pod '
                                     f'"{pod.metadata.name}" not found')
        return attempts[1]
    if not attempts:
        raise FailedPrecondition(f'container "{container}" in pod "{pod.metadata.name}" is '
                                 "waiting to start: ContainerCreating")
    return attempts[0]


def _on_end(context: grpc.ServicerContext, end: Callable[[], None]) -> None:
    """Run `end` (which must not block) when the call ends; at once if it already has."""
    if not context.add_callback(end):
        end()


class NodeAgentServicer(api_pb2_grpc.NodeAgentServicer):
    def __init__(self, *, node_name: str, find_pod: PodLookup,
                 list_pods: Callable[[], list[core_pb2.Pod]],
                 pod_records: Callable[[str], list[ContainerRecord]], runtime: Runtime,
                 sampler: Sampler) -> None:
        self._node = node_name
        self._find_pod = find_pod
        self._list_pods = list_pods
        self._records = pod_records
        self._runtime = runtime
        self._sampler = sampler

    def _pod(self, namespace: str, name: str) -> core_pb2.Pod:
        if not name:
            raise Invalid("required value: the pod's name", "name")
        pod = self._find_pod(namespace or "default", name)
        if pod is None:
            raise NotFound(f'pods "{name}" not found on node {self._node}')
        return pod

    def Logs(self, request: api_pb2.PodLogsRequest,
             context: grpc.ServicerContext) -> Iterator[api_pb2.LogChunk]:
        try:
            pod = self._pod(request.namespace, request.name)
            container = pick_container(pod, request.container)
            rec = pick_record(pod, container, self._records(pod.metadata.uid),
                              previous=request.previous)
            tail = request.tail_lines if request.HasField("tail_lines") else None
            chunks, cancel = self._runtime.logs(rec.id, follow=request.follow and
                                                not request.previous, tail=tail,
                                                timestamps=request.timestamps)
        except CorralError as err:
            _abort(context, err)
        except RuntimeFailure as err:
            _abort(context, FailedPrecondition(str(err)))
        _on_end(context, cancel)
        for data in chunks:
            yield api_pb2.LogChunk(data=data)

    def Exec(self, request_iterator: Iterator[api_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[api_pb2.ExecResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("start"):
            _abort(context, Invalid("the first message must carry `start`", "start"))
        start = first.start
        try:
            if not start.command:
                raise Invalid("required value: the command to run", "start.command")
            pod = self._pod(start.namespace, start.name)
            container = pick_container(pod, start.container)
            rec = pick_record(pod, container, self._records(pod.metadata.uid), previous=False)
            if not rec.running:
                raise FailedPrecondition(f'container "{container}" in pod '
                                         f'"{pod.metadata.name}" is not running')
            session = self._runtime.exec_session(rec.id, list(start.command),
                                                 stdin=start.stdin, tty=start.tty)
        except CorralError as err:
            _abort(context, err)
        except RuntimeFailure as err:
            _abort(context, FailedPrecondition(str(err)))
        _on_end(context, session.end)

        def pump() -> None:
            try:
                if start.stdin:
                    for req in request_iterator:
                        if req.stdin:
                            session.send(req.stdin)
                        if req.stdin_eof:
                            break
            except (grpc.RpcError, OSError, ValueError):
                pass
            finally:
                session.close_stdin()

        threading.Thread(target=pump, name="exec-stdin", daemon=True).start()
        try:
            for kind, data in session.output():
                if kind == 2:
                    yield api_pb2.ExecResponse(stderr=data)
                else:
                    yield api_pb2.ExecResponse(stdout=data)
        finally:
            # Also when gRPC drops this generator after a cancel (GeneratorExit).
            session.close()
        if not context.is_active():
            return
        try:
            code = session.exit_code()
        except RuntimeFailure as err:
            log.warning("exec exit code: %s", err)
            code = -1
        yield api_pb2.ExecResponse(exit_code=code)

    def Top(self, request: api_pb2.TopRequest, context: grpc.ServicerContext
            ) -> api_pb2.TopResponse:
        try:
            sel = selectors.parse_label_selector(request.label_selector)
        except CorralError as err:
            _abort(context, err)
        resp = api_pb2.TopResponse()
        pods = [p for p in self._list_pods()
                if (not request.namespace or p.metadata.namespace == request.namespace)
                and (not request.name or p.metadata.name == request.name)
                and sel.matches(dict(p.metadata.labels))]
        if request.name and not pods:
            _abort(context, NotFound(f'pods "{request.name}" not found on node {self._node}'))
        running: dict[str, dict[str, ContainerRecord]] = {}
        pids: dict[str, int] = {}
        for pod in pods:
            recs = {r.name: r for r in self._records(pod.metadata.uid)
                    if r.running and not r.init and r.pid}
            running[pod.metadata.uid] = recs
            pids.update({r.id: r.pid for r in recs.values()})
        usage = self._sampler.sample(pids)
        for pod in sorted(pods, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            pu = resp.pods.add(namespace=pod.metadata.namespace, name=pod.metadata.name,
                               node_name=self._node)
            for name, rec in sorted(running[pod.metadata.uid].items()):
                cpu, mem = usage.get(rec.id, (0, 0))
                pu.containers.add(name=name, cpu_millicores=cpu, memory_bytes=mem)
        return resp


def serve(servicer: NodeAgentServicer, address: str, *, workers: int = 64
          ) -> tuple[grpc.Server, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-grpc"),
                         options=SERVER_OPTIONS, maximum_concurrent_rpcs=workers)
    api_pb2_grpc.add_NodeAgentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("corral.v1.NodeAgent", health_pb2.HealthCheckResponse.SERVING)
    return server, port
