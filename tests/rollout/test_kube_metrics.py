"""The Kubernetes rollout controller reads the proxies' /metrics back into the engine's stats document."""

from __future__ import annotations

from typing import Any

from fastmesh import metrics
from fastmesh.kube.rollouts import Scraper, stats_document, parse_metrics
from fastmesh.rollout import window
from fastmesh.state import State

BOUNDS = [0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0]


def engine_stats(ok: int, bad: int, slow: int = 0) -> dict[str, Any]:
    return {"latency_bounds_ms": BOUNDS, "routes": [
        {"route": "ns/r/rule/1", "backend": "ns/c:80", "status": {"2xx": ok, "5xx": bad},
         "latency": {"buckets": [0, 0, 0, ok + bad - slow, 0, 0, 0, slow] + [0] * 6, "inf": 0, "sum_ms": 1.0}}]}


def exposition(stats: dict[str, Any]) -> str:
    return metrics.exposition(metrics.make_registry(lambda: stats, State(source="test"))).decode()


def test_metrics_read_back_give_the_engines_counters() -> None:
    stats = engine_stats(90, 10, slow=3)
    doc = stats_document(parse_metrics(exposition(stats)))
    assert doc["latency_bounds_ms"] == BOUNDS
    got, want = window(doc, "ns/r/rule/1", "ns/c:80"), window(stats, "ns/r/rule/1", "ns/c:80")
    assert (got.requests, got.failures, got.buckets, got.inf) == (100, 10, want.buckets, 0)


def test_proxies_are_summed_and_a_restarted_proxy_keeps_what_it_had_counted() -> None:
    scraper = Scraper([])
    scraper.read("a", exposition(engine_stats(50, 0)))
    scraper.read("b", exposition(engine_stats(30, 5)))
    first = window(scraper.stats(), "ns/r/rule/1", "ns/c:80")
    assert (first.requests, first.failures) == (85, 5)
    scraper.read("b", exposition(engine_stats(2, 1)))  # b restarted: its counters began again
    after = window(scraper.stats(), "ns/r/rule/1", "ns/c:80")
    assert (after.requests, after.failures) == (88, 6)  # never less than before: windows stay >= 0
