"""Who a proxy is: its ServiceAccount token, checked by the API server (TokenReview, authentication.k8s.io/v1).

`system:serviceaccount:<ns>:<sa>` becomes the workload `spiffe://<trust domain>/ns/<ns>/sa/<sa>`; the
namespace also picks the proxy's view. With `audiences` (`fastmesh control --token-audience`), the review
asks for them (`spec.audiences`): a token minted for another audience (e.g. the API server's own) is refused
(401), so a token the proxy holds for something else cannot be replayed here. Answers are cached for
`cache_s` (a proxy reconnecting and asking for a certificate makes one review, not two); a refused token
is never cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from fastmesh import spiffe
from fastmesh.kube import KubeError
from fastmesh.kube.source import Client

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SA_PREFIX = "system:serviceaccount:"


class AuthError(Exception):
    """The request is refused: `status` (401 unauthenticated, 403 not allowed, 503 cannot check) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Workload:
    namespace: str
    service_account: str
    spiffe_id: str


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "no bearer token: send `Authorization: Bearer <ServiceAccount token>`")
    return token.strip()


def workload_of(username: str, trust_domain: str) -> Workload:
    if not username.startswith(SA_PREFIX) or username.count(":") != 3:
        raise AuthError(403, f"{username!r} is not a ServiceAccount: only proxies' ServiceAccount tokens are taken")
    namespace, service_account = username[len(SA_PREFIX):].split(":")
    return Workload(namespace, service_account, spiffe.workload_id(trust_domain, namespace, service_account))


class TokenReviewer:
    def __init__(self, client: Client, trust_domain: str, cache_s: float = 10.0,
                 audiences: tuple[str, ...] = ()) -> None:
        self.client = client
        self.trust_domain = trust_domain
        self.audiences = audiences
        self.cache_s = cache_s
        self.reviews = 0
        self._cache: dict[str, tuple[float, Workload]] = {}

    async def workload(self, authorization: str | None) -> Workload:
        token = bearer(authorization)
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        username = await asyncio.to_thread(self._review, token)
        workload = workload_of(username, self.trust_domain)
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[digest] = (now + self.cache_s, workload)
        return workload

    def _review(self, token: str) -> str:
        """The authenticated username of `token` (from a thread: the call blocks)."""
        self.reviews += 1
        spec: dict[str, object] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        conn = self.client.open()
        try:
            status, data = self.client.call(conn, TOKEN_REVIEWS, "POST", body)
        except KubeError as e:
            raise AuthError(503, f"cannot review the token: {e}") from None
        finally:
            conn.close()
        if status not in (200, 201):
            raise AuthError(503, f"TokenReview answered {status}: {data.get('message', data)}")
        result = data.get("status") or {}
        if not result.get("authenticated"):
            why = result.get("error") or "not authenticated"
            if self.audiences:
                why = f"{why} (this control plane takes only tokens for the audience {', '.join(self.audiences)})"
            raise AuthError(401, f"the token is not valid: {why}")
        granted = set(result.get("audiences") or [])
        if self.audiences and not granted & set(self.audiences):  # an authenticator that ignores audiences
            raise AuthError(401, f"the token is not valid: it is for {sorted(granted) or 'the API server'}, "
                                 f"not for the audience {', '.join(self.audiences)}")
        return str((result.get("user") or {}).get("username", ""))
