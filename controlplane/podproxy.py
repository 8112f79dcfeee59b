"""The Pods service (logs, exec, top): forwarded to the node agent of the pod's node.

Clients talk to the control plane only; the replica finds the pod's node
(spec.nodeName), the node's InternalIP and its agent's port
(status.daemonEndpoints.kubeletEndpoint.Port) and relays the call to that
agent's NodeAgent service, streaming both ways. Errors from the agent keep
their status code, prefixed with the node's name. Top without a pod name asks
every Ready node in parallel and merges the answers; nodes that could not be
asked are listed in `errors`.

Threading: gRPC worker threads; a Logs/Exec relay holds its worker for the
life of the stream, and the client's cancel cancels the agent call. Channels
to agents are cached per address (thread-safe).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from controlplane.api.handler import Handler
from controlplane.api.servicer import abort, call
from corral.errors import CorralError, FailedPrecondition, Invalid, Unavailable
from corral.limits import CLIENT_OPTIONS
from corral.selectors import parse_label_selector
from corral.v1 import api_pb2, api_pb2_grpc

TOP_DEADLINE = 5.0
UNARY_DEADLINE = 30.0

ChannelFactory = Callable[[str], grpc.Channel]


def agent_address(node: Any) -> str:
    """host:port of a Node's agent, or raise Unavailable saying what is missing."""
    name = node.metadata.name
    ip = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
    if not ip:
        raise Unavailable(f"node {name} has not reported an InternalIP address")
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    if not port:
        raise Unavailable(f"node {name} has not reported its agent's port "
                          "(status.daemonEndpoints.kubeletEndpoint.Port)")
    return f"{ip}:{port}"


def node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def _relay_error(node: str, err: grpc.RpcError) -> CorralError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    exc = CorralError(f"node {node}: {details}")
    exc.code = code
    return exc


class PodProxy(api_pb2_grpc.PodsServicer):
    def __init__(self, handler: Handler, channel_factory: ChannelFactory | None = None) -> None:
        self._h = handler
        self._store = handler.store
        self._factory = channel_factory or (
            lambda target: grpc.insecure_channel(target, options=CLIENT_OPTIONS))
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> api_pb2_grpc.NodeAgentStub:
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = self._channels[address] = self._factory(address)
        return api_pb2_grpc.NodeAgentStub(ch)

    def _pod_agent(self, namespace: str, name: str) -> tuple[str, api_pb2_grpc.NodeAgentStub]:
        if not namespace or not name:
            raise Invalid("required value: the pod's namespace and name", "name")
        pod = self._h.get("Pod", namespace, name)
        node_name = pod.spec.node_name
        if not node_name:
            raise FailedPrecondition(f'pod "{namespace}/{name}" is not scheduled to a node yet')
        node = self._h.get("Node", "", node_name)
        return node_name, self._stub(agent_address(node))

    def Logs(self, request: api_pb2.PodLogsRequest,
             context: grpc.ServicerContext) -> Iterator[api_pb2.LogChunk]:
        node, stub = call(context, self._store,
                          lambda: self._pod_agent(request.namespace, request.name))
        upstream = stub.Logs(request, timeout=None if request.follow else UNARY_DEADLINE)
        context.add_callback(upstream.cancel)
        try:
            yield from upstream
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and not context.is_active():
                return
            abort(context, _relay_error(node, err))

    def Exec(self, request_iterator: Iterator[api_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[api_pb2.ExecResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("start"):
            abort(context, Invalid("the first message must carry `start`", "start"))
        start = first.start
        if not start.command:
            abort(context, Invalid("required value: the command to run", "start.command"))
        node, stub = call(context, self._store,
                          lambda: self._pod_agent(start.namespace, start.name))
        upstream = stub.Exec(itertools.chain([first], request_iterator))
        context.add_callback(upstream.cancel)
        try:
            yield from upstream
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and not context.is_active():
                return
            abort(context, _relay_error(node, err))

    def Top(self, request: api_pb2.TopRequest,
            context: grpc.ServicerContext) -> api_pb2.TopResponse:
        return call(context, self._store, lambda: self.top(request))

    def top(self, request: api_pb2.TopRequest) -> api_pb2.TopResponse:
        parse_label_selector(request.label_selector)  # refuse a bad selector up front
        if request.name:
            node, stub = self._pod_agent(request.namespace, request.name)
            try:
                resp: api_pb2.TopResponse = stub.Top(request, timeout=TOP_DEADLINE)
                return resp
            except grpc.RpcError as err:
                raise _relay_error(node, err) from None
        nodes, _ = self._h.list("Node")
        ready = [n for n in nodes if node_ready(n)]
        out = api_pb2.TopResponse()
        out.errors.extend(f"node {n.metadata.name}: not Ready" for n in nodes
                          if not node_ready(n))

        def ask(node: Any) -> api_pb2.TopResponse:
            name = node.metadata.name
            try:
                r: api_pb2.TopResponse = self._stub(agent_address(node)).Top(
                    request, timeout=TOP_DEADLINE)
                return r
            except CorralError as err:
                return api_pb2.TopResponse(errors=[f"node {name}: {err.message}"])
            except grpc.RpcError as err:
                return api_pb2.TopResponse(errors=[_relay_error(name, err).message])

        if ready:
            with ThreadPoolExecutor(max_workers=min(16, len(ready))) as pool:
                for resp in pool.map(ask, ready):
                    out.pods.extend(resp.pods)
                    out.errors.extend(resp.errors)
        out.pods.sort(key=lambda p: (p.namespace, p.name))
        return out

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
