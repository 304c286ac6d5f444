"""Route entries of the snapshot: one per (rule, match) of an HTTPRoute, with filters and backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastmesh.config.snapshot.backends import resolve, service_backend
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import HTTPRoute, Service
from fastmesh.config.model.httproute import (
    HTTPHeaderFilter,
    HTTPPathModifier,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
)

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


def _filter(f: HTTPRouteFilter) -> dict[str, Any]:
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
    return {
        "name": entry.name,
        "match": _match(entry.match),
        "filters": [_filter(f) for f in entry.rule.filters],
        "backends": [
            {"backend": resolve(cfg, entry.route.namespace, ref), "weight": ref.weight}
            for ref in entry.rule.backend_refs
        ],
    }


def default_route(service: Service) -> dict[str, Any]:
    """What a Service without routes gets: everything to its first port."""
    return {
        "name": f"{service.ref}/default",
        "match": _match(_MATCH_ALL),
        "filters": [],
        "backends": [
            {"backend": service_backend(service.namespace, service.name, service.spec.ports[0].port), "weight": 1}
        ],
    }
