"""The admin API against a fake engine: real HTTP on loopback, served by the orchestrator's loop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvloop

from fastmesh.admin import Admin
from fastmesh.engine import Engine
from fastmesh.state import AppliedConfig, ReloadError, State
from tests.runtime.fakes import FakeEngineCore, engine_stats

SNAPSHOT = {"version": 1, "listeners": [{"name": "outbound", "address": "127.0.0.1:0"}],
            "backends": [], "vhosts": []}


@dataclass
class AdminUnderTest:
    url: str
    address: str
    state: State
    core: FakeEngineCore

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)


@pytest.fixture
def admin() -> Iterator[AdminUnderTest]:
    """An Admin served by a uvloop loop in a thread, as the runtime does on its main thread."""
    state = State(source="/etc/fastmesh/mesh.yaml")
    core = FakeEngineCore(engine_stats(requests_active=3))
    loop = uvloop.new_event_loop()
    server = Admin(state, Engine(core))
    bound = loop.run_until_complete(server.start("127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield AdminUnderTest(f"http://{bound}", bound, state, core)
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def apply(state: State, version: int = 1) -> None:
    state.applied = AppliedConfig(version, json.dumps({**SNAPSHOT, "version": version}), time.time())


def test_ready_only_after_first_snapshot_and_not_while_draining(admin: AdminUnderTest) -> None:
    assert admin.get("/ready").status_code == 503
    apply(admin.state)
    ready = admin.get("/ready")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    admin.state.draining = True
    draining = admin.get("/ready")
    assert (draining.status_code, draining.text) == (503, "draining\n")


def test_live_always(admin: AdminUnderTest) -> None:
    assert admin.get("/live").status_code == 200
    admin.state.draining = True
    assert admin.get("/live").status_code == 200


def test_config_shows_snapshot_version_and_last_reload_error(admin: AdminUnderTest) -> None:
    before = admin.get("/config").json()
    assert before["version"] == 0 and before["snapshot"] is None
    apply(admin.state, version=4)
    doc = admin.get("/config").json()
    assert doc["version"] == 4
    assert doc["source"] == "/etc/fastmesh/mesh.yaml"
    assert doc["snapshot"]["version"] == 4
    assert doc["snapshot"]["listeners"] == SNAPSHOT["listeners"]
    assert doc["applied_at"].endswith("Z")
    assert doc["last_reload_error"] is None
    admin.state.last_reload_error = ReloadError("mesh.yaml: document 2 (Service default/x): bad", 0.0)
    error = admin.get("/config").json()["last_reload_error"]
    assert error == {"error": "mesh.yaml: document 2 (Service default/x): bad",
                     "at": "1970-01-01T00:00:00.000Z"}


def test_stats_passes_engine_stats_through_with_orchestrator_info(admin: AdminUnderTest) -> None:
    apply(admin.state, version=2)
    admin.state.reload_failures = 1
    response = admin.get("/stats")
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["requests_active"] == 3
    assert doc["connections"] == {"active": 2, "total": 10}
    assert doc["orchestrator"]["version"] == 2
    assert doc["orchestrator"]["reload_failures"] == 1
    assert doc["orchestrator"]["event_loop"] == "uvloop.Loop"  # the loop serving the admin API
    admin.core.stats["requests_active"] = 7  # read live, not cached
    assert admin.get("/stats").json()["requests_active"] == 7


def test_metrics_is_openmetrics_text(admin: AdminUnderTest) -> None:
    apply(admin.state, version=5)
    response = admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert response.text.endswith("# EOF\n")
    assert "fastmesh_config_version 5.0" in response.text
    assert "fastmesh_requests_active 3.0" in response.text


def test_unknown_path_is_404_and_post_is_405(admin: AdminUnderTest) -> None:
    assert admin.get("/nope").status_code == 404
    assert httpx.post(admin.url + "/ready", content=b"x", timeout=5).status_code == 405


def test_query_string_is_ignored(admin: AdminUnderTest) -> None:
    assert admin.get("/live?verbose=1").status_code == 200


def test_keep_alive_serves_pipelined_requests_on_one_connection(admin: AdminUnderTest) -> None:
    host, port = admin.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n"
                     b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 2
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 404 Not Found\r\n" in data
    assert data.rstrip().endswith(b"not found: /nope")


def test_garbage_gets_400_and_close(admin: AdminUnderTest) -> None:
    host, port = admin.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"HELLO\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in data


def test_head_has_no_body(admin: AdminUnderTest) -> None:
    response = httpx.head(admin.url + "/live", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-length"] == "5"
    assert response.content == b""


def test_admin_start_on_a_taken_port_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = Admin(State(source="x"), Engine(FakeEngineCore()))
        with pytest.raises(OSError):
            asyncio.run(admin.start(f"127.0.0.1:{port}"))
