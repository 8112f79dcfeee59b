"""Size limits shared by the server and every client, so both ends agree.

An object is capped at 1 MiB serialized (Kubernetes' cap for ConfigMaps and
Secrets, and etcd's default request size). A request carries at most one
object plus a small envelope; a response may carry a whole List.
"""

from __future__ import annotations

MAX_OBJECT_BYTES = 1024 * 1024
# One object plus the request envelope and metadata.
MAX_REQUEST_BYTES = MAX_OBJECT_BYTES + 64 * 1024
# A List of many objects, or a watch event.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

# What a server accepts and sends.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ("grpc.so_reuseport", 0),
    # Accept the clients' keepalive pings below (every 10 s, also without calls).
    # gRPC's server default allows one ping per 5 minutes without data and answers
    # the third early one with GOAWAY "too_many_pings", which broke every quiet
    # watch stream after about 3 minutes (measured here).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    # Ping clients too, so a stream held by a client whose host vanished (power
    # loss, partition: no RST) is dropped and frees its worker thread.
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
]

# What a client accepts and sends: the mirror image of the server's.
CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    # Fail over quickly: a dead replica should not hold a call for long.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
]
