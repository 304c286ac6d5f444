"""Route entries of the snapshot: one per (rule, match) of an HTTPRoute, with filters and backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastmesh.config.snapshot.backends import resolve, service_backend
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import HTTPRoute, Service
from fastmesh.config.model.httproute import (
    HTTPBackendRef,
    HTTPHeaderFilter,
    HTTPPathModifier,
    HTTPRequestMirrorFilter,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRetry,
    HTTPRouteRule,
    HTTPRouteTimeouts,
)
from fastmesh.config.model.faultinjection import FaultInjection
from fastmesh.config.model.trafficpolicy import IDEMPOTENT_METHODS, TrafficRetry
from fastmesh.config.model.types import parse_duration

_MATCH_ALL = HTTPRouteMatch()


@dataclass(frozen=True)
class Entry:
    """One match of one rule of one route, before it is ordered among the others of its vhost."""

    route: HTTPRoute
    rule_index: int
    rule: HTTPRouteRule
    match_index: int
    match: HTTPRouteMatch

    @property
    def name(self) -> str:
        return f"{self.route.ref}/rule/{self.rule_index}"


def entries(route: HTTPRoute) -> list[Entry]:
    """Every (rule, match) of the route; a rule without matches matches everything."""
    return [
        Entry(route, r, rule, m, match)
        for r, rule in enumerate(route.spec.rules)
        for m, match in enumerate(rule.matches or [_MATCH_ALL])
    ]


def _match(match: HTTPRouteMatch) -> dict[str, Any]:
    return {
        "path": {"type": match.path.type, "value": match.path.value},
        "method": match.method,
        "headers": [{"type": h.type, "name": h.name.lower(), "value": h.value} for h in match.headers],
        "query": [{"type": q.type, "name": q.name, "value": q.value} for q in match.query_params],
    }


def _headers(kind: str, modifier: HTTPHeaderFilter | None) -> dict[str, Any]:
    modifier = modifier or HTTPHeaderFilter()
    return {
        "type": kind,
        "set": [[h.name.lower(), h.value] for h in modifier.set],
        "add": [[h.name.lower(), h.value] for h in modifier.add],
        "remove": [name.lower() for name in modifier.remove],
    }


def _path(modifier: HTTPPathModifier | None) -> dict[str, str] | None:
    if modifier is None:
        return None
    value = modifier.replace_full_path if modifier.type == "ReplaceFullPath" else modifier.replace_prefix_match
    return {"type": modifier.type, "value": value or "/"}


def _mirror(namespace: str, mirror: HTTPRequestMirrorFilter) -> dict[str, Any]:
    ref = mirror.backend_ref
    if mirror.fraction is not None:
        percent = 100.0 * mirror.fraction.numerator / mirror.fraction.denominator
    else:
        percent = float(100 if mirror.percent is None else mirror.percent)
    return {
        "type": "RequestMirror",
        "backend": service_backend(ref.namespace or namespace, ref.name, ref.port),
        "percent": percent,
    }


def _fault(fault: FaultInjection) -> dict[str, Any]:
    spec = fault.spec
    out: dict[str, Any] = {"type": "Fault"}
    if spec.delay is not None:
        out["delay"] = {"percent": spec.delay.percentage.value, "ms": _ms(spec.delay.fixed_delay)}
    if spec.abort is not None:
        out["abort"] = {"percent": spec.abort.percentage.value, "status": spec.abort.http_status}
    return out


def _filter(cfg: MeshConfig, namespace: str, f: HTTPRouteFilter) -> dict[str, Any]:
    if f.type == "RequestMirror" and f.request_mirror is not None:
        return _mirror(namespace, f.request_mirror)
    if f.type == "ExtensionRef" and f.extension_ref is not None:
        fault = cfg.fault_injection(namespace, f.extension_ref.name)
        assert fault is not None, "checked: the FaultInjection exists"
        return _fault(fault)
    if f.type == "RequestHeaderModifier":
        return _headers(f.type, f.request_header_modifier)
    if f.type == "ResponseHeaderModifier":
        return _headers(f.type, f.response_header_modifier)
    if f.type == "URLRewrite":
        rewrite = f.url_rewrite
        return {
            "type": f.type,
            "hostname": rewrite.hostname if rewrite else None,
            "path": _path(rewrite.path if rewrite else None),
        }
    redirect = f.request_redirect
    return {
        "type": f.type,
        "scheme": redirect.scheme if redirect else None,
        "hostname": redirect.hostname if redirect else None,
        "port": redirect.port if redirect else None,
        "path": _path(redirect.path if redirect else None),
        "status_code": redirect.status_code if redirect else 302,
    }


def render(cfg: MeshConfig, entry: Entry) -> dict[str, Any]:
    rule = entry.rule
    return {
        "name": entry.name,
        "match": _match(entry.match),
        "filters": [_filter(cfg, entry.route.namespace, f) for f in rule.filters],
        "backends": [
            {"backend": resolve(cfg, entry.route.namespace, ref), "weight": ref.weight} for ref in rule.backend_refs
        ],
        **_resilience(rule.timeouts, rule.retry, _traffic_retry(cfg, entry.route, rule.backend_refs)),
        **({"session": rule.session_persistence.compile()} if rule.session_persistence else {}),
    }


def default_route(cfg: MeshConfig, service: Service) -> dict[str, Any]:
    """What a Service without routes gets: everything to its first port."""
    port = service.spec.ports[0].port
    policy = cfg.traffic_policy(service.namespace, service.name, port)
    return {
        "name": f"{service.ref}/default",
        "match": _match(_MATCH_ALL),
        "filters": [],
        "backends": [{"backend": service_backend(service.namespace, service.name, port), "weight": 1}],
        **_resilience(None, None, policy.spec.retry if policy else None),
    }


# === resilience (docs/engine-snapshot.md "Resilience") ===


def _ms(duration: str) -> int:
    return round(parse_duration(duration) * 1000)


def _traffic_retry(cfg: MeshConfig, route: HTTPRoute, refs: list[HTTPBackendRef]) -> TrafficRetry | None:
    """The `retry` of the TrafficPolicy targeting the route, else of the one of the rule's first backendRef
    when it is a Service port."""
    own = cfg.route_policy(route)
    if own is not None and own.spec.retry is not None:
        return own.spec.retry
    namespace = route.namespace
    ref = refs[0] if refs else None
    if ref is None or (ref.group, ref.kind) != ("", "Service") or ref.port is None:
        return None
    policy = cfg.traffic_policy(ref.namespace or namespace, ref.name, ref.port)
    return policy.spec.retry if policy else None


def _resilience(
    timeouts: HTTPRouteTimeouts | None, retry: HTTPRouteRetry | None, traffic: TrafficRetry | None
) -> dict[str, Any]:
    """The route's `timeouts` and `retry`: HTTPRoute fields over TrafficPolicy fields over defaults.
    Nothing configured: neither (the engine's built-in retry of unprocessed requests)."""
    out: dict[str, Any] = {}
    request = _ms(timeouts.request) if timeouts and timeouts.request else 0
    per_try = _ms(timeouts.backend_request) if timeouts and timeouts.backend_request else 0
    if not (timeouts and timeouts.backend_request) and traffic and traffic.per_try_timeout:
        per_try = _ms(traffic.per_try_timeout)
    if request or per_try:
        out["timeouts"] = {"request_ms": request or None, "per_try_ms": per_try or None}
    if retry is None and traffic is None:
        return out
    t = traffic or TrafficRetry()
    base = _ms(retry.backoff if retry and retry.backoff else t.backoff.base_interval)
    most = _ms(t.backoff.max_interval) if t.backoff.max_interval else 10 * base
    out["retry"] = {
        "attempts": retry.attempts if retry and retry.attempts is not None else t.attempts,
        "on": list(t.retry_on),
        "codes": sorted(set(t.codes) | set(retry.codes if retry else ())),
        "methods": [*IDEMPOTENT_METHODS, *(m for m in t.retryable_methods if m not in IDEMPOTENT_METHODS)],
        "max_body_bytes": t.max_buffered_body,
        "backoff": {"base_ms": base, "max_ms": max(most, base)},
        "budget": {
            "percent": t.budget.percent,
            "min_per_s": t.budget.min_retries_per_second,
            "window_ms": _ms(t.budget.ttl),
        },
    }
    return out
