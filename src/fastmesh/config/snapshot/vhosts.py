"""Virtual hosts of the snapshot: one per Service, one per hostname of the listener routes, and `*`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastmesh.config.snapshot.precedence import covers, hostname_specificity, precedence_key
from fastmesh.config.snapshot.routes import Entry, default_route, entries, render
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import HTTPRoute, Service


def _service_vhost(cfg: MeshConfig, service: Service, bare_name: bool) -> dict[str, Any]:
    attached = [
        route
        for route in cfg.routes
        if any((ns, name) == (service.namespace, service.name) for ns, name, _ in route.service_parents())
    ]
    if attached:
        ordered = sorted((e for route in attached for e in entries(route)), key=precedence_key)
        routes = [render(cfg, e) for e in ordered]
    else:
        routes = [default_route(service)]
    domains = service.hostnames() if bare_name else service.hostnames()[1:]
    return {"name": service.ref, "domains": domains, "routes": routes}


def _host_vhost(cfg: MeshConfig, host: str, routes: list[HTTPRoute]) -> dict[str, Any]:
    keyed: list[tuple[tuple[Any, ...], Entry]] = []
    for route in routes:
        hostnames = route.spec.hostnames
        if hostnames and not any(covers(h, host) for h in hostnames):
            continue
        specificity = hostname_specificity(hostnames, host)
        keyed += [(precedence_key(e, specificity), e) for e in entries(route)]
    keyed.sort(key=lambda pair: pair[0])
    return {"name": host, "domains": [host], "routes": [render(cfg, e) for _, e in keyed]}


def _wildcards_last(host: str) -> tuple[bool, str]:
    return (host.startswith("*"), host)


def compile_vhosts(cfg: MeshConfig) -> list[dict[str, Any]]:
    services = cfg.services
    # A bare Service name is ambiguous when two namespaces have a Service of that name: only the
    # qualified names route then.
    name_counts = Counter(s.name for s in services)
    vhosts = [_service_vhost(cfg, s, name_counts[s.name] == 1) for s in services]
    listener_routes = [r for r in cfg.routes if r.on_listeners()]
    hosts = sorted({h for r in listener_routes for h in r.spec.hostnames}, key=_wildcards_last)
    vhosts += [_host_vhost(cfg, host, listener_routes) for host in hosts]
    catch_all = [r for r in listener_routes if not r.spec.hostnames]
    if catch_all:
        vhosts.append(_host_vhost(cfg, "*", catch_all))
    return vhosts
