"""`python -m fastmesh proxy` as a real process with the real engine: reload, refusal, drain, metrics.

Real upstreams (hypercorn) and real clients (httpx) on loopback; every port is 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.harness import Proxy, Upstream, backend, mesh_config, route, rule, wait_until

ROUTE = "default/reviews/rule/0"
V1, V2 = "default/reviews-v1:8080", "default/reviews-v2:8080"


def reviews(v1: Upstream, v2: Upstream, w1: int, w2: int, **proxy: Any) -> str:
    """Service `reviews` split between reviews-v1 and reviews-v2 by weight."""
    return mesh_config(
        services={"reviews": [], "reviews-v1": [v1.address], "reviews-v2": [v2.address]},
        routes=[route("reviews", [rule(backend("reviews-v1", w1), backend("reviews-v2", w2))],
                      parent="reviews")],
        proxy=proxy or None,
    )


def answers(px: Proxy, n: int, path: str = "/") -> Counter[str]:
    """Which upstream answered each of `n` requests to `reviews` (one keep-alive connection)."""
    with px.client() as client:
        return Counter(
            client.get(path, headers={"host": "reviews"}).json()["upstream"] for _ in range(n)
        )


def admin_json(px: Proxy, path: str) -> Any:
    response = httpx.get(px.admin_url + path, timeout=5)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def two(upstream_factory: Callable[..., Any]) -> list[Upstream]:
    return upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined, no-any-return]


def test_sighup_reloads_and_listener_keeps_its_port(two: list[Upstream], proxy_factory: Callable[..., Proxy]) -> None:
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 1, 0))
    assert px.ready["version"] == 1
    assert answers(px, 5) == Counter({"v1": 5})
    # change the file and signal at once: whichever notices first, the new content is applied
    px.write_config(reviews(v1, v2, 0, 1))
    px.sighup()
    assert px.wait_event("reloaded", "reload_failed")["event"] == "reloaded"
    assert answers(px, 5) == Counter({"v2": 5})  # same address: the listener kept its socket
    config = admin_json(px, "/config")
    assert config["version"] >= 2
    assert config["last_reload_error"] is None

    version = config["version"]
    px.sighup()  # SIGHUP reloads even when nothing changed
    assert px.wait_event("reloaded", "reload_failed") == {"event": "reloaded", "version": version + 1}
    assert admin_json(px, "/config")["version"] == version + 1
    assert answers(px, 3) == Counter({"v2": 3})


def test_file_change_reloads_new_weights(two: list[Upstream], proxy_factory: Callable[..., Proxy]) -> None:
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 90, 10))
    assert answers(px, 100) == Counter({"v1": 90, "v2": 10})
    assert px.reload(reviews(v1, v2, 10, 90)) == {"event": "reloaded", "version": 2}
    assert answers(px, 100) == Counter({"v1": 10, "v2": 90})
    weights = [
        (b["backend"], b["weight"])
        for vhost in admin_json(px, "/config")["snapshot"]["vhosts"]
        for r in vhost["routes"] if r["name"] == ROUTE
        for b in r["backends"]
    ]
    assert weights == [(V1, 10), (V2, 90)]


@contextmanager
def steady_traffic(px: Proxy) -> Iterator[list[int]]:
    """Requests to `reviews` in a loop on one connection until the block ends; yields the statuses."""
    statuses: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        with px.client() as client:
            while not stop.is_set() and len(statuses) < 100_000:
                try:
                    statuses.append(client.get("/", headers={"host": "reviews"}).status_code)
                except httpx.HTTPError:
                    statuses.append(-1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(statuses) >= 20, timeout=10, what="traffic flowing")
        yield statuses
    finally:
        stop.set()
        thread.join(10)


def test_bad_reload_is_refused_visible_on_admin_and_traffic_keeps_flowing(
    two: list[Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 1, 0))
    with steady_traffic(px) as statuses:
        px.write_config(reviews(v1, v2, 2_000_000, 0))
        failed = px.wait_event("reload_failed", "reloaded")
        assert failed["event"] == "reload_failed"
        assert str(px.config_path) in failed["error"]
        assert "HTTPRoute default/reviews" in failed["error"]
        assert "spec.rules[0].backendRefs[0].weight" in failed["error"]
        # logged (before the event) on stderr: the headline, then the ConfigError text
        log = px.stderr_tail(200)
        assert "ERROR fastmesh: reload refused, version 1 keeps serving:\n" + failed["error"] in log, log
        before = len(statuses)
        wait_until(lambda: len(statuses) >= before + 20, timeout=10, what="traffic after the refusal")

        config = admin_json(px, "/config")
        assert config["version"] == 1
        assert config["last_reload_error"]["error"] == failed["error"]
        assert config["last_reload_error"]["at"].endswith("Z")
        orchestrator = admin_json(px, "/stats")["orchestrator"]
        assert orchestrator["reload_failures"] == 1
        assert orchestrator["event_loop"] == "uvloop.Loop"  # the real process runs on uvloop
        metrics = httpx.get(px.admin_url + "/metrics", timeout=5).text
        assert "fastmesh_config_reload_failures_total 1.0" in metrics
        assert "fastmesh_config_version 1.0" in metrics
    assert statuses and set(statuses) == {200}
    assert answers(px, 5) == Counter({"v1": 5})  # the last good config is the one serving

    assert px.reload(reviews(v1, v2, 0, 1)) == {"event": "reloaded", "version": 2}
    assert admin_json(px, "/config")["last_reload_error"] is None
    assert answers(px, 5) == Counter({"v2": 5})


class SlowRequest:
    """One GET /slow/<ms> to Service `slow` through the proxy, in a thread; `result` once it ended."""

    def __init__(self, px: Proxy, ms: int) -> None:
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(px, ms), daemon=True)
        self._thread.start()
        wait_until(lambda: px.stats()["requests_active"] >= 1, timeout=10, what="the request in flight")

    def _run(self, px: Proxy, ms: int) -> None:
        try:
            response = px.get(f"/slow/{ms}", host="slow")
            self.result.update(status=response.status_code, upstream=response.json()["upstream"])
        except Exception as e:  # reported by the assertions on `result`
            self.result["error"] = repr(e)

    @property
    def in_flight(self) -> bool:
        return self._thread.is_alive() and not self.result

    def join(self, timeout: float) -> dict[str, Any]:
        self._thread.join(timeout)
        return self.result


def slow_proxy(upstream_factory: Callable[..., Upstream], proxy_factory: Callable[..., Proxy]) -> Proxy:
    up = upstream_factory("slow")
    return proxy_factory(mesh_config(services={"slow": [up.address]}, proxy={"drainTimeout": "20s"}))


def test_sigterm_drains_an_in_flight_request_then_exits_0(
    upstream_factory: Callable[..., Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    px = slow_proxy(upstream_factory, proxy_factory)
    request = SlowRequest(px, 3000)
    os.kill(px.pid, signal.SIGTERM)
    assert px.wait_event("draining") == {"event": "draining"}
    assert request.in_flight, f"the request ended before the drain began: {request.result}"
    ready = httpx.get(px.admin_url + "/ready", timeout=5)
    assert (ready.status_code, ready.text) == (503, "draining\n")
    assert httpx.get(px.admin_url + "/live", timeout=5).status_code == 200
    assert request.in_flight, "the request ended while the proxy was draining: the drain proved nothing"
    stopped = px.wait_event("stopped", timeout=20)
    assert request.join(10) == {"status": 200, "upstream": "slow"}
    assert stopped == {"event": "stopped", "drained": True}
    assert px.terminate() == 0


def connect_refused(address: str) -> bool:
    """True when a new TCP connection to `address` is refused (nothing listens there any more)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_stops_accepting_while_in_flight_requests_finish(
    upstream_factory: Callable[..., Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    px = slow_proxy(upstream_factory, proxy_factory)
    assert not connect_refused(px.address)
    request = SlowRequest(px, 3000)
    os.kill(px.pid, signal.SIGTERM)
    assert px.wait_event("draining") == {"event": "draining"}
    wait_until(lambda: connect_refused(px.address), timeout=5, what="new connections to be refused")
    assert request.in_flight, f"the request ended before the listener closed: {request.result}"
    assert px.stats()["requests_active"] == 1  # the admin API still answers while draining
    assert px.wait_event("stopped", timeout=20) == {"event": "stopped", "drained": True}
    assert request.join(10) == {"status": 200, "upstream": "slow"}
    assert px.terminate() == 0


def test_drain_deadline_stops_waiting_and_still_exits_0(
    upstream_factory: Callable[..., Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    up = upstream_factory("stuck")
    px = proxy_factory(mesh_config(services={"stuck": [up.address]}, proxy={"drainTimeout": "500ms"}))
    client = threading.Thread(target=lambda: _ignore_errors(lambda: px.get("/slow/8000", host="stuck")),
                              daemon=True)
    client.start()
    wait_until(lambda: px.stats()["requests_active"] >= 1, timeout=10, what="the request in flight")
    os.kill(px.pid, signal.SIGTERM)
    assert px.wait_event("stopped", timeout=5) == {"event": "stopped", "drained": False}
    assert px.terminate(timeout=5) == 0


def _ignore_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


def test_metrics_count_requests_latency_connections_and_pools(
    two: list[Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 1, 0))
    assert answers(px, 20) == Counter({"v1": 20})
    with px.client() as client:
        for _ in range(3):
            assert client.get("/", headers={"host": "nobody-home"}).status_code == 404
    text = httpx.get(px.admin_url + "/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def sample(family: str, name: str, **labels: str) -> float:
        (value,) = [s.value for s in families[family].samples
                    if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return value

    assert sample("fastmesh_requests", "fastmesh_requests_total",
                  route=ROUTE, backend=V1, code_class="2xx") == 20
    assert sample("fastmesh_requests", "fastmesh_requests_total",
                  route="", backend="", code_class="4xx") == 3
    duration = "fastmesh_request_duration_seconds"
    assert sample(duration, duration + "_count", route=ROUTE, backend=V1) == 20
    assert sample(duration, duration + "_bucket", route=ROUTE, backend=V1, le="+Inf") == 20
    assert 0 < sample(duration, duration + "_sum", route=ROUTE, backend=V1) < 20 * 10.0
    assert sample("fastmesh_upstream_connections_open", "fastmesh_upstream_connections_open",
                  backend=V1, endpoint=v1.address) >= 1  # kept alive in the pool
    assert sample("fastmesh_connections", "fastmesh_connections_total") >= 2
    assert sample("fastmesh_config_version", "fastmesh_config_version") == 1
    # scraped, and still without prometheus-client's exporters (their stdlib pulls in _bz2 and _lzma)
    maps = Path(f"/proc/{px.pid}/maps").read_text()
    assert "_engine" in maps
    assert "_bz2" not in maps and "_lzma" not in maps


def connections_active(px: Proxy) -> float:
    text = httpx.get(px.admin_url + "/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["fastmesh_connections_active"].samples
    return sample.value


def test_metrics_connections_active_follows_open_downstream_connections(
    two: list[Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 1, 0))
    assert connections_active(px) == 0
    with px.client() as first, px.client() as second:
        for client in (first, second):  # each keeps its connection open after the request
            assert client.get("/", headers={"host": "reviews"}).status_code == 200
        assert connections_active(px) == 2
    # closed by the clients: the engine notices asynchronously
    wait_until(lambda: connections_active(px) == 0, timeout=5, what="fastmesh_connections_active back to 0")


def test_reload_whose_listener_cannot_bind_is_refused(
    two: list[Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    """The engine raises OSError (port taken) on apply: refused like an invalid file."""
    v1, v2 = two
    px = proxy_factory(reviews(v1, v2, 1, 0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listeners = [{"name": "outbound", "port": 15001}, {"name": "extra", "port": port}]
        px.write_config(reviews(v1, v2, 0, 1, listeners=listeners))
        failed = px.wait_event("reload_failed", "reloaded")
    assert failed["event"] == "reload_failed"
    assert str(px.config_path) in failed["error"]
    assert admin_json(px, "/config")["last_reload_error"]["error"] == failed["error"]
    assert answers(px, 5) == Counter({"v1": 5})  # version 1 still serving, weights unchanged


def test_the_proxy_keeps_serving_when_whoever_read_its_events_is_gone(tmp_path: Path) -> None:
    """A supervisor killed hard closes the read end of the proxy's stdout: the next event (here a
    reload's) meets a broken pipe. The proxy goes on serving, and stops cleanly without a traceback."""
    import json
    import subprocess
    import sys
    import time

    from tests.harness import REPO

    config = tmp_path / "mesh.yaml"
    config.write_text(mesh_config(services={"reviews": []}))
    stderr = tmp_path / "stderr.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO / "src"))
    argv = [sys.executable, "-m", "fastmesh", "proxy", "--config", str(config),
            "--admin-address", "127.0.0.1:0", "--listener", "outbound=127.0.0.1:0"]
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        ready = next(e for e in map(json.loads, proc.stdout) if e["event"] == "ready")
        proc.stdout.close()
        config.write_text(mesh_config(services={"reviews": [], "ratings": []}))
        proc.send_signal(signal.SIGHUP)  # a reload: its event goes to the closed pipe
        admin = f"http://{ready['admin']}"
        wait_until(lambda: httpx.get(f"{admin}/config", timeout=5).json()["version"] == 2, timeout=15)
        assert httpx.get(f"{admin}/ready", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in stderr.read_text(), stderr.read_text()
