"""The admin HTTP API (default 127.0.0.1:15000): /ready /live /config /stats /metrics.

See docs/admin.md. Served by the orchestrator's event loop; it only reads state and engine counters.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from fastmesh import http1, metrics
from fastmesh.engine import Engine
from fastmesh.http1 import Request, Response
from fastmesh.state import State

JSON = "application/json"


def loop_class() -> str:
    """The class of the running event loop, e.g. "uvloop.Loop": /stats shows what serves the orchestrator."""
    cls = type(asyncio.get_running_loop())
    return f"{cls.__module__}.{cls.__qualname__}"


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=2) + "\n").encode(), JSON)


class Admin:
    def __init__(self, state: State, engine: Engine) -> None:
        self.state = state
        self.engine = engine
        self.registry = metrics.make_registry(engine.stats, state)
        self._server: asyncio.Server | None = None
        self._routes = {
            "/ready": self.ready,
            "/live": self.live,
            "/config": self.config,
            "/stats": self.stats,
            "/metrics": self.metrics,
        }

    async def start(self, address: str) -> str:
        """Listen on `address`; returns the bound ip:port. OSError if it cannot bind."""
        self._server, bound = await http1.start_server(self.handle, address)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return Response(404, f"not found: {request.path}\n".encode())
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("allow", "GET, HEAD")])
        return route()

    def ready(self) -> Response:
        if self.state.draining:
            return Response(503, b"draining\n")
        if not self.state.ready:
            return Response(503, b"not ready\n")
        return Response(200, b"ready\n")

    def live(self) -> Response:
        return Response(200, b"live\n")

    def config(self) -> Response:
        return _json(200, self.state.config_view())

    def stats(self) -> Response:
        doc = self.engine.stats()
        doc["orchestrator"] = self.state.orchestrator_view(os.getpid(), event_loop=loop_class())
        return _json(200, doc)

    def metrics(self) -> Response:
        return Response(200, metrics.exposition(self.registry), metrics.CONTENT_TYPE)
