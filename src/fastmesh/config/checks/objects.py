"""Checks across documents: each object once, and at most one Proxy."""

from __future__ import annotations

from fastmesh.config.checks.context import Context
from fastmesh.config.mesh import Document
from fastmesh.config.model import Proxy


def check_objects(ctx: Context) -> None:
    first: dict[tuple[str, str, str], Document] = {}
    first_proxy: Document | None = None
    for doc in ctx.cfg.documents:
        key = (doc.obj.KIND, doc.obj.namespace, doc.obj.name)
        if key in first:
            ctx.report(doc, ("metadata", "name"), f"duplicate {doc.label}: document {first[key].index} defines it too")
            continue
        first[key] = doc
        if isinstance(doc.obj, Proxy):
            if first_proxy is not None:
                ctx.report(
                    doc, (), f"only one Proxy document is allowed (document {first_proxy.index} is {first_proxy.label})"
                )
            elif ctx.is_broken("Proxy"):
                ctx.report(doc, (), "only one Proxy document is allowed (this file has another one, with errors)")
            else:
                first_proxy = doc
