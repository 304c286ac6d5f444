"""Checks of a TrafficPolicy beyond its schema: its target exists, one policy per target, sane intervals."""

from __future__ import annotations

from fastmesh.config.checks.context import Context, did_you_mean
from fastmesh.config.mesh import Document
from fastmesh.config.model import FaultInjection, TrafficPolicy
from fastmesh.config.model.types import parse_duration


def check_traffic_policy(ctx: Context, doc: Document) -> None:
    policy = doc.obj
    assert isinstance(policy, TrafficPolicy)
    target = policy.spec.target_ref
    loc = ("spec", "targetRef")
    if target.kind == "HTTPRoute":
        _route_target(ctx, doc, policy)
        return
    if target.group != "":
        ctx.report(doc, (*loc, "group"), f'a Service target needs group "" (got {target.group!r})')
    service = ctx.cfg.service(policy.namespace, target.name)
    if service is None:
        if not ctx.is_broken("Service", policy.namespace, target.name):
            known = (f"{s.namespace}/{s.name}" for s in ctx.cfg.services)
            ref = f"{policy.namespace}/{target.name}"
            ctx.report(doc, (*loc, "name"), f"Service {ref} not found{did_you_mean(ref, known)}")
    elif target.port is not None and target.port not in [p.port for p in service.spec.ports]:
        ports = ", ".join(str(p.port) for p in service.spec.ports)
        ctx.report(doc, (*loc, "port"), f"Service {service.ref} has no port {target.port} (its ports: {ports})")
    other = ctx.first_service_policy.get((policy.namespace, target.name, target.port))
    if other is not None and other is not policy:
        ctx.report(doc, loc, f"TrafficPolicy {other.ref} already targets this Service{_port(target.port)}")
    _outlier(ctx, doc, policy)
    if policy.spec.connect_timeout is not None and parse_duration(policy.spec.connect_timeout) == 0:
        ctx.report(doc, ("spec", "connectTimeout"), "must be longer than 0s")
    retry = policy.spec.retry
    if retry is not None:
        backoff = retry.backoff
        if backoff.max_interval is not None and parse_duration(backoff.max_interval) < parse_duration(
            backoff.base_interval
        ):
            ctx.report(
                doc,
                ("spec", "retry", "backoff", "maxInterval"),
                f"must be at least baseInterval ({backoff.base_interval}; got {backoff.max_interval})",
            )
        if retry.per_try_timeout is not None and parse_duration(retry.per_try_timeout) == 0:
            ctx.report(doc, ("spec", "retry", "perTryTimeout"), "must be longer than 0s (leave it out for none)")
        if parse_duration(retry.budget.ttl) < 0.01:
            ctx.report(doc, ("spec", "retry", "budget", "ttl"), f"must be at least 10ms (got {retry.budget.ttl})")


def _route_target(ctx: Context, doc: Document, policy: TrafficPolicy) -> None:
    target, loc = policy.spec.target_ref, ("spec", "targetRef")
    if target.group != "gateway.networking.k8s.io":
        ctx.report(doc, (*loc, "group"), f"an HTTPRoute target needs group gateway.networking.k8s.io (got {target.group!r})")
    if target.port is not None:
        ctx.report(doc, (*loc, "port"), "only for a Service target")
    routes = [r.name for r in ctx.cfg.routes if r.namespace == policy.namespace]
    if target.name not in routes and not ctx.is_broken("HTTPRoute", policy.namespace, target.name):
        ref = f"{policy.namespace}/{target.name}"
        ctx.report(doc, (*loc, "name"), f"HTTPRoute {ref} not found{did_you_mean(target.name, routes)}")
    spec = policy.spec
    for field, value in (
        ("outlierDetection", spec.outlier_detection),
        ("connectionPool", spec.connection_pool),
        ("connectTimeout", spec.connect_timeout),
        ("idleTimeout", spec.idle_timeout),
    ):
        if value is not None:
            ctx.report(doc, ("spec", field), "applies to a Service's endpoints: target the Service, not an HTTPRoute")
    for other in ctx.cfg.objects(TrafficPolicy):
        if other is policy:
            break
        if other.namespace == policy.namespace and other.spec.target_ref == target:
            ctx.report(doc, loc, f"TrafficPolicy {other.ref} already targets this HTTPRoute")
            break


def _outlier(ctx: Context, doc: Document, policy: TrafficPolicy) -> None:
    o = policy.spec.outlier_detection
    if o is None:
        return
    loc = ("spec", "outlierDetection")
    if o.consecutive_5xx_errors == 0 and o.consecutive_gateway_errors == 0:
        ctx.report(doc, loc, "consecutive5xxErrors and consecutiveGatewayErrors are both 0: nothing would be detected")
    if parse_duration(o.interval) == 0:
        ctx.report(doc, (*loc, "interval"), "must be longer than 0s")


def _port(port: int | None) -> str:
    return "" if port is None else f" port {port}"


def check_fault_injection(ctx: Context, doc: Document) -> None:
    fault = doc.obj
    assert isinstance(fault, FaultInjection)
    if fault.spec.delay is None and fault.spec.abort is None:
        ctx.report(doc, ("spec",), "give delay, abort or both")
