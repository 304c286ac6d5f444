"""Timeouts and retries end to end: YAML (HTTPRoute timeouts/retry, TrafficPolicy) -> `fastmesh proxy`
-> real misbehaving upstreams on loopback, counted at the upstream; real clients (h2load, httpx)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.harness import backend, h2load, mesh_config, route, rule, service, traffic_policy
from tests.resilience.servers import RawUpstream


def policy(target: str, **retry: Any) -> dict[str, Any]:
    return traffic_policy(target, retry=retry)


def resilience(px: Any, route_name: str) -> dict[str, Any]:
    return next((r for r in px.stats().get("resilience", []) if r["route"] == route_name), {})


def metric(px: Any, name: str, **labels: str) -> float:
    """A sample of /metrics (0 when absent)."""
    text = httpx.get(f"{px.admin_url}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def endpoint_stats(px: Any, address: str) -> dict[str, Any]:
    return next(u for u in px.stats()["upstream"] if u["endpoint"] == address)


def test_a_503_endpoint_among_three_costs_no_client_error_over_10000_requests_and_is_ejected_then_readmitted(
    upstream_factory, proxy_factory, require_tools
):
    require_tools("h2load")
    good1, good2 = upstream_factory.many(["good1", "good2"])
    bad = upstream_factory("bad", fail_status=503)
    endpoints = [good1.address, good2.address, bad.address]
    outlier = {"consecutive5xxErrors": 5, "baseEjectionTime": "1s", "interval": "10s", "maxEjectionPercent": 10}
    config = mesh_config(
        services=[service("web", endpoints, lb="round-robin")],
        extra=[traffic_policy("web", outlierDetection=outlier,
                              retry={"attempts": 2, "retryOn": ["5xx"], "backoff": {"baseInterval": "1ms"}})],
    )
    px = proxy_factory(config)

    result = h2load(px, "web", "-n", "10000", "-c", "4", "-m", "8")
    assert (result["succeeded"], result["2xx"], result["5xx"]) == (10_000, 10_000, 0), result

    at_bad = bad.stats()["requests"]
    assert at_bad > 0, "the 503 endpoint was tried"
    retried = resilience(px, "default/web/default")["retries"]["5xx"]
    assert retried == at_bad, "every 503 was retried, each on another endpoint"
    assert good1.stats()["requests"] + good2.stats()["requests"] == 10_000
    assert metric(px, "fastmesh_retries_total", route="default/web/default", reason="5xx") == retried
    ejections = endpoint_stats(px, bad.address)["ejections"]
    assert ejections >= 1
    assert at_bad < 10_000 / 3 / 2, f"ejected, the 503 endpoint got {at_bad} of its ~3333 round-robin turns"
    assert all(endpoint_stats(px, u.address)["ejections"] == 0 for u in (good1, good2))
    print(f"\n10000 requests, 0 errors; the 503 endpoint got {at_bad} (all retried), ejected {ejections} times")

    # Readmitted once its ejection time is over: it gets traffic again, fails, is ejected again.
    deadline = time.monotonic() + 30
    while endpoint_stats(px, bad.address)["ejected"]:
        assert time.monotonic() < deadline, "still ejected after 30 s"
        time.sleep(0.1)
    with px.client() as client:
        for _ in range(30):
            assert client.get("/", headers={"host": "web"}).status_code == 200
    assert bad.stats()["requests"] == at_bad + 5
    assert endpoint_stats(px, bad.address)["ejections"] == ejections + 1
    assert endpoint_stats(px, bad.address)["ejected"] is True
    assert metric(px, "fastmesh_outlier_ejections_total", backend="default/web:8080", endpoint=bad.address) == ejections + 1


def test_post_without_opt_in_is_never_retried_and_a_1mib_put_is_not(upstream_factory, proxy_factory):
    bad = upstream_factory("bad", fail_status=503)
    retry = {"codes": [503], "attempts": 2, "backoff": "1ms"}
    config = mesh_config(
        services=[service("web", [bad.address])],
        routes=[route("web", [{**rule(backend("web")), "retry": retry}], parent="web")],
    )
    px = proxy_factory(config)
    with px.client() as client:
        assert client.post("/", headers={"host": "web"}, content=b"x" * 100).status_code == 503
        assert client.put("/", headers={"host": "web"}, content=b"x" * 100).status_code == 503
        assert client.put("/", headers={"host": "web"}, content=b"x" * (1 << 20)).status_code == 503
        assert client.delete("/", headers={"host": "web"}).status_code == 503
    methods = bad.stats()["methods"]
    # POST: once. PUT: 3 tries of the small body + 1 of the 1 MiB one. DELETE: 3 tries.
    assert methods == {"POST": 1, "PUT": 4, "DELETE": 3}, methods


def test_post_is_retried_when_the_policy_marks_it_retryable(upstream_factory, proxy_factory):
    bad = upstream_factory("bad", fail_status=503)
    config = mesh_config(
        services=[service("web", [bad.address])],
        extra=[policy("web", attempts=1, retryOn=["5xx"], retryableMethods=["POST"], backoff={"baseInterval": "1ms"})],
    )
    px = proxy_factory(config)
    assert px.get("/", "web").status_code == 503
    with px.client() as client:
        assert client.post("/", headers={"host": "web"}, content=b"payload").status_code == 503
    assert bad.stats()["methods"] == {"GET": 2, "POST": 2}


def test_a_slow_endpoint_trips_the_per_try_timeout_and_the_retry_lands_elsewhere(upstream_factory, proxy_factory):
    fast = upstream_factory("fast")
    slow = upstream_factory("slow", delay_ms=3000)
    rules = [{**rule(backend("web")), "timeouts": {"backendRequest": "200ms"}, "retry": {"attempts": 1, "backoff": "1ms"}}]
    px = proxy_factory(
        mesh_config(services=[service("web", [slow.address, fast.address], lb="round-robin")], routes=[route("web", rules, parent="web")])
    )
    with px.client() as client:
        for _ in range(6):
            r = client.get("/", headers={"host": "web"})
            assert r.status_code == 200 and r.json()["upstream"] == "fast"
    stats = resilience(px, "default/web/rule/0")
    assert stats["timeouts"]["per_try"] == slow.stats()["requests"] >= 3
    assert stats["retries"]["reset"] == stats["timeouts"]["per_try"]


def test_a_request_timeout_answers_504_in_time(upstream_factory, proxy_factory):
    slow = upstream_factory("slow", delay_ms=3000)
    rules = [{**rule(backend("web")), "timeouts": {"request": "300ms"}}]
    px = proxy_factory(mesh_config(services=[service("web", [slow.address])], routes=[route("web", rules, parent="web")]))
    started = time.monotonic()
    r = px.get("/", "web")
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert elapsed < 2.5, f"504 after {elapsed:.2f}s: not before the upstream's 3 s answer"
    assert resilience(px, "default/web/rule/0")["timeouts"] == {"request": 1}
    assert metric(px, "fastmesh_timeouts_total", route="default/web/rule/0", kind="request") == 1


def test_retry_storm_every_endpoint_failing_stays_within_the_budget(upstream_factory, proxy_factory, require_tools):
    require_tools("h2load")
    ups = upstream_factory.many(["a", "b", "c"], fail_status=503)
    budget = {"percent": 20, "minRetriesPerSecond": 1, "ttl": "10s"}
    config = mesh_config(
        services=[service("web", [u.address for u in ups])],
        extra=[policy("web", attempts=3, retryOn=["5xx"], backoff={"baseInterval": "1ms"}, budget=budget)],
    )
    px = proxy_factory(config)
    started = time.monotonic()
    result = h2load(px, "web", "-n", "2000", "-c", "4", "-m", "4")
    elapsed = time.monotonic() - started
    assert result["5xx"] == 2000, result
    tries = sum(u.stats()["requests"] for u in ups)
    # Allowed: 20 % of the requests in any 10 s window plus 1/s * 10 s per window.
    windows = int(elapsed // 10) + 1
    allowed = 2000 + 0.2 * 2000 + 10 * windows
    assert 2000 < tries <= allowed, f"{tries} tries at the upstreams for 2000 requests (allowed {allowed:.0f}; no budget: 8000)"
    stats = resilience(px, "default/web/default")
    print(f"\nretry storm: 2000 requests, {tries} tries at the upstreams in {elapsed:.1f} s (allowed {allowed:.0f})")
    assert stats["retries"]["5xx"] == tries - 2000
    assert stats["budget_exhausted"] > 1000
    assert metric(px, "fastmesh_retry_budget_exhausted_total", route="default/web/default") == stats["budget_exhausted"]


def test_a_reset_mid_response_is_invisible_to_idempotent_requests(proxy_factory):
    up = RawUpstream("reset-mid-response")
    try:
        px = proxy_factory(mesh_config(services=[service("web", [up.address])], proxy={"pool": {"maxIdlePerEndpoint": 0}}))
        for _ in range(20):  # a fresh upstream connection each time: every other one resets
            r = px.get("/", "web")
            assert (r.status_code, r.text) == (200, "ok")
        assert up.broken >= 10
        assert resilience(px, "default/web/default")["retries"]["reset"] == up.broken
        # A POST is not replayed once it reached the upstream: the reset shows as 502.
        statuses = set()
        with httpx.Client(base_url=px.url, timeout=10) as client:
            for _ in range(4):
                statuses.add(client.post("/", headers={"host": "web"}, content=b"x").status_code)
        assert statuses == {200, 502}, statuses
    finally:
        up.close()


def test_an_idle_connection_closed_just_as_it_is_reused_is_invisible(proxy_factory):
    up = RawUpstream("close-on-reuse")
    try:
        px = proxy_factory(mesh_config(services=[service("web", [up.address])]))
        with px.client() as client:
            for _ in range(20):
                r = client.get("/", headers={"host": "web"})
                assert (r.status_code, r.text) == (200, "ok")
        assert up.broken >= 9, "the proxy did reuse connections the upstream then dropped"
        assert resilience(px, "default/web/default")["retries"]["reset"] == up.broken
    finally:
        up.close()


def test_nginx_closing_idle_keepalive_connections_as_they_are_reused_costs_no_error(proxy_factory, tmp_path):
    """A real peer for the stale-connection race: nginx closes idle keep-alive connections after 40 ms and
    the requests come 30-50 ms apart, so some land on a connection nginx is closing at that moment."""
    import random

    from tests.engine.test_reload_full_speed import Nginx

    nginx = Nginx("web", tmp_path, keepalive="40ms")
    try:
        px = proxy_factory(mesh_config(services=[service("web", [nginx.address])]))
        failures = []
        with px.client() as client:
            for _ in range(150):
                r = client.get("/", headers={"host": "web"})
                if r.status_code != 200:
                    failures.append(r.status_code)
                time.sleep(random.uniform(0.030, 0.050))
        assert failures == [], failures
        races = resilience(px, "default/web/default").get("retries", {}).get("reset", 0)
        print(f"\nstale-connection races retried: {races} of 150 requests")
    finally:
        nginx.stop()
