"""Upstream connection pools: keep-alive reuse, HTTP/2 multiplexing, idle timeout, idle cap."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.harness import mesh_config, parallel_get, service, wait_until


def test_http1_upstream_connections_are_kept_alive_and_reused(upstream_factory, proxy_factory):
    up = upstream_factory("v1")
    px = proxy_factory(mesh_config(services={"echo": [up.address]}))

    ports = set()
    with px.client() as client:  # one downstream connection
        for _ in range(100):
            ports.add(client.get("/", headers={"host": "echo"}).json()["client_port"])
    for _ in range(50):  # a new downstream connection per request: the pool is not tied to it
        ports.add(px.get("/", host="echo").json()["client_port"])

    stats = up.stats()
    assert stats["requests"] == 150
    assert stats["connections"] <= 2, f"150 sequential requests used {stats['connections']} upstream connections"
    assert len(ports) == stats["connections"]


def test_h2c_upstream_multiplexes_concurrent_requests_on_one_connection(upstream_factory, proxy_factory):
    up = upstream_factory("v1", http2=True)
    px = proxy_factory(mesh_config(services=[service("grpcish", [up.address], h2c=True)]))
    n = 48

    # Each request comes on its own downstream HTTP/1.1 connection, all at once.
    results = parallel_get(px.address, "grpcish", "/slow/1000", n)
    assert [(status, json.loads(body)["http_version"]) for status, body in results] == [(200, "2")] * n
    stats = up.stats()
    assert stats["requests"] == n
    assert stats["connections"] == 1, f"{n} concurrent requests opened {stats['connections']} h2 connections"
    assert stats["max_active"] >= n // 2, f"only {stats['max_active']} streams were in flight at once"


@pytest.mark.parametrize("h2c", [False, True], ids=["http1", "h2c"])
def test_idle_upstream_connections_close_after_the_idle_timeout(upstream_factory, proxy_factory, h2c):
    up = upstream_factory("v1", http2=h2c)
    px = proxy_factory(
        mesh_config(services=[service("echo", [up.address], h2c=h2c)], proxy={"pool": {"idleTimeout": "1s"}})
    )
    assert [status for status, _ in parallel_get(px.address, "echo", "/slow/100", 4)] == [200] * 4
    done = time.monotonic()

    # Right after the responses the connections are pooled, not closed...
    assert up.established_connections() >= 1
    assert px.upstream_connections_open(up.address) >= 1
    # ...and the idle timeout (1s) closes them: seen by the upstream's kernel and in the engine stats.
    wait_until(lambda: up.established_connections() == 0, timeout=6, what="upstream sockets to close")
    closed_after = time.monotonic() - done
    wait_until(lambda: px.upstream_connections_open(up.address) == 0, timeout=3, what="connections_open == 0")
    assert closed_after >= 0.7, f"connections closed {closed_after:.2f}s after use: before the 1s idle timeout"


def test_idle_http1_connections_above_the_cap_are_closed(upstream_factory, proxy_factory):
    up = upstream_factory("v1")
    px = proxy_factory(
        mesh_config(services={"echo": [up.address]}, proxy={"pool": {"maxIdlePerEndpoint": 2, "idleTimeout": "60s"}})
    )
    n = 8
    assert [status for status, _ in parallel_get(px.address, "echo", "/slow/500", n)] == [200] * n
    assert up.stats()["connections"] == n  # they really ran on n connections at once

    wait_until(lambda: up.established_connections() <= 2, timeout=3, what="idle connections above the cap to close")
    time.sleep(0.3)  # settle: the two under the cap stay open (idle timeout is 60s)
    assert up.established_connections() == 2
    # And they are reused: the next requests open no new connection.
    for _ in range(5):
        assert httpx.get(px.url, headers={"host": "echo"}).status_code == 200
    assert up.stats()["connections"] == n
