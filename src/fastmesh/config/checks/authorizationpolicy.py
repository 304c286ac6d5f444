"""Checks of an AuthorizationPolicy beyond its schema: patterns, non-empty sources and operations,
target Services that exist."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastmesh.config.checks.context import Context, Loc, did_you_mean
from fastmesh.config.mesh import Document
from fastmesh.config.model import AuthorizationPolicy
from fastmesh.config.model.authorizationpolicy import Operation, Source, wildcard_problem

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'+\-.^_`|~]*$")  # RFC 7230 token characters but '*'



def _path_problem(value: str) -> str | None:
    if not value.startswith(("/", "*")):
        return f"must start with '/' or '*' (got {value!r})"
    return None


def _host_problem(value: str) -> str | None:
    if ":" in value.strip("[]"):
        return f"hosts are matched without port: remove the port (got {value!r})"
    return None


def _method_problem(value: str) -> str | None:
    if not _TOKEN.match(value.replace("*", "")):
        return f"{value!r} is not an HTTP method"
    return None


def _patterns(
    ctx: Context, doc: Document, loc: Loc, field: str, values: list[str], extra: Callable[[str], str | None] | None
) -> None:
    for i, value in enumerate(values):
        problem = wildcard_problem(value) or (extra(value) if extra else None)
        if problem:
            ctx.report(doc, (*loc, field, i), problem)


def _source(ctx: Context, doc: Document, loc: Loc, source: Source) -> None:
    if not (source.principals or source.not_principals or source.namespaces or source.not_namespaces):
        ctx.report(doc, loc, "must set at least one of principals, notPrincipals, namespaces, notNamespaces")
    for field, values in (
        ("principals", source.principals),
        ("notPrincipals", source.not_principals),
        ("namespaces", source.namespaces),
        ("notNamespaces", source.not_namespaces),
    ):
        _patterns(ctx, doc, loc, field, values, None)


def _operation(ctx: Context, doc: Document, loc: Loc, op: Operation) -> None:
    fields: list[tuple[str, list[str], Callable[[str], str | None]]] = [
        ("hosts", op.hosts, _host_problem),
        ("notHosts", op.not_hosts, _host_problem),
        ("methods", op.methods, _method_problem),
        ("notMethods", op.not_methods, _method_problem),
        ("paths", op.paths, _path_problem),
        ("notPaths", op.not_paths, _path_problem),
    ]
    if not (any(values for _, values, _ in fields) or op.ports or op.not_ports):
        ctx.report(doc, loc, "must set at least one of hosts, ports, methods, paths (or their not* forms)")
    for field, values, extra in fields:
        _patterns(ctx, doc, loc, field, values, extra)


def check_authorization_policy(ctx: Context, doc: Document) -> None:
    policy = doc.obj
    assert isinstance(policy, AuthorizationPolicy)
    spec = policy.spec
    for i, ref in enumerate(spec.target_refs):
        loc = ("spec", "targetRefs", i)
        if ref.namespace is not None and ref.namespace != policy.namespace:
            ctx.report(
                doc, (*loc, "namespace"), f"must be the policy's namespace {policy.namespace!r} (got {ref.namespace!r})"
            )
        elif ctx.cfg.service(policy.namespace, ref.name) is None and not ctx.is_broken(
            "Service", policy.namespace, ref.name
        ):
            known = [s.name for s in ctx.cfg.services if s.namespace == policy.namespace]
            message = f"Service {policy.namespace}/{ref.name} not found{did_you_mean(ref.name, known)}"
            ctx.report(doc, (*loc, "name"), message)
    for r, rule in enumerate(spec.rules):
        for f, from_ in enumerate(rule.from_):
            _source(ctx, doc, ("spec", "rules", r, "from", f, "source"), from_.source)
        for t, to in enumerate(rule.to):
            _operation(ctx, doc, ("spec", "rules", r, "to", t, "operation"), to.operation)
