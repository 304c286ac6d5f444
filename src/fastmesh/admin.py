"""The admin HTTP API (default 127.0.0.1:15000): /ready /live /config /stats /metrics /rollouts, and
`POST /identity/renew` and `POST /rollouts/<namespace>/<name>/<action>` behind a bearer token.

See docs/admin.md. Served by the orchestrator's event loop; the GET endpoints only read state and
engine counters; endpoints that change state require `Authorization: Bearer <spec.admin.tokenFile>`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastmesh import http1, metrics
from fastmesh.engine import Engine
from fastmesh.http1 import Request, Response
from fastmesh.state import State

if TYPE_CHECKING:
    from fastmesh.identity import Identity

JSON = "application/json"


def loop_class() -> str:
    """The class of the running event loop, e.g. "uvloop.Loop": /stats shows what serves the orchestrator."""
    cls = type(asyncio.get_running_loop())
    return f"{cls.__module__}.{cls.__qualname__}"


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=2) + "\n").encode(), JSON)


def _no_identity() -> Identity | None:
    return None


def _no_token_file() -> str | None:
    return None


class Admin(http1.Served):
    def __init__(self, state: State, engine: Engine,
                 identity: Callable[[], Identity | None] = _no_identity,
                 token_file: Callable[[], str | None] = _no_token_file,
                 rollouts: Callable[[], list[dict[str, Any]]] = list,
                 rollout_action: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.state = state
        self.engine = engine
        self.identity = identity
        self.token_file = token_file
        self.rollouts = rollouts
        self.rollout_action = rollout_action
        self.registry = metrics.make_registry(engine.stats, state, self._identity_figures)
        self._routes = {
            "/ready": self.ready,
            "/live": self.live,
            "/config": self.config,
            "/stats": self.stats,
            "/metrics": self.metrics,
            "/rollouts": self.rollouts_view,
        }
        self._actions: dict[str, Callable[[], Awaitable[Response]]] = {
            "/identity/renew": self.renew_identity,
        }

    def _identity_figures(self) -> dict[str, Any] | None:
        identity = self.identity()
        return identity.figures() if identity is not None else None

    async def handle(self, request: Request) -> Response:
        action = self._actions.get(request.path)
        if action is None and request.path.startswith("/rollouts/"):
            action = self._rollout_action(request.path)
        if action is not None:
            if request.method != "POST":
                return Response(405, b"method not allowed\n", headers=[("allow", "POST")])
            refused = self._authorize(request)
            return refused if refused is not None else await action()
        route = self._routes.get(request.path)
        if route is None:
            return Response(404, f"not found: {request.path}\n".encode())
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("allow", "GET, HEAD")])
        return route()

    def _authorize(self, request: Request) -> Response | None:
        """None when the request carries the admin token; else the refusal."""
        path = self.token_file()
        if path is None:
            return Response(403, b"forbidden: state-changing endpoints need spec.admin.tokenFile\n")
        try:
            with open(path, "rb") as f:
                token = f.read().strip()
        except OSError as e:
            return Response(403, f"forbidden: cannot read the admin token file: {e.strerror}\n".encode())
        if not token:
            return Response(403, b"forbidden: the admin token file is empty\n")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        import hmac  # here, not at the top: it loads OpenSSL's digests (~0.6 MiB) into the idle proxy

        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            return Response(401, b"unauthorized: missing or wrong bearer token\n",
                            headers=[("www-authenticate", 'Bearer realm="fastmesh-admin"')])
        return None

    async def renew_identity(self) -> Response:
        from fastmesh.identity import IdentityError

        identity = self.identity()
        if identity is None:
            return Response(409, b"no identity configured (spec.identity)\n")
        try:
            await identity.renew("admin")
        except IdentityError as e:
            return _json(500, {"error": str(e)})
        return _json(200, identity.view())

    def _rollout_action(self, path: str) -> Callable[[], Awaitable[Response]]:
        """POST /rollouts/<namespace>/<name>/<start|pause|resume|abort|promote>."""

        async def act() -> Response:
            from fastmesh.rollout import ActionError

            name, _, verb = path[len("/rollouts/"):].rpartition("/")
            if self.rollout_action is None:
                return _json(409, {"error": "no rollouts here (file mode only; Kubernetes: the Rollout objects)"})
            try:
                view = await self.rollout_action(name, verb)
            except ActionError as e:
                return _json(e.status, {"error": str(e)})
            return _json(200, view)

        return act

    def ready(self) -> Response:
        if self.state.draining:
            return Response(503, b"draining\n")
        if not self.state.ready:
            return Response(503, b"not ready\n")
        return Response(200, b"ready\n")

    def live(self) -> Response:
        return Response(200, b"live\n")

    def _identity_view(self) -> dict[str, Any] | None:
        identity = self.identity()
        return identity.view() if identity is not None else None

    def config(self) -> Response:
        return _json(200, {**self.state.config_view(), "identity": self._identity_view()})

    def stats(self) -> Response:
        doc = self.engine.stats()
        doc["orchestrator"] = self.state.orchestrator_view(os.getpid(), event_loop=loop_class())
        doc["orchestrator"]["identity"] = self._identity_view()
        return _json(200, doc)

    def rollouts_view(self) -> Response:
        return _json(200, {"rollouts": self.rollouts()})

    def metrics(self) -> Response:
        return Response(200, metrics.exposition(self.registry), metrics.CONTENT_TYPE)
