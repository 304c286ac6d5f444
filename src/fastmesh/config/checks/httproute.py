"""Checks of an HTTPRoute beyond its schema: paths, regexes, filter combinations, references."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastmesh.config.checks.context import Context, Loc, did_you_mean, duplicates
from fastmesh.config.mesh import Document
from fastmesh.config.model import FaultInjection, HTTPRoute
from fastmesh.config.model.httproute import (
    FASTMESH_GROUP,
    GATEWAY_GROUP,
    HTTPBackendRef,
    HTTPHeaderFilter,
    HTTPHeaderMatch,
    HTTPPathModifier,
    HTTPQueryParamMatch,
    HTTPRequestMirrorFilter,
    LocalObjectReference,
    HTTPRouteMatch,
    HTTPRouteRule,
    ParentReference,
)
from fastmesh.config.model.types import parse_duration
from fastmesh.config.regex import regex_problem

# filter type -> (attribute, YAML field)
FILTER_FIELDS = {
    "RequestHeaderModifier": ("request_header_modifier", "requestHeaderModifier"),
    "ResponseHeaderModifier": ("response_header_modifier", "responseHeaderModifier"),
    "RequestRedirect": ("request_redirect", "requestRedirect"),
    "URLRewrite": ("url_rewrite", "urlRewrite"),
    "RequestMirror": ("request_mirror", "requestMirror"),
    "ExtensionRef": ("extension_ref", "extensionRef"),
}


def check_route(ctx: Context, doc: Document) -> None:
    route = doc.obj
    assert isinstance(route, HTTPRoute)
    for i, parent in enumerate(route.spec.parent_refs):
        _parent(ctx, doc, route, ("spec", "parentRefs", i), parent)
    if route.on_listeners():
        _hostnames(ctx, doc, route)
    for r, rule in enumerate(route.spec.rules):
        loc = ("spec", "rules", r)
        for m, match in enumerate(rule.matches):
            _match(ctx, doc, (*loc, "matches", m), match)
        _filters(ctx, doc, route, loc, rule)
        _timeouts(ctx, doc, loc, rule)
        for b, ref in enumerate(rule.backend_refs):
            _backend(ctx, doc, route, (*loc, "backendRefs", b), ref)


def _timeouts(ctx: Context, doc: Document, loc: Loc, rule: HTTPRouteRule) -> None:
    t = rule.timeouts
    if t is None or t.request is None or t.backend_request is None:
        return
    request, backend = parse_duration(t.request), parse_duration(t.backend_request)
    if request and (not backend or backend > request):
        ctx.report(
            doc,
            (*loc, "timeouts", "backendRequest"),
            f"must not be longer than timeouts.request (got {t.backend_request} > {t.request})",
        )


# === parents and hostnames ===


def _parent(ctx: Context, doc: Document, route: HTTPRoute, loc: Loc, parent: ParentReference) -> None:
    group, kind = parent.group, parent.kind
    if (group, kind) == (GATEWAY_GROUP, "Gateway"):
        return
    if kind == "Service" and group != "":
        ctx.report(doc, (*loc, "group"), f'a Service parent needs group "" (the core API group; got {group!r})')
        return
    if (group, kind) != ("", "Service"):
        ctx.report(
            doc, (*loc, "kind"), f'unsupported parent {kind!r} (group {group!r}): use a Service (group "") or a Gateway'
        )
        return
    namespace = parent.namespace or route.namespace
    _service_port(ctx, doc, loc, namespace, parent.name, parent.port, ctx.report, "NoMatchingParent")


def _service_port(
    ctx: Context, doc: Document, loc: Loc, namespace: str, name: str, port: int | None,
    report: Callable[[Document, Loc, str, str], None], reason: str,
) -> None:
    service = ctx.cfg.service(namespace, name)
    if service is None:
        if not ctx.is_broken("Service", namespace, name):
            ref = f"{namespace}/{name}"
            hint = did_you_mean(ref, [s.ref for s in ctx.cfg.services])
            report(doc, (*loc, "name"), f"Service {ref} not found{hint}", reason)
    elif port is not None and service.port(port) is None:
        ports = ", ".join(str(p.port) for p in service.spec.ports)
        report(doc, (*loc, "port"), f"Service {service.ref} has no port {port} (its ports: {ports})", reason)


def _hostnames(ctx: Context, doc: Document, route: HTTPRoute) -> None:
    owners = ctx.service_hostnames
    for i, hostname in enumerate(route.spec.hostnames):
        if hostname in owners:
            ctx.report(
                doc,
                ("spec", "hostnames", i),
                f"{hostname!r} is a hostname of Service {owners[hostname].ref}: attach the route to the Service"
                ' with a parentRef (group: "", kind: Service) instead',
            )


# === matches ===


def path_problem(kind: str, value: str) -> str | None:
    """Why `value` is not a path of match type `kind`, or None."""
    if kind == "RegularExpression":
        return regex_problem(value)
    if not value.startswith("/"):
        return f"must be an absolute path starting with '/' (got {value!r})"
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            return f"must not contain {bad!r} (got {value!r})"
    if value.endswith(("/..", "/.")):
        return f"must not end with '/.' or '/..' (got {value!r})"
    return None


def _match(ctx: Context, doc: Document, loc: Loc, match: HTTPRouteMatch) -> None:
    if problem := path_problem(match.path.type, match.path.value):
        ctx.report(doc, (*loc, "path", "value"), problem)
    value_matches: list[tuple[str, Sequence[HTTPHeaderMatch | HTTPQueryParamMatch], bool]] = [
        ("headers", match.headers, True),  # header names are case-insensitive
        ("queryParams", match.query_params, False),
    ]
    for field, items, fold in value_matches:
        for i, first in duplicates(item.name.lower() if fold else item.name for item in items):
            ctx.report(doc, (*loc, field, i, "name"), f"{items[i].name!r} is matched twice ({field}[{first}] too)")
        for i, item in enumerate(items):
            if item.type == "RegularExpression" and (problem := regex_problem(item.value)):
                ctx.report(doc, (*loc, field, i, "value"), problem)


# === filters ===


def _mirror(ctx: Context, doc: Document, route: HTTPRoute, loc: Loc, mirror: HTTPRequestMirrorFilter) -> None:
    ref = mirror.backend_ref
    namespace = ref.namespace or route.namespace
    _service_port(ctx, doc, (*loc, "backendRef"), namespace, ref.name, ref.port, ctx.report, "BackendNotFound")
    if mirror.percent is not None and mirror.fraction is not None:
        ctx.report(doc, (*loc, "fraction"), "give percent or fraction, not both")
    if mirror.fraction is not None and mirror.fraction.numerator > mirror.fraction.denominator:
        ctx.report(doc, (*loc, "fraction", "numerator"), "must not be larger than the denominator")


def _extension(ctx: Context, doc: Document, route: HTTPRoute, loc: Loc, ref: LocalObjectReference) -> None:
    if (ref.group, ref.kind) != (FASTMESH_GROUP, "FaultInjection"):
        ctx.report(doc, (*loc, "kind"), f"only group fastmesh.io kind FaultInjection is supported (got {ref.group}/{ref.kind})")
    elif ctx.cfg.fault_injection(route.namespace, ref.name) is None and not ctx.is_broken(
        "FaultInjection", route.namespace, ref.name
    ):
        known = [f.name for f in ctx.cfg.objects(FaultInjection) if f.namespace == route.namespace]
        ctx.report(doc, (*loc, "name"), f"FaultInjection {route.namespace}/{ref.name} not found{did_you_mean(ref.name, known)}")


def _filters(ctx: Context, doc: Document, route: HTTPRoute, loc: Loc, rule: HTTPRouteRule) -> None:
    for k, first in duplicates(f.type for f in rule.filters):
        message = f"{rule.filters[k].type} is given twice in this rule (filters[{first}] too)"
        ctx.report(doc, (*loc, "filters", k, "type"), message)
    types = {f.type: k for k, f in reversed(list(enumerate(rule.filters)))}  # type -> first index
    for k, f in enumerate(rule.filters):
        floc = (*loc, "filters", k)
        attr, field = FILTER_FIELDS[f.type]
        if getattr(f, attr) is None:
            ctx.report(doc, (*floc, field), f"required when type is {f.type}")
        for other_type, (other_attr, other_field) in FILTER_FIELDS.items():
            if other_attr != attr and getattr(f, other_attr) is not None:
                ctx.report(doc, (*floc, other_field), f"configures {other_type}, but type is {f.type}")
        for modifier_type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            modifier_attr, modifier_field = FILTER_FIELDS[modifier_type]
            modifier = getattr(f, modifier_attr)
            if modifier is not None:
                _header_filter(ctx, doc, (*floc, modifier_field), modifier)
        if f.request_mirror is not None:
            _mirror(ctx, doc, route, (*floc, "requestMirror"), f.request_mirror)
        if f.extension_ref is not None:
            _extension(ctx, doc, route, (*floc, "extensionRef"), f.extension_ref)
        target = getattr(f, attr) if f.type in ("RequestRedirect", "URLRewrite") else None
        if target is not None and target.path is not None:
            _path_modifier(ctx, doc, (*floc, field, "path"), target.path, rule)
    if "RequestRedirect" in types and "URLRewrite" in types:
        k = max(types["RequestRedirect"], types["URLRewrite"])
        ctx.report(doc, (*loc, "filters", k, "type"), "a rule cannot have both RequestRedirect and URLRewrite")
    if "RequestRedirect" in types and rule.backend_refs:
        ctx.report(
            doc,
            (*loc, "backendRefs"),
            "a rule with a RequestRedirect filter answers with the redirect: remove its backendRefs (or the redirect)",
        )


def _header_filter(ctx: Context, doc: Document, loc: Loc, modifier: HTTPHeaderFilter) -> None:
    for field, names in (
        ("set", [h.name for h in modifier.set]),
        ("add", [h.name for h in modifier.add]),
        ("remove", list(modifier.remove)),
    ):
        for i, first in duplicates(name.lower() for name in names):
            where = (*loc, field, i, "name") if field != "remove" else (*loc, field, i)
            ctx.report(doc, where, f"header {names[i]!r} is given twice ({field}[{first}] too)")


def _path_modifier(ctx: Context, doc: Document, loc: Loc, modifier: HTTPPathModifier, rule: HTTPRouteRule) -> None:
    wanted, unwanted = ("replaceFullPath", "replacePrefixMatch")
    if modifier.type == "ReplacePrefixMatch":
        wanted, unwanted = unwanted, wanted
    values = {"replaceFullPath": modifier.replace_full_path, "replacePrefixMatch": modifier.replace_prefix_match}
    value = values[wanted]
    if value is None:
        ctx.report(doc, (*loc, wanted), f"required when type is {modifier.type}")
    elif not value.startswith("/"):
        ctx.report(doc, (*loc, wanted), f"must be an absolute path starting with '/' (got {value!r})")
    if values[unwanted] is not None:
        ctx.report(doc, (*loc, unwanted), f"not allowed when type is {modifier.type}")
    if modifier.type == "ReplacePrefixMatch":
        for m, match in enumerate(rule.matches):
            if match.path.type != "PathPrefix":
                ctx.report(
                    doc,
                    (*loc, "type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                    f" (matches[{m}] is {match.path.type})",
                )
                break


# === backends ===


def _backend(ctx: Context, doc: Document, route: HTTPRoute, loc: Loc, ref: HTTPBackendRef) -> None:
    group, kind = ref.group, ref.kind
    if (group, kind) == ("", "Service"):
        if ref.port is None:
            ctx.report(doc, (*loc, "port"), "required for a Service backend (the Service's port)")
        namespace = ref.namespace or route.namespace
        _service_port(ctx, doc, loc, namespace, ref.name, ref.port, ctx.report_backend, "BackendNotFound")
    elif (group, kind) == (FASTMESH_GROUP, "ExternalService"):
        for field, value in (("port", ref.port), ("namespace", ref.namespace)):
            if value is not None:
                ctx.report(doc, (*loc, field), "not used with an ExternalService (its endpoints are host:port)")
        names = [e.name for e in ctx.cfg.proxy.external_services]
        if ref.name not in names and not ctx.is_broken("Proxy"):
            hint = did_you_mean(ref.name, names)
            message = f"external service {ref.name!r} not found in Proxy spec.externalServices{hint}"
            ctx.report_backend(doc, (*loc, "name"), message)
    elif kind == "Service":
        ctx.report(doc, (*loc, "group"), f'a Service backend needs group "" (the core API group; got {group!r})', "InvalidKind")
    elif kind == "ExternalService":
        message = f"an ExternalService backend needs group {FASTMESH_GROUP!r} (got {group!r})"
        ctx.report(doc, (*loc, "group"), message, "InvalidKind")
    else:
        ctx.report(
            doc,
            (*loc, "kind"),
            f"unsupported backend kind {kind!r} (group {group!r}): use a Service or a fastmesh.io ExternalService",
            "InvalidKind",
        )
