"""Virtual hosts of the snapshot: one per Service, one per hostname of the listener routes, and `*`."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fastmesh.config.snapshot.precedence import hostname_specificity, precedence_key
from fastmesh.config.snapshot.rollouts import render_rollout_rule, rollouts_by_rule
from fastmesh.config.snapshot.routes import Entry, default_route, entries, render
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import HTTPRoute, Service


class Rendered:
    """Entries and rendered routes, computed once per route: a route serving many vhosts (one
    without hostnames is in every host's) is rendered once and shared by them."""

    def __init__(self, cfg: MeshConfig) -> None:
        self.cfg = cfg
        self._entries: dict[int, list[tuple[Entry, dict[str, Any]]]] = {}
        self._rollouts = rollouts_by_rule(cfg)

    def __call__(self, route: HTTPRoute) -> list[tuple[Entry, dict[str, Any]]]:
        found = self._entries.get(id(route))
        if found is None:
            found = self._entries[id(route)] = [(e, render(self.cfg, e)) for e in entries(route)]
            for index in range(len(route.spec.rules)):
                rollout = self._rollouts.get((id(route), index))
                if rollout is not None:
                    rule = [pair for pair in found if pair[0].rule_index == index]
                    found += render_rollout_rule(self.cfg, route, rule, *rollout)
        return found


def _service_vhost(
    rendered: Rendered, service: Service, attached: list[HTTPRoute], bare_name: bool
) -> dict[str, Any]:
    if attached:
        keyed = [(precedence_key(e), r) for route in attached for e, r in rendered(route)]
        keyed.sort(key=lambda pair: pair[0])
        routes = [r for _, r in keyed]
    else:
        routes = [default_route(rendered.cfg, service)]
    domains = service.hostnames() if bare_name else service.hostnames()[1:]
    return {"name": service.ref, "domains": domains, "routes": routes}


def _host_vhost(rendered: Rendered, host: str, routes: list[HTTPRoute]) -> dict[str, Any]:
    """The vhost of `host` from the listener routes that serve it (in file order)."""
    keyed: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for route in routes:
        specificity = hostname_specificity(route.spec.hostnames, host)
        keyed += [(precedence_key(e, specificity), r) for e, r in rendered(route)]
    keyed.sort(key=lambda pair: pair[0])
    return {"name": host, "domains": [host], "routes": [r for _, r in keyed]}


def _wildcards_last(host: str) -> tuple[bool, str]:
    return (host.startswith("*"), host)


class _HostIndex:
    """Which listener routes serve a host, found by lookups instead of a scan of every route:
    the routes naming the host itself, those naming a wildcard `*.<suffix>` of it, and those
    without hostnames (which serve every host)."""

    def __init__(self, listener_routes: list[HTTPRoute]) -> None:
        self.position = {id(r): i for i, r in enumerate(listener_routes)}
        self.by_hostname: dict[str, list[HTTPRoute]] = defaultdict(list)
        self.every_host: list[HTTPRoute] = []
        for route in listener_routes:
            if not route.spec.hostnames:
                self.every_host.append(route)
            for hostname in dict.fromkeys(route.spec.hostnames):
                self.by_hostname[hostname].append(route)

    def serving(self, host: str) -> list[HTTPRoute]:
        # `covers(hostname, host)`: the hostname itself, or `*.x` for every `.x` host ends with.
        names = [host] + ["*" + host[i:] for i, c in enumerate(host) if c == "."]
        found = {id(r): r for name in names for r in self.by_hostname.get(name, ())}
        found.update((id(r), r) for r in self.every_host)
        return sorted(found.values(), key=lambda r: self.position[id(r)])


def gamma_routes(routes: list[HTTPRoute], own_namespace: str) -> dict[tuple[str, str], list[HTTPRoute]]:
    """(namespace, name) of a Service -> the routes its callers here get (GAMMA, GEP-1294).

    A route in the Service's namespace is a producer route: it applies to every caller. A route in
    another namespace is a consumer route: it applies only to callers in its own namespace, and for
    them it replaces the Service's producer routes. A consumer route of a third namespace is not ours.
    """
    producer: dict[tuple[str, str], list[HTTPRoute]] = defaultdict(list)
    consumer: dict[tuple[str, str], list[HTTPRoute]] = defaultdict(list)
    for route in routes:
        for parent in dict.fromkeys((ns, name) for ns, name, _ in route.service_parents()):
            if route.namespace == parent[0]:
                producer[parent].append(route)
            elif route.namespace == own_namespace:
                consumer[parent].append(route)
    return {**producer, **consumer}


def service_vhosts(
    cfg: MeshConfig, services: list[Service], rendered: Rendered | None = None, names: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """The vhosts of `services` (of `cfg`), each as `compile_vhosts` gives it: a Service's vhost reads
    only the Services' names (`names`: `service_names(cfg)`, when known), the routes attached to it and
    what they render (fastmesh.config.incremental compiles the vhosts of the Services a route change
    touches with it)."""
    rendered = rendered or Rendered(cfg)
    attached = gamma_routes(cfg.routes, cfg.namespace)
    # A bare Service name is ambiguous when two namespaces have a Service of that name: only the
    # qualified names route then.
    name_counts = names if names is not None else service_names(cfg)
    return [
        _service_vhost(rendered, s, attached.get((s.namespace, s.name), []), name_counts[s.name] == 1)
        for s in services
    ]


def service_names(cfg: MeshConfig) -> Counter[str]:
    """How many Services (of any namespace) have each name."""
    return Counter(s.name for s in cfg.services)


def host_vhosts(cfg: MeshConfig, rendered: Rendered | None = None) -> list[dict[str, Any]]:
    """The vhosts of the listener routes' hostnames, then `*`."""
    rendered = rendered or Rendered(cfg)
    listener_routes = [r for r in cfg.routes if r.on_listeners()]
    index = _HostIndex(listener_routes)
    hosts = sorted(index.by_hostname, key=_wildcards_last)
    vhosts = [_host_vhost(rendered, host, index.serving(host)) for host in hosts]
    if index.every_host:
        vhosts.append(_host_vhost(rendered, "*", index.every_host))
    return vhosts


def compile_vhosts(cfg: MeshConfig) -> list[dict[str, Any]]:
    rendered = Rendered(cfg)  # a route on a Service and on the listeners is rendered once
    return service_vhosts(cfg, cfg.services, rendered) + host_vhosts(cfg, rendered)
