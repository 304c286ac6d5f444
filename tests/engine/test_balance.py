"""Traffic splitting across backends (weighted, deterministic) and across endpoints (P2C peak-EWMA, round robin)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.harness import Proxy, h2load, mesh_config, service, split_config


def test_weighted_split_90_10_over_10000_requests(upstream_factory, proxy_factory, require_tools):
    require_tools("h2load")
    v1, v2 = upstream_factory.many(["v1", "v2"])
    px = proxy_factory(split_config({"v1": v1.address, "v2": v2.address}, {"v1": 90, "v2": 10}))

    result = h2load(px, "reviews", "-n", "10000", "-c", "4", "-m", "8")
    assert (result["succeeded"], result["2xx"]) == (10_000, 10_000), result

    n1, n2 = v1.stats()["requests"], v2.stats()["requests"]
    assert n1 + n2 == 10_000
    assert abs(n2 / 10_000 - 0.10) <= 0.02, f"v2 got {n2 / 100:.2f}% instead of 10 ± 2"
    # Smooth weighted round robin is deterministic: the split is exact, not merely close.
    assert (n1, n2) == (9000, 1000)


def run_load(px: Proxy, host: str, total: int, concurrency: int) -> Counter[str]:
    def worker(count: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        with px.client() as client:
            for _ in range(count):
                r = client.get("/", headers={"host": host})
                assert r.status_code == 200
                seen[r.headers["x-upstream"]] += 1
        return seen

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(worker, [total // concurrency] * concurrency), Counter())


def test_p2c_peak_ewma_prefers_the_fast_endpoint(upstream_factory, proxy_factory):
    fast = upstream_factory("fast")
    slow = upstream_factory("slow", delay_ms=40)
    px = proxy_factory(mesh_config(services=[service("lb", [fast.address, slow.address])]))  # default balancer

    counts = run_load(px, "lb", total=400, concurrency=4)
    assert counts["fast"] + counts["slow"] == 400
    assert counts["fast"] >= 0.85 * 400, f"P2C peak-EWMA sent {counts['slow']} of 400 requests to the slow endpoint"


def test_round_robin_annotation_splits_evenly_whatever_the_latency(upstream_factory, proxy_factory):
    fast = upstream_factory("fast")
    slow = upstream_factory("slow", delay_ms=40)
    px = proxy_factory(mesh_config(services=[service("lb", [fast.address, slow.address], lb="round-robin")]))

    counts = run_load(px, "lb", total=200, concurrency=4)
    assert abs(counts["fast"] - counts["slow"]) <= 2, counts
    # Sequentially, strictly alternating.
    with px.client() as client:
        order = [client.get("/", headers={"host": "lb"}).headers["x-upstream"] for _ in range(6)]
    assert all(a != b for a, b in zip(order, order[1:])), order


def test_spec_load_balancer_round_robin_applies_to_services_without_annotation(upstream_factory, proxy_factory):
    fast = upstream_factory("fast")
    slow = upstream_factory("slow", delay_ms=40)
    px = proxy_factory(
        mesh_config(services=[service("lb", [fast.address, slow.address])], proxy={"loadBalancer": "RoundRobin"})
    )
    counts = run_load(px, "lb", total=100, concurrency=2)
    assert abs(counts["fast"] - counts["slow"]) <= 2, counts
    assert httpx.get(px.url, headers={"host": "lb"}).status_code == 200
