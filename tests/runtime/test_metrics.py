"""The Prometheus collector: engine stats JSON -> metric families, read at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fastmesh import metrics
from fastmesh.state import State
from tests.runtime.fakes import BOUNDS_MS, engine_stats


def scrape(stats: dict[str, Any], state: State | None = None) -> dict[str, Any]:
    registry = metrics.make_registry(lambda: stats, state or State(source="mesh.yaml"))
    text = metrics.exposition(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name
    }


def test_cumulative_buckets_convert_ms_to_seconds_and_accumulate() -> None:
    buckets = metrics.cumulative_buckets([0.5, 1, 2.5], [3, 0, 2], inf=1)
    assert buckets == [("0.0005", 3.0), ("0.001", 3.0), ("0.0025", 5.0), ("+Inf", 6.0)]


def test_cumulative_buckets_refuse_a_length_mismatch() -> None:
    with pytest.raises(ValueError):
        metrics.cumulative_buckets([0.5, 1], [1], inf=0)


ROUTE = "default/reviews/rule/0"
V1 = "default/reviews-v1:8080"


def test_requests_by_route_backend_and_code_class() -> None:
    counts = [0] * len(BOUNDS_MS)
    counts[1], counts[4] = 7, 2  # 7 requests <= 1 ms, 2 <= 10 ms
    stats = engine_stats(routes=[
        {"route": ROUTE, "backend": V1, "status": {"2xx": 9, "5xx": 1},
         "latency": {"buckets": counts, "inf": 1, "sum_ms": 12000.0, "count": 10}},
        {"route": "", "backend": "", "status": {"4xx": 4},
         "latency": {"buckets": [4] + [0] * (len(BOUNDS_MS) - 1), "inf": 0, "sum_ms": 0.4, "count": 4}},
    ])
    families = scrape(stats)

    requests = samples(families["fastmesh_requests"], "fastmesh_requests_total")
    assert requests == {
        (("backend", V1), ("code_class", "2xx"), ("route", ROUTE)): 9.0,
        (("backend", V1), ("code_class", "5xx"), ("route", ROUTE)): 1.0,
        (("backend", ""), ("code_class", "4xx"), ("route", "")): 4.0,
    }

    hist = families["fastmesh_request_duration_seconds"]
    buckets = {
        s.labels["le"]: s.value
        for s in hist.samples
        if s.name.endswith("_bucket") and s.labels["route"] == ROUTE
    }
    assert buckets["0.0005"] == 0
    assert buckets["0.001"] == 7
    assert buckets["0.005"] == 7
    assert buckets["0.01"] == 9
    assert buckets["10.0"] == 9
    assert buckets["+Inf"] == 10
    route_labels = (("backend", V1), ("route", ROUTE))
    assert samples(hist, "fastmesh_request_duration_seconds_count")[route_labels] == 10
    assert samples(hist, "fastmesh_request_duration_seconds_sum")[route_labels] == 12.0


def test_connections_pools_and_config_state() -> None:
    stats = engine_stats(
        connections={"active": 3, "total": 41},
        requests_active=5,
        upstream=[
            {"backend": V1, "endpoint": "127.0.0.1:9001", "connections_open": 4, "requests_active": 2},
            {"backend": V1, "endpoint": "127.0.0.1:9002", "connections_open": 1, "requests_active": 0},
        ],
    )
    state = State(source="mesh.yaml", reloads=2, reload_failures=3)
    families = scrape(stats, state)

    def value(family: str, sample: str | None = None) -> float:
        (v,) = samples(families[family], sample or family).values()
        return v

    assert value("fastmesh_connections_active") == 3
    assert value("fastmesh_connections", "fastmesh_connections_total") == 41
    assert value("fastmesh_requests_active") == 5
    assert value("fastmesh_config_version") == 0  # nothing applied in this state
    assert value("fastmesh_config_reload_failures", "fastmesh_config_reload_failures_total") == 3
    assert value("fastmesh_config_reloads", "fastmesh_config_reloads_total") == 2
    pools = samples(families["fastmesh_upstream_connections_open"], "fastmesh_upstream_connections_open")
    assert pools == {
        (("backend", V1), ("endpoint", "127.0.0.1:9001")): 4.0,
        (("backend", V1), ("endpoint", "127.0.0.1:9002")): 1.0,
    }


def test_engine_is_read_at_scrape_time_not_at_registration() -> None:
    reads: list[int] = []

    def stats() -> dict[str, Any]:
        reads.append(1)
        return engine_stats(requests_active=len(reads))

    registry = metrics.make_registry(stats, State(source="mesh.yaml"))
    assert reads == []
    metrics.exposition(registry)
    text = metrics.exposition(registry).decode()
    assert "fastmesh_requests_active 2.0" in text




# What importing the proxy's modules leaves resident (bench/README.md, "Idle RSS"): run in a
# fresh interpreter, since this one has imported all sorts for the tests.
HEAVY = ("prometheus_client.exposition", "prometheus_client.metrics", "http.server", "urllib.request",
         "email", "wsgiref", "gzip", "lzma", "bz2")


def _modules_after(code: str) -> set[str]:
    src = str(Path(metrics.__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60, env={**os.environ, "PYTHONPATH": src},
    )
    return set(out.stdout.split())


def test_the_proxy_imports_only_the_parts_of_prometheus_client_it_uses() -> None:
    loaded = _modules_after("import fastmesh.cli, fastmesh.runtime")
    assert "prometheus_client.openmetrics.exposition" in loaded  # the check sees what is imported
    assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))


def test_prometheus_client_is_whole_for_code_that_imports_the_package_after_fastmesh() -> None:
    loaded = _modules_after(
        "from fastmesh import metrics\n"
        "import prometheus_client\n"
        "from prometheus_client import CollectorRegistry, generate_latest\n"
        "assert CollectorRegistry is metrics.CollectorRegistry\n"
        "registry = CollectorRegistry()\n"
        "prometheus_client.Counter('c', 'a counter', registry=registry).inc()\n"
        "assert b'c_total 1.0' in generate_latest(registry)\n"
    )
    assert "prometheus_client.exposition" in loaded


def test_authorization_decisions_by_policy() -> None:
    stats = engine_stats(
        authz=[
            {"policy": "default/deny-admin", "action": "DENY", "matched": 3},
            {"policy": "default/allow-reads", "action": "ALLOW", "matched": 7},
            {"policy": "default/audit-all", "action": "AUDIT", "matched": 10},
        ],
        authz_denied_no_match=2,
    )
    families = scrape(stats)
    matched = samples(families["fastmesh_authz_policy_matched"], "fastmesh_authz_policy_matched_total")
    assert matched == {
        (("action", "DENY"), ("policy", "default/deny-admin")): 3.0,
        (("action", "ALLOW"), ("policy", "default/allow-reads")): 7.0,
        (("action", "AUDIT"), ("policy", "default/audit-all")): 10.0,
    }
    no_match = samples(families["fastmesh_authz_denied_no_match"], "fastmesh_authz_denied_no_match_total")
    assert no_match == {(): 2.0}
