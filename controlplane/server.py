"""The gRPC server of one replica: Resources, Cluster and Pods, plus health and reflection.

Health (grpc.health.v1) reports NOT_SERVING until the replica is ready (its
store holds the system namespaces and has a quorum), then SERVING; on
shutdown every service turns NOT_SERVING first. Reflection lists every
service, so `grpcurl -plaintext HOST:PORT list` works with no .proto at hand.

Threading: gRPC's sync server with a thread pool of `workers` threads; every
unary call and every stream (a Watch, a Logs follow) holds one worker while it
runs, so `workers` is the number of concurrent calls and watch streams. Calls
beyond it are refused at once with RESOURCE_EXHAUSTED instead of queueing
behind long-lived streams.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as socketlib
import stat
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controlplane.api.handler import Handler
from controlplane.api.servicer import ResourcesServicer
from controlplane.cluster import ClusterServicer
from controlplane.podproxy import PodProxy
from corral.limits import SERVER_OPTIONS
from corral.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = tuple(
    api_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("Resources", "Cluster", "Pods")
)


class BindError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _claim_socket(path: str) -> None:
    """Remove a stale socket file left by a killed replica; refuse a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError("socket", f"{path} exists and is not a socket")
    probe = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover
        return
    finally:
        probe.close()
    raise BindError("socket", f"{path} is in use by another process")


class ApiServer:
    def __init__(self, handler: Handler, cluster: ClusterServicer, pods: PodProxy, *,
                 listen: str = "", socket: str = "", workers: int = 1024) -> None:
        self._handler = handler
        self._cluster = cluster
        self._pods = pods
        self._socket = socket
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=workers,
        )
        api_pb2_grpc.add_ResourcesServicer_to_server(ResourcesServicer(handler), self._server)
        api_pb2_grpc.add_ClusterServicer_to_server(cluster, self._server)
        api_pb2_grpc.add_PodsServicer_to_server(pods, self._server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        self._serving: bool | None = None
        self.set_serving(False)
        self.port = 0
        if listen:
            try:
                self.port = self._server.add_insecure_port(listen)
            except RuntimeError as err:
                raise BindError("listen", f"cannot listen on {listen}: {err}") from None
            if not self.port:
                raise BindError("listen", f"cannot listen on {listen} (address in use?)")
        if socket:
            _claim_socket(socket)
            try:
                bound = self._server.add_insecure_port(f"unix:{socket}")
            except RuntimeError as err:
                raise BindError("socket", f"cannot listen on {socket}: {err}") from None
            if not bound:
                raise BindError("socket", f"cannot listen on {socket}")

    def start(self) -> None:
        self._server.start()
        if self._socket:
            # Owner-only: the socket is as powerful as the API itself.
            with contextlib.suppress(OSError):
                os.chmod(self._socket, 0o600)

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    def set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *SERVICES):
            self._health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, end every watch stream, wait up to `grace` for the rest."""
        self._health.enter_graceful_shutdown()
        self._handler.close()
        self._server.stop(grace).wait(grace + 1)
        self._cluster.close()
        self._pods.close()
        if self._socket:
            with contextlib.suppress(OSError):
                os.unlink(self._socket)
