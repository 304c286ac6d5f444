"""HTTPRoute `timeouts`/`retry` and TrafficPolicy compile into the route's snapshot fields, HTTPRoute first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastmesh.config import compile_snapshot
from tests.config.test_compile import Load, service, vhost

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web}}]
  rules:
    - backendRefs: [{{name: web, port: 80}}]
      {rule}
---
"""

POLICY = """\
apiVersion: fastmesh.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {target}
  retry: {retry}
---
"""


def assert_engine_accepts(snapshot: dict[str, Any]) -> None:
    engine = pytest.importorskip("fastmesh._engine", reason="engine not built (make engine)")
    snapshot = {**snapshot, "listeners": []}
    assert engine.Engine(1).apply(json.dumps(snapshot)) >= 1


def _route(snapshot: dict[str, Any]) -> dict[str, Any]:
    return vhost(snapshot, "default/web")["routes"][0]


def test_nothing_configured_leaves_the_engine_builtin(load: Load) -> None:
    route = _route(compile_snapshot(load(service("web", "[{name: http, port: 80}]"))))
    assert "retry" not in route and "timeouts" not in route


def test_gateway_api_timeouts_and_retry_alone(load: Load) -> None:
    rule = "timeouts: {request: 2s, backendRequest: 500ms}\n      retry: {codes: [503], attempts: 3, backoff: 40ms}"
    route = _route(compile_snapshot(load(service("web", "[{port: 80}]") + ROUTE.format(rule=rule))))
    assert route["timeouts"] == {"request_ms": 2000, "per_try_ms": 500}
    assert route["retry"] == {
        "attempts": 3,
        "on": ["connect-failure", "refused-stream", "reset"],
        "codes": [503],
        "methods": ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"],
        "max_body_bytes": 65536,
        "backoff": {"base_ms": 40, "max_ms": 400},
        "budget": {"percent": 20, "min_per_s": 10, "window_ms": 10000},
    }


def test_route_fields_override_the_traffic_policy_and_a_port_policy_wins(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}]")
        + POLICY.format(name="all", target="{name: web}", retry="{attempts: 5, retryOn: [5xx]}")
        + POLICY.format(
            name="port",
            target="{name: web, port: 80}",
            retry="{attempts: 2, retryOn: [gateway-error], codes: [409], perTryTimeout: 300ms, retryableMethods: [POST],"
            " maxBufferedBody: 1024, backoff: {baseInterval: 10ms, maxInterval: 30ms},"
            " budget: {percent: 50, minRetriesPerSecond: 1, ttl: 500ms}}",
        )
        + ROUTE.format(rule="retry: {codes: [503], attempts: 4}\n      timeouts: {backendRequest: 100ms}")
    )
    route = _route(compile_snapshot(load(text)))
    assert route["timeouts"] == {"request_ms": None, "per_try_ms": 100}
    assert route["retry"] == {
        "attempts": 4,
        "on": ["gateway-error"],
        "codes": [409, 503],
        "methods": ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"],
        "max_body_bytes": 1024,
        "backoff": {"base_ms": 10, "max_ms": 30},
        "budget": {"percent": 50, "min_per_s": 1, "window_ms": 500},
    }


def test_a_service_policy_applies_to_its_default_route(load: Load) -> None:
    text = service("web", "[{name: http, port: 80}]") + POLICY.format(
        name="p", target="{name: web}", retry="{perTryTimeout: 1s}"
    )
    route = _route(compile_snapshot(load(text)))
    assert route["timeouts"] == {"request_ms": None, "per_try_ms": 1000}
    assert route["retry"]["attempts"] == 1


def test_the_engine_accepts_what_is_compiled(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}]")
        + POLICY.format(name="p", target="{name: web}", retry="{retryOn: [5xx, reset], budget: {ttl: 1m}}")
        + ROUTE.format(rule="retry: {codes: [503]}\n      timeouts: {request: 1s}")
    )
    assert_engine_accepts(compile_snapshot(load(text)))


def test_outlier_detection_compiles_per_backend_with_istio_defaults(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}, {name: admin, port: 81}]")
        + "apiVersion: fastmesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\n"
        "spec: {targetRef: {name: web, port: 80}, outlierDetection: {baseEjectionTime: 5s}}\n"
    )
    snapshot = compile_snapshot(load(text))
    web = next(b for b in snapshot["backends"] if b["name"] == "default/web:80")
    assert web["outlier_detection"] == {
        "consecutive_5xx": 5,
        "consecutive_gateway_errors": 0,
        "interval_ms": 10000,
        "base_ejection_ms": 5000,
        "max_ejection_percent": 10,
    }
    admin = next(b for b in snapshot["backends"] if b["name"] == "default/web:81")
    assert "outlier_detection" not in admin


def test_connection_pool_and_timeouts_compile_per_backend(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}]")
        + "apiVersion: fastmesh.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\n"
        "spec: {targetRef: {name: web}, connectionPool: {maxConnections: 10, maxPendingRequests: 0, maxRequests: 50},"
        " connectTimeout: 500ms, idleTimeout: 5s}\n"
    )
    web = next(b for b in compile_snapshot(load(text))["backends"] if b["name"] == "default/web:80")
    assert web["limits"] == {"max_connections": 10, "max_pending_requests": 0, "max_requests": 50}
    assert (web["connect_timeout_ms"], web["idle_timeout_ms"]) == (500, 5000)
    assert_engine_accepts(compile_snapshot(load(text)))


def test_mirror_and_fault_filters_compile(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}]")
        + service("shadow", "[{name: http, port: 80}]")
        + "apiVersion: fastmesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {name: flaky}\n"
        "spec: {delay: {percentage: {value: 10}, fixedDelay: 100ms}, abort: {percentage: {value: 0.5}, httpStatus: 503}}\n---\n"
        + ROUTE.format(
            rule="filters:\n        - {type: ExtensionRef, extensionRef: {group: fastmesh.io, kind: FaultInjection, name: flaky}}\n"
            "        - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 3}}}"
        )
    )
    snapshot = compile_snapshot(load(text))
    filters = _route(snapshot)["filters"]
    assert filters[0] == {"type": "Fault", "delay": {"percent": 10, "ms": 100}, "abort": {"percent": 0.5, "status": 503}}
    assert filters[1]["type"] == "RequestMirror" and filters[1]["backend"] == "default/shadow:80"
    assert abs(filters[1]["percent"] - 100 / 3) < 1e-9
    assert_engine_accepts(snapshot)


def test_a_policy_targeting_the_httproute_wins_over_the_service_one(load: Load) -> None:
    text = (
        service("web", "[{name: http, port: 80}]")
        + POLICY.format(name="svc", target="{name: web}", retry="{attempts: 5}")
        + POLICY.format(
            name="route", target="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}", retry="{attempts: 3, retryOn: [5xx]}"
        )
        + ROUTE.format(rule="")
    )
    route = _route(compile_snapshot(load(text)))
    assert (route["retry"]["attempts"], route["retry"]["on"]) == (3, ["5xx"])
