"""Connection-pool limits end to end: TrafficPolicy connectionPool -> `fastmesh proxy` -> a slow real upstream,
overloaded by h2load; requests over the limit get 503 at once with `x-fastmesh-overflow`."""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path
from typing import Any

from tests.harness import curl, mesh_config, service, traffic_policy
from tests.resilience.test_retries import metric


DELAY_MS = 300
"""The slow upstream's answer time."""


def limited(name: str, **pool: Any) -> dict[str, Any]:
    return traffic_policy(name, connectionPool=pool)


def test_overload_against_a_connection_limit_answers_503_fast_instead_of_queueing(
    upstream_factory, proxy_factory, require_tools, tmp_path: Path
):
    require_tools("h2load", "curl")
    slow = upstream_factory("slow", delay_ms=DELAY_MS)
    config = mesh_config(
        services=[service("web", [slow.address])],
        extra=[limited("web", maxConnections=4, maxPendingRequests=0)],
    )
    px = proxy_factory(config)

    log = tmp_path / "h2load.tsv"
    done = subprocess.run(
        ["h2load", "-n", "1200", "-c", "24", "-m", "1", "--log-file", str(log), "-H", ":authority: web", f"{px.url}/"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    refused_ms = sorted(int(r[2]) / 1000 for r in rows if r[1] == "503")
    served = [r for r in rows if r[1] == "200"]
    assert len(rows) == 1200 and len(served) + len(refused_ms) == 1200, done.stdout
    assert served, "requests within the limit are served"
    assert slow.stats()["max_active"] <= 4, "never more than 4 connections' worth of requests upstream"
    p99 = refused_ms[int(len(refused_ms) * 0.99) - 1]
    print(f"\n503s: {len(refused_ms)}, p50 {statistics.median(refused_ms):.2f} ms, p99 {p99:.2f} ms, max {refused_ms[-1]:.2f} ms")
    # Not queued: a queued request would wait at least one upstream answer (DELAY_MS). The bound is that
    # structural fact, not a speed: how fast the 503s come is measured by bench/, not asserted here.
    assert p99 < DELAY_MS, f"p99 of the 503s {p99:.1f} ms: they waited for the upstream"

    stats = px.stats()
    backend = next(b for b in stats["backends"] if b["backend"] == "default/web:8080")
    assert backend["overflow"] == {"max_connections": len(refused_ms)}
    assert metric(px, "fastmesh_overflows_total", backend="default/web:8080", limit="max_connections") == len(refused_ms)


def test_the_overflow_header_names_the_limit(upstream_factory, proxy_factory, require_tools):
    require_tools("curl")
    slow = upstream_factory("slow", delay_ms=3000)
    px = proxy_factory(mesh_config(services=[service("web", [slow.address])], extra=[limited("web", maxRequests=1)]))
    first = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H", "host: web", f"{px.url}/"])
    try:
        import time

        deadline = time.monotonic() + 10
        while slow.stats()["active"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        out = curl("-si", "-H", "host: web", f"{px.url}/").stdout
        assert out.startswith("HTTP/1.1 503"), out
        assert "x-fastmesh-overflow: max_requests" in out.lower(), out
    finally:
        first.wait(timeout=30)
