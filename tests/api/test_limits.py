"""The server accepts what the client sends, keepalive pings included.

Measured: with gRPC's server default (one ping per 5 minutes without data) a
quiet watch stream of a corral.client (pinging every 10 s) was cut after about
3 minutes by GOAWAY "too_many_pings". The options below must stay consistent.
"""

from __future__ import annotations

from corral.limits import CLIENT_OPTIONS, SERVER_OPTIONS


def test_server_accepts_the_clients_keepalive_pings() -> None:
    server, client = dict(SERVER_OPTIONS), dict(CLIENT_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] < client[
        "grpc.keepalive_time_ms"]
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1


def test_message_limits_mirror_each_other() -> None:
    server, client = dict(SERVER_OPTIONS), dict(CLIENT_OPTIONS)
    assert server["grpc.max_receive_message_length"] == client["grpc.max_send_message_length"]
    assert server["grpc.max_send_message_length"] == client["grpc.max_receive_message_length"]
