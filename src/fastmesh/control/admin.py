"""The control plane's admin HTTP API (`fastmesh control --admin IP:PORT`, plain HTTP, keep it on loopback or a
private network): /ready (200 once the cluster is listed), /live, /stats (JSON) and /metrics (OpenMetrics)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from fastmesh import http1, metrics
from fastmesh.http1 import Request, Response
from fastmesh.metrics import CounterMetricFamily, GaugeMetricFamily, Metric


def families(stats: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily("fastmesh_control_documents", "Documents of the cluster held.", value=stats["documents"])
    yield CounterMetricFamily("fastmesh_control_changes", "Changes of the cluster applied to the views.",
                              value=stats["changes"])
    yield CounterMetricFamily("fastmesh_control_token_reviews", "TokenReviews asked of the API server.",
                              value=stats["token_reviews"])
    version = GaugeMetricFamily("fastmesh_control_view_version", "Current version of each view.", labels=["view"])
    subscribers = GaugeMetricFamily("fastmesh_control_view_subscribers", "Proxies streaming each view.",
                                    labels=["view"])
    for name, view in stats["views"].items():
        version.add_metric([name], view["version"])
        subscribers.add_metric([name], view["subscribers"])
    yield version
    yield subscribers
    yield GaugeMetricFamily("fastmesh_control_leader", "1 while this replica holds the Lease (writes status).",
                            value=1 if stats["status"]["leading"] else 0)
    yield CounterMetricFamily("fastmesh_control_status_writes", "Status subresource writes.",
                              value=stats["status"]["writes"])
    serving = stats.get("serving_certificate")
    if serving is not None:
        yield GaugeMetricFamily("fastmesh_control_serving_certificate_expiry_seconds",
                                "notAfter of the serving certificate in use (seconds since the epoch).",
                                value=serving["not_after"])


class _Collector(metrics.Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        return families(self.stats())

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ControlAdmin(http1.Served):
    def __init__(self, stats: Callable[[], dict[str, Any]], ready: Callable[[], bool]) -> None:
        self.stats = stats
        self.ready = ready
        self.registry = metrics.CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(stats))

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("allow", "GET, HEAD")])
        if request.path == "/ready":
            return Response(200, b"ready\n") if self.ready() else Response(503, b"listing the cluster\n")
        if request.path == "/live":
            return Response(200, b"live\n")
        if request.path == "/stats":
            body = json.dumps({"pid": os.getpid(), **self.stats()}, indent=2) + "\n"
            return Response(200, body.encode(), "application/json")
        if request.path == "/metrics":
            return Response(200, metrics.exposition(self.registry), metrics.CONTENT_TYPE)
        return Response(404, f"not found: {request.path}\n".encode())
