"""Checks of a Service beyond its schema: a name usable as a host, port names, protocols, balancer."""

from __future__ import annotations

import re

from fastmesh.config.checks.context import Context, duplicates
from fastmesh.config.mesh import Document
from fastmesh.config.model import Service
from fastmesh import spiffe
from fastmesh.config.model.service import (
    APP_PROTOCOLS,
    LB_ANNOTATION,
    LB_ANNOTATION_VALUES,
    SERVICE_ACCOUNT_ANNOTATION,
)
from fastmesh.config.model.types import dns_1035_problem

_PORT_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")


def check_service(ctx: Context, doc: Document) -> None:
    service = doc.obj
    assert isinstance(service, Service)
    if problem := dns_1035_problem(service.name):
        ctx.report(doc, ("metadata", "name"), problem)
    lb = service.metadata.annotations.get(LB_ANNOTATION)
    if lb is not None and lb not in LB_ANNOTATION_VALUES:
        ctx.report(
            doc,
            ("metadata", "annotations", LB_ANNOTATION),
            f"must be one of {', '.join(LB_ANNOTATION_VALUES)} (got {lb!r})",
        )
    account = service.service_account
    if account is not None:
        loc: tuple[str | int, ...] = ("metadata", "annotations", SERVICE_ACCOUNT_ANNOTATION)
        if problem := spiffe.service_account_problem(account):
            ctx.report(doc, loc, problem)
        elif ctx.cfg.proxy.identity is None:
            ctx.report(doc, loc, "marks the Service meshed (mTLS to its endpoints), which needs a "
                                 "Proxy with spec.identity")
    ports = service.spec.ports
    for i, port in enumerate(ports):
        loc = ("spec", "ports", i)
        if port.name is None and len(ports) > 1:
            ctx.report(doc, (*loc, "name"), "required when the Service has more than one port")
        elif port.name is not None and (len(port.name) > 15 or not _PORT_NAME.match(port.name)):
            message = f"must be at most 15 lower-case letters, digits and '-' (got {port.name!r})"
            ctx.report(doc, (*loc, "name"), message)
        if port.app_protocol is not None and port.app_protocol not in APP_PROTOCOLS:
            ctx.report(
                doc,
                (*loc, "appProtocol"),
                f"unsupported appProtocol {port.app_protocol!r}: fastmesh speaks HTTP/1.1 (unset or 'http')"
                " and HTTP/2 cleartext ('kubernetes.io/h2c')",
            )
    named = (p.name if p.name is not None else ("unnamed", i) for i, p in enumerate(ports))
    for i, first in duplicates(named):
        ctx.report(doc, ("spec", "ports", i, "name"), f"duplicate port name {ports[i].name!r} (ports[{first}] has it)")
    for i, first in duplicates(p.port for p in ports):
        ctx.report(doc, ("spec", "ports", i, "port"), f"duplicate port {ports[i].port} (ports[{first}] has it)")
