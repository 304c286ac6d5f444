"""Checks that need more than one field: within a document, and across documents."""

from __future__ import annotations

from collections.abc import Callable

from fastmesh.config.checks.authorizationpolicy import check_authorization_policy
from fastmesh.config.checks.context import Context
from fastmesh.config.checks.endpointslice import check_endpoint_slice
from fastmesh.config.checks.httproute import check_route
from fastmesh.config.checks.objects import check_objects
from fastmesh.config.checks.proxy import check_proxy
from fastmesh.config.checks.rollout import check_rollout
from fastmesh.config.checks.service import check_service
from fastmesh.config.checks.trafficpolicy import check_fault_injection, check_traffic_policy
from fastmesh.config.errors import Problem
from fastmesh.config.mesh import Document, MeshConfig

_BY_KIND: dict[str, Callable[[Context, Document], None]] = {
    "HTTPRoute": check_route,
    "Service": check_service,
    "EndpointSlice": check_endpoint_slice,
    "Proxy": check_proxy,
    "AuthorizationPolicy": check_authorization_policy,
    "TrafficPolicy": check_traffic_policy,
    "FaultInjection": check_fault_injection,
    "Rollout": check_rollout,
}


def check(
    cfg: MeshConfig, broken: frozenset[tuple[str, str, str]] = frozenset(), allow_invalid_backends: bool = False
) -> list[Problem]:
    """Every problem of a config whose documents passed the schema."""
    return checked(cfg, broken, allow_invalid_backends).problems


def checked(
    cfg: MeshConfig, broken: frozenset[tuple[str, str, str]] = frozenset(), allow_invalid_backends: bool = False
) -> Context:
    """The checks run: `.problems`, and `.unresolved` backendRefs when they are allowed."""
    ctx = Context(cfg, broken, allow_invalid_backends)
    check_objects(ctx)
    for doc in cfg.documents:
        _BY_KIND[doc.obj.KIND](ctx, doc)
    return ctx


__all__ = ["check", "checked"]
