"""Prometheus metrics: a collector that reads the engine's counters at scrape time.

Nothing is counted in Python: the engine keeps cumulative counters, and each scrape converts one
`stats_json()` document (docs/engine-snapshot.md) into metric families on a private registry,
written in the OpenMetrics 1.0 text format by prometheus-client's encoder.

Only the parts of prometheus-client this needs are imported (`defer_package_init`): the package's
`__init__` imports every exporter it has (HTTP and WSGI servers, the push-gateway client, the
Prometheus 0.0.4 text encoder that lives beside them), and with them http.server, urllib.request,
email, wsgiref and gzip: 4.4 MiB that would stay resident in the proxy for good
(bench/README.md, "Idle RSS").
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def defer_package_init(package: str) -> None:
    """Let submodules of `package` be imported without running the package's `__init__` first.

    Unless it is already imported, the package goes into sys.modules as created from its spec but
    not executed, with a module `__getattr__` (PEP 562) that runs its `__init__` the first time a
    name that only `__init__` defines is asked for (`import prometheus_client;
    prometheus_client.Counter`): code that wants the whole package still gets all of it."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not installed as a package", name=package)
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:  # noqa: N807
        del vars(module)["__getattr__"]  # once: importlib's own lookups during __init__ are plain misses
        loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[package] = module


defer_package_init("prometheus_client")

from prometheus_client.metrics_core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest  # noqa: E402
from prometheus_client.registry import Collector, CollectorRegistry  # noqa: E402

from fastmesh.state import State  # noqa: E402

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what generate_latest writes: OpenMetrics 1.0.0 text

Stats = dict[str, Any]


def cumulative_buckets(
    bounds_ms: Iterable[float], counts: Iterable[int], inf: int
) -> list[tuple[str, float]]:
    """Engine buckets (per-bucket counts, upper bounds in ms) -> Prometheus `le` buckets in seconds."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(bounds_ms, counts, strict=True):
        total += count
        buckets.append((repr(bound / 1000.0), float(total)))  # 0.0005, 0.001, ... 10.0
    buckets.append(("+Inf", float(total + inf)))
    return buckets


def request_families(stats: Stats) -> Iterator[Metric]:
    """Requests by route, backend and status class, and their latency histogram."""
    requests = CounterMetricFamily(
        "fastmesh_requests",
        "Requests answered, by route, backend and status code class.",
        labels=["route", "backend", "code_class"],
    )
    duration = HistogramMetricFamily(
        "fastmesh_request_duration_seconds",
        "Time from request received to response head sent, by route and backend.",
        labels=["route", "backend"],
    )
    bounds = stats.get("latency_bounds_ms", [])
    for entry in stats.get("routes", []):
        labels = [entry["route"], entry["backend"]]
        for code_class, count in sorted(entry.get("status", {}).items()):
            requests.add_metric([*labels, code_class], count)
        latency = entry.get("latency")
        if latency:
            duration.add_metric(
                labels,
                buckets=cumulative_buckets(bounds, latency["buckets"], latency.get("inf", 0)),
                sum_value=latency["sum_ms"] / 1000.0,
            )
    yield requests
    yield duration


def connection_families(stats: Stats) -> Iterator[Metric]:
    connections = stats.get("connections", {})
    yield GaugeMetricFamily(
        "fastmesh_connections_active",
        "Downstream connections open.",
        value=connections.get("active", 0),
    )
    yield CounterMetricFamily(
        "fastmesh_connections",
        "Downstream connections accepted.",
        value=connections.get("total", 0),
    )
    yield GaugeMetricFamily(
        "fastmesh_requests_active",
        "Requests in flight.",
        value=stats.get("requests_active", 0),
    )
    pool = GaugeMetricFamily(
        "fastmesh_upstream_connections_open",
        "Upstream connections open (idle and busy), by backend and endpoint.",
        labels=["backend", "endpoint"],
    )
    in_flight = GaugeMetricFamily(
        "fastmesh_upstream_requests_active",
        "Requests in flight to an upstream endpoint.",
        labels=["backend", "endpoint"],
    )
    for entry in stats.get("upstream", []):
        labels = [entry["backend"], entry["endpoint"]]
        pool.add_metric(labels, entry.get("connections_open", 0))
        in_flight.add_metric(labels, entry.get("requests_active", 0))
    yield pool
    yield in_flight


def authz_families(stats: Stats) -> Iterator[Metric]:
    """Authorization decisions: requests each policy matched, and denials for want of an ALLOW match."""
    matched = CounterMetricFamily(
        "fastmesh_authz_policy_matched",
        "Requests an authorization policy matched (DENY: denied; ALLOW: allowed; AUDIT: audited), by policy.",
        labels=["policy", "action"],
    )
    for entry in stats.get("authz", []):
        matched.add_metric([entry["policy"], entry["action"]], entry["matched"])
    yield matched
    yield CounterMetricFamily(
        "fastmesh_authz_denied_no_match",
        "Requests denied because ALLOW policies apply (or default deny) and none matched.",
        value=stats.get("authz_denied_no_match", 0),
    )
def resilience_families(stats: Stats) -> Iterator[Metric]:
    """Retries by route and reason, retries the budget refused, timeouts by route and kind."""
    retries = CounterMetricFamily(
        "fastmesh_retries", "Retries sent, by route and the condition that triggered them.", labels=["route", "reason"]
    )
    exhausted = CounterMetricFamily(
        "fastmesh_retry_budget_exhausted", "Retries due but refused by the retry budget, by route.", labels=["route"]
    )
    timeouts = CounterMetricFamily(
        "fastmesh_timeouts", "Timeouts, by route and kind (request: 504 to the client, or a response body cut; per_try).", labels=["route", "kind"]
    )
    faults = CounterMetricFamily("fastmesh_faults", "Faults injected, by route and kind (delay, abort).", labels=["route", "kind"])
    mirrored = CounterMetricFamily("fastmesh_mirrored", "Request copies sent to the mirror backend, by route.", labels=["route"])
    mirror_skipped = CounterMetricFamily(
        "fastmesh_mirror_skipped",
        "Requests chosen for mirroring but not copied (body not kept, no mirror endpoint), by route.",
        labels=["route"],
    )
    for entry in stats.get("resilience", []):
        route = entry["route"]
        for reason, count in sorted(entry.get("retries", {}).items()):
            retries.add_metric([route, reason], count)
        exhausted.add_metric([route], entry.get("budget_exhausted", 0))
        for kind, count in sorted(entry.get("timeouts", {}).items()):
            timeouts.add_metric([route, kind], count)
        for kind, count in sorted(entry.get("faults", {}).items()):
            faults.add_metric([route, kind], count)
        mirrored.add_metric([route], entry.get("mirrored", 0))
        mirror_skipped.add_metric([route], entry.get("mirror_skipped", 0))
    yield retries
    yield exhausted
    yield timeouts
    yield faults
    yield mirrored
    yield mirror_skipped
    ejections = CounterMetricFamily(
        "fastmesh_outlier_ejections", "Ejections by outlier detection, by backend and endpoint.", labels=["backend", "endpoint"]
    )
    ejected = GaugeMetricFamily(
        "fastmesh_outlier_ejected", "1 while an endpoint is ejected, by backend and endpoint.", labels=["backend", "endpoint"]
    )
    for entry in stats.get("upstream", []):
        labels = [entry["backend"], entry["endpoint"]]
        ejections.add_metric(labels, entry.get("ejections", 0))
        ejected.add_metric(labels, 1 if entry.get("ejected") else 0)
    panic = CounterMetricFamily(
        "fastmesh_panic_mode",
        "Requests sent while every endpoint of the backend was ejected (to all of them), by backend.",
        labels=["backend"],
    )
    overflows = CounterMetricFamily(
        "fastmesh_overflows",
        "Requests refused (503, x-fastmesh-overflow) or retries not sent at a connection-pool limit, by backend and limit.",
        labels=["backend", "limit"],
    )
    for entry in stats.get("backends", []):
        panic.add_metric([entry["backend"]], entry.get("panic", 0))
        for limit, count in sorted(entry.get("overflow", {}).items()):
            overflows.add_metric([entry["backend"], limit], count)
    yield ejections
    yield ejected
    yield panic
    yield overflows


def config_families(state: State) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "fastmesh_config_version", "Version of the snapshot being served.", value=state.version
    )
    yield CounterMetricFamily(
        "fastmesh_config_reloads", "Config reloads applied.", value=state.reloads
    )
    yield CounterMetricFamily(
        "fastmesh_config_reload_failures",
        "Config reloads refused (invalid config or refused by the engine).",
        value=state.reload_failures,
    )
    control = state.control
    if control is not None:
        yield GaugeMetricFamily("fastmesh_control_plane_connected",
                                "1 while the stream from the control plane is open (--control-plane).",
                                value=1 if control["connected"] else 0)
        yield GaugeMetricFamily("fastmesh_control_plane_version",
                                "Version of the proxy's view last received from the control plane.",
                                value=control["version"])
        yield CounterMetricFamily("fastmesh_control_plane_connects", "Streams opened to the control plane.",
                                  value=control["connects"])


IdentityView = Callable[[], "dict[str, Any] | None"]
"""The workload identity's figures (`Identity.figures()`), or None without one."""


def _no_identity() -> dict[str, Any] | None:
    return None


def identity_families(view: dict[str, Any] | None) -> Iterator[Metric]:
    """The workload certificate: when it expires and is renewed, renewals and failures (Istio's
    citadel/istio-agent expose the same; alert on expiry minus now)."""
    if view is None:
        return
    labels = ["spiffe_id"]
    spiffe_id = [view["spiffe_id"]]

    def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        family.add_metric(spiffe_id, value)
        return family

    yield gauge("fastmesh_identity_cert_expiry_timestamp_seconds",
                "When the workload certificate expires (Unix time).", view["not_after"])
    yield gauge("fastmesh_identity_cert_renewal_timestamp_seconds",
                "When the workload certificate is due for renewal (Unix time).", view["renew_at"])
    renewals = CounterMetricFamily("fastmesh_identity_renewals", "Workload certificates issued and installed.",
                                   labels=labels)
    renewals.add_metric(spiffe_id, view["renewals"])
    yield renewals
    failures = GaugeMetricFamily("fastmesh_identity_renewal_failures",
                                 "Consecutive failed renewals (0 after a success).", labels=labels)
    failures.add_metric(spiffe_id, view["renewal_failures"])
    yield failures


class EngineCollector(Collector):
    def __init__(self, stats: Callable[[], Stats], state: State, identity: IdentityView = _no_identity) -> None:
        self._stats = stats
        self._state = state
        self._identity = identity

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield from request_families(stats)
        yield from connection_families(stats)
        yield from authz_families(stats)
        yield from resilience_families(stats)
        yield from config_families(self._state)
        yield from identity_families(self._identity())

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are not known before a scrape; do not read the engine on register


def make_registry(stats: Callable[[], Stats], state: State, identity: IdentityView = _no_identity) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(stats, state, identity))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
