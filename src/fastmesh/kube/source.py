"""Cluster objects as the documents a config file holds: Services, EndpointSlices, HTTPRoutes and the
fastmesh.io kinds, listed from the Kubernetes API and written as one multi-document text (JSON documents,
which are YAML), so the file loader checks and compiles them exactly as it does a file.

Kubernetes objects carry what fastmesh does not proxy: Service and EndpointSlice ports that are not TCP
are left out, and so are `ExternalName` Services and slices left with no port. A kind whose API is not
served (Gateway API or fastmesh CRDs not installed) reads as none. Each read is a full list (paginated);
watches come next.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastmesh.kube import KubeError
from fastmesh.kube.kubeconfig import Connection
from fastmesh.reload import digest

log = logging.getLogger("fastmesh.kube")

# (kind, apiVersion, plural): the order of the documents (Services before what refers to them).
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("Proxy", "fastmesh.io/v1alpha1", "proxies"),
    ("Service", "v1", "services"),
    ("EndpointSlice", "discovery.k8s.io/v1", "endpointslices"),
    ("HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes"),
    ("TrafficPolicy", "fastmesh.io/v1alpha1", "trafficpolicies"),
    ("FaultInjection", "fastmesh.io/v1alpha1", "faultinjections"),
    ("AuthorizationPolicy", "fastmesh.io/v1alpha1", "authorizationpolicies"),
)
PAGE = 500


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


class Client:
    """GETs against the API server with the connection's bearer token and CA (one connection per read)."""

    def __init__(self, connection: Connection, timeout_s: float = 10.0) -> None:
        self.connection = connection
        url = urllib.parse.urlsplit(connection.server)
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname or "", url.port or (443 if self._https else 80)
        self.timeout_s = timeout_s

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout_s, context=self.connection.ssl_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)

    def get(self, conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json"}
        token = self.connection.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise KubeError(f"GET {self.connection.server}{path}: {e}") from None
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {"message": body[:200].decode(errors="replace")}
        return response.status, data

    def list(self, api_version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]] | None:
        """Every object of a collection (None when the API does not serve it), paginated."""
        path = collection_path(api_version, plural, namespace)
        items: list[dict[str, Any]] = []
        token = ""
        conn = self._open()
        try:
            while True:
                query = urllib.parse.urlencode({"limit": PAGE, **({"continue": token} if token else {})})
                status, data = self.get(conn, f"{path}?{query}")
                if status == 404:
                    return None
                if status != 200:
                    raise KubeError(f"GET {self.connection.server}{path}: {status} {data.get('message', data)}")
                items += data.get("items") or []
                token = (data.get("metadata") or {}).get("continue") or ""
                if not token:
                    return items
        finally:
            conn.close()


def _tcp_ports(ports: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [p for p in ports or [] if p.get("protocol", "TCP") == "TCP"]


def project(kind: str, api_version: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object as a config document (apiVersion and kind set, status dropped), or None to leave it out."""
    doc = {"apiVersion": api_version, "kind": kind, **{k: v for k, v in obj.items() if k != "status"}}
    meta = doc.get("metadata") or {}
    doc["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    if kind == "Service":
        spec = dict(doc.get("spec") or {})
        if spec.get("type") == "ExternalName":
            return None
        spec["ports"] = _tcp_ports(spec.get("ports"))
        if not spec["ports"]:
            return None
        doc["spec"] = spec
    elif kind == "EndpointSlice":
        doc["ports"] = _tcp_ports(doc.get("ports"))
        if not doc["ports"]:
            return None
    return doc


@dataclass
class KubeSource:
    """Reads the mesh's objects from one cluster (optionally one namespace) as config text."""

    connection: Connection
    namespace: str | None = None

    @property
    def label(self) -> str:
        where = f" namespace {self.namespace}" if self.namespace else ""
        return f"kubernetes {self.connection.server}{where}"

    def objects(self) -> list[dict[str, Any]]:
        client = Client(self.connection)
        docs: list[dict[str, Any]] = []
        for kind, api_version, plural in RESOURCES:
            items = client.list(api_version, plural, self.namespace) or []
            projected = (project(kind, api_version, item) for item in items)
            kept = [d for d in projected if d is not None]
            kept.sort(key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"].get("name", "")))
            docs += kept
        return docs

    def read(self) -> bytes:
        """The objects as multi-document config text (stable order, so equal state gives equal bytes)."""
        parts = [json.dumps(d, sort_keys=True, separators=(",", ":")) for d in self.objects()]
        return ("\n---\n".join(parts) + "\n").encode()


class KubePoller:
    """Re-reads the cluster every `interval_s` and calls `on_change(content)` when the objects changed.

    The first slice: a full list per poll. List+watch from a resourceVersion replaces it next.
    """

    def __init__(
        self, source: KubeSource, on_change: Callable[[bytes], Awaitable[None]], interval_s: float = 2.0
    ) -> None:
        self.source = source
        self.on_change = on_change
        self.interval_s = interval_s
        self._digest: str | None = None

    def seen(self, content: bytes) -> None:
        self._digest = digest(content)

    async def poll_once(self) -> bool:
        content = await asyncio.to_thread(self.source.read)
        content_digest = digest(content)
        if content_digest == self._digest:
            return False
        self._digest = content_digest
        await self.on_change(content)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                log.warning("reading %s failed: %s", self.source.label, e)
            except Exception:  # keep polling whatever a single read hit
                log.exception("reading %s failed", self.source.label)
