"""Checks of the Proxy beyond its schema: listeners and admin do not collide, external names unique."""

from __future__ import annotations

import ipaddress

from fastmesh.config.checks.context import Context, did_you_mean, duplicates
from fastmesh.config.mesh import Document
from fastmesh.config.model import Proxy
from fastmesh.config.model.types import join_hostport, parse_duration, split_hostport


def _collide(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two binds would conflict: same port (not 0) and same address or a wildcard one."""
    if a[1] != b[1] or a[1] == 0:
        return False
    ip_a, ip_b = ipaddress.ip_address(a[0]), ipaddress.ip_address(b[0])
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def check_proxy(ctx: Context, doc: Document) -> None:
    proxy = doc.obj
    assert isinstance(proxy, Proxy)
    spec = proxy.spec
    for i, first in duplicates(listener.name for listener in spec.listeners):
        name = spec.listeners[i].name
        message = f"duplicate listener name {name!r} (listeners[{first}] has it)"
        ctx.report(doc, ("spec", "listeners", i, "name"), message)
    binds: list[tuple[tuple[str, int], str]] = []
    for i, listener in enumerate(spec.listeners):
        loc = ("spec", "listeners", i)
        bind = (listener.address, listener.port)
        clash = next((where for other, where in binds if _collide(bind, other)), None)
        if clash:
            ctx.report(doc, (*loc, "port"), f"{join_hostport(*bind)} is already used by {clash}")
        binds.append((bind, f"listeners[{i}] ({join_hostport(*bind)})"))
        _inbound_service(ctx, doc, (*loc, "inboundService"), listener.inbound_service, listener.inbound_service_ref)
    admin = split_hostport(spec.admin.address)
    clash = next((where for other, where in binds if _collide(admin, other)), None)
    if clash:
        ctx.report(doc, ("spec", "admin", "address"), f"{spec.admin.address} is already used by {clash}")
    if parse_duration(spec.pool.connect_timeout) == 0:
        ctx.report(doc, ("spec", "pool", "connectTimeout"), "must be longer than 0s")
    for i, listener in enumerate(spec.listeners):
        if listener.mtls != "DISABLE" and spec.identity is None:
            ctx.report(doc, ("spec", "listeners", i, "mtls"),
                       f"{listener.mtls} needs spec.identity: mTLS presents a workload certificate")
    if spec.identity is not None and parse_duration(spec.identity.cert_ttl) < 1:
        ctx.report(doc, ("spec", "identity", "certTTL"), "must be at least 1s")
    for i, first in duplicates(external.name for external in spec.external_services):
        name = spec.external_services[i].name
        message = f"duplicate external service {name!r} (externalServices[{first}] has it)"
        ctx.report(doc, ("spec", "externalServices", i, "name"), message)


def _inbound_service(ctx: Context, doc: Document, loc: tuple[str | int, ...], text: str | None, ref: tuple[str, str] | None) -> None:
    if text is None or ref is None:
        return
    namespace, name = ref
    if text.count("/") > 1 or not name:
        ctx.report(doc, loc, f"must be a Service name or namespace/name (got {text!r})")
    elif ctx.cfg.service(namespace, name) is None and not ctx.is_broken("Service", namespace, name):
        hint = did_you_mean(f"{namespace}/{name}", [s.ref for s in ctx.cfg.services])
        ctx.report(doc, loc, f"Service {namespace}/{name} not found{hint}")
