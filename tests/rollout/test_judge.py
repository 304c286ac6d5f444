"""Judging a step from the engine's counters: windows, p99 from histogram buckets, gates; weights in the snapshot."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from fastmesh.rollout import Window, judge, override_weights, quantile, window

BOUNDS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


def hist(**at: int) -> list[int]:
    """Buckets with counts at the given bounds: hist(b10=5) puts 5 in the bucket whose upper bound is 10."""
    out = [0] * len(BOUNDS)
    for key, n in at.items():
        out[BOUNDS.index(float(key[1:]))] = n
    return out


def entry(route: str, backend: str, status: dict[str, int], buckets: list[int], inf: int = 0) -> dict[str, Any]:
    return {"route": route, "backend": backend, "status": status,
            "latency": {"buckets": buckets, "inf": inf, "sum_ms": 0.0, "count": sum(buckets) + inf}}


def test_window_sums_the_entries_of_one_route_and_backend() -> None:
    stats = {"latency_bounds_ms": BOUNDS, "routes": [
        entry("r/rule/0", "b", {"2xx": 8, "5xx": 2}, hist(b10=10)),
        entry("r/rule/0", "b", {"2xx": 1}, hist(b25=1)),
        entry("r/rule/0", "other", {"5xx": 50}, hist(b10=50)),
        entry("r/rule/1", "b", {"5xx": 50}, hist(b10=50)),
    ]}
    w = window(stats, "r/rule/0", "b")
    assert (w.requests, w.failures, w.buckets, w.inf) == (11, 2, hist(b10=10, b25=1), 0)
    base = Window(5, 1, hist(b10=5), 0)
    d = w.minus(base)
    assert (d.requests, d.failures, d.buckets) == (6, 1, hist(b10=5, b25=1))
    assert d.success_rate == pytest.approx(100 * 5 / 6)
    assert window({"routes": []}, "r", "b").success_rate is None


def test_p99_is_interpolated_within_its_bucket() -> None:
    # 100 observations: 98 in (5, 10], 2 in (25, 50]: rank 99 is the first of the two in (25, 50]
    assert quantile(0.99, BOUNDS, hist(b10=98, b50=2), 0) == pytest.approx(25 + 25 * 1 / 2)
    assert quantile(0.99, BOUNDS, hist(b10=100), 0) == pytest.approx(5 + 5 * 0.99)
    assert quantile(0.5, BOUNDS, hist(b1=50, b10=50), 0) == pytest.approx(1.0)
    assert quantile(0.99, BOUNDS, hist(b10=90), 10) == math.inf
    assert quantile(0.99, BOUNDS, hist(), 0) is None


GATES = {"min_success_rate": 99.0, "max_success_rate_drop": None, "max_p99_ms": None, "max_p99_ratio": None,
         "min_requests": 20}


def test_too_few_canary_responses_hold() -> None:
    v = judge(GATES, BOUNDS, Window(19, 19, hist(b10=19)), Window(500, 0, hist(b10=500)))
    assert v.decision == "hold" and v.reason == "19 canary responses, the step needs 20"


def test_success_rate_gate() -> None:
    stable = Window(500, 0, hist(b10=500))
    assert judge(GATES, BOUNDS, Window(100, 1, hist(b10=100)), stable).decision == "pass"  # 99 % >= 99
    v = judge(GATES, BOUNDS, Window(100, 5, hist(b10=100)), stable)
    assert v.decision == "fail" and v.reason == "canary success rate 95.00% < minSuccessRate 99.0%"
    assert v.figures["canary_success_rate"] == 95.0 and v.figures["stable_success_rate"] == 100.0


def test_success_rate_drop_compares_with_stable() -> None:
    gates = {**GATES, "min_success_rate": None, "max_success_rate_drop": 2.0}
    canary = Window(100, 5, hist(b10=100))  # 95 %
    assert judge(gates, BOUNDS, canary, Window(1000, 40, hist(b10=1000))).decision == "pass"  # stable 96 %
    v = judge(gates, BOUNDS, canary, Window(1000, 0, hist(b10=1000)))
    assert v.decision == "fail" and "5.00 points below stable's 100.00%" in v.reason
    assert judge(gates, BOUNDS, canary, Window()).decision == "hold"  # nothing to compare with


def test_latency_gates() -> None:
    gates = {**GATES, "min_success_rate": None, "max_p99_ms": 30.0}
    stable = Window(1000, 0, hist(b10=1000))
    assert judge(gates, BOUNDS, Window(100, 0, hist(b25=100)), stable).decision == "pass"
    v = judge(gates, BOUNDS, Window(100, 0, hist(b50=100)), stable)
    assert v.decision == "fail" and v.reason.startswith("canary p99 49.8 ms > maxP99Ms 30.0")
    ratio = {**GATES, "min_success_rate": None, "max_p99_ratio": 1.5}
    assert judge(ratio, BOUNDS, Window(100, 0, hist(b10=100)), stable).decision == "pass"
    v = judge(ratio, BOUNDS, Window(100, 0, hist(b25=100)), stable)  # p99 doubled and more
    assert v.decision == "fail" and "(maxP99Ratio)" in v.reason
    v = judge(gates, BOUNDS, Window(100, 0, hist(b10=50), inf=50), stable)
    assert v.decision == "fail" and v.figures["canary_p99_ms"] == "+Inf"


def test_override_weights_touches_only_the_named_route() -> None:
    snapshot = {"vhosts": [{"routes": [
        {"name": "r/rule/0", "backends": [{"backend": "s", "weight": 90}, {"backend": "c", "weight": 10}]},
        {"name": "x/rule/0", "backends": [{"backend": "s", "weight": 1}]},
    ]}, {"routes": [{"name": "r/rule/0", "backends": [{"backend": "s", "weight": 90}, {"backend": "c", "weight": 10}]}]}]}
    text = json.dumps(snapshot)
    assert override_weights(text, {}) is text
    out = json.loads(override_weights(text, {"r/rule/0": {"s": 75, "c": 25}}))
    weights = [[b["weight"] for b in r["backends"]] for v in out["vhosts"] for r in v["routes"]]
    assert weights == [[75, 25], [1], [75, 25]]


def engine_bounds() -> list[float]:
    """The bounds the engine's histograms really have (an in-process engine's stats document)."""
    from fastmesh._engine import Engine

    bounds: list[float] = json.loads(Engine().stats_json())["latency_bounds_ms"]
    return bounds


def placed(bounds: list[float], ms: float, n: int) -> list[int]:
    """n observations of `ms` in the engine's buckets (upper bounds inclusive)."""
    out = [0] * len(bounds)
    out[next(i for i, b in enumerate(bounds) if ms <= b)] = n
    return out


def test_a_doubling_from_11_to_22_ms_fails_the_p99_ratio_gate_with_the_engine_bounds() -> None:
    gates = {**GATES, "min_success_rate": None, "max_p99_ratio": 1.5}
    bounds = engine_bounds()
    verdict = judge(gates, bounds, Window(200, 0, placed(bounds, 22, 200)), Window(200, 0, placed(bounds, 11, 200)))
    assert verdict.decision == "fail" and "(maxP99Ratio)" in verdict.reason, verdict
    assert verdict.figures["canary_p99_ms"] >= 1.9 * verdict.figures["stable_p99_ms"]
    # the old bounds (10, 25, ...) put both in one bucket: the same p99, the doubling unseen
    old = judge(gates, BOUNDS, Window(200, 0, placed(BOUNDS, 22, 200)), Window(200, 0, placed(BOUNDS, 11, 200)))
    assert old.decision == "pass" and old.figures["canary_p99_ms"] == old.figures["stable_p99_ms"]
    # any doubling from 1.25 ms to 5 s doubles the p99 read from the engine's buckets
    ms = 1.26
    while ms <= 5000:
        doubled = judge(gates, bounds, Window(100, 0, placed(bounds, 2 * ms, 100)),
                        Window(100, 0, placed(bounds, ms, 100)))
        assert doubled.decision == "fail", ms
        assert doubled.figures["canary_p99_ms"] == pytest.approx(2 * doubled.figures["stable_p99_ms"]), ms
        ms *= 1.03
