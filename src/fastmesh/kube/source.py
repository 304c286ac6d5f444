"""Cluster objects as the documents a config file holds: Services, EndpointSlices, HTTPRoutes and the
fastmesh.io kinds, listed from the Kubernetes API and written as one multi-document text (JSON documents,
which are YAML), so the file loader checks and compiles them exactly as it does a file.

Kubernetes objects carry what fastmesh does not proxy: Service and EndpointSlice ports that are not TCP
are left out, and so are `ExternalName` Services and slices left with no port. A kind whose API is not
served (Gateway API or fastmesh CRDs not installed) reads as none. `read()` is a full list (paginated);
fastmesh.kube.watch keeps the same documents current with watches.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastmesh.kube import KubeError
from fastmesh.kube.kubeconfig import Connection

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

    def open(self, read_timeout_s: float | None = None) -> http.client.HTTPConnection:
        timeout = read_timeout_s or self.timeout_s
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self.connection.ssl_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self, conn: http.client.HTTPConnection, path: str, method: str = "GET", body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> http.client.HTTPResponse:
        """Send a request; the response with its body unread (a watch streams it)."""
        headers = {"Accept": "application/json"}
        token = self.connection.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise KubeError(f"{method} {self.connection.server}{path}: {e}") from None

    def get(self, conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
        return self.call(conn, path)

    def call(
        self, conn: http.client.HTTPConnection, path: str, method: str = "GET", body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of one request."""
        response = self.request(conn, path, method, body, content_type)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise KubeError(f"{method} {self.connection.server}{path}: {e}") from None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"message": raw[:200].decode(errors="replace")}
        return response.status, data

    def list_with_version(
        self, api_version: str, plural: str, namespace: str | None = None,
        each: Callable[[dict[str, Any]], Any] | None = None,
    ) -> tuple[list[Any], str] | None:
        """(objects, the list's resourceVersion to watch from), or None when the API does not serve it.
        `each`: what is kept of each object, made page by page (a page's objects are freed before the next)."""
        path = collection_path(api_version, plural, namespace)
        items: list[Any] = []
        token = ""
        conn = self.open()
        try:
            while True:
                query = urllib.parse.urlencode({"limit": PAGE, **({"continue": token} if token else {})})
                status, data = self.get(conn, f"{path}?{query}")
                if status == 404:
                    return None
                if status != 200:
                    raise KubeError(f"GET {self.connection.server}{path}: {status} {data.get('message', data)}")
                token, version = add_page(data, items, each)
                if not token:
                    return items, version
        finally:
            conn.close()


def add_page(data: dict[str, Any], items: list[Any], each: Callable[[dict[str, Any]], Any] | None) -> tuple[str, str]:
    """Adds a list page's objects to `items` (what `each` keeps of them); (the continue token, "" on the last
    page; the list's resourceVersion)."""
    page = data.get("items") or []
    items += page if each is None else [each(obj) for obj in page]
    meta = data.get("metadata") or {}
    return str(meta.get("continue") or ""), str(meta.get("resourceVersion", ""))


def _tcp_ports(ports: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [p for p in ports or [] if p.get("protocol", "TCP") == "TCP"]


def project(kind: str, api_version: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object as a config document (apiVersion and kind set, status dropped), or None to leave it out."""
    doc = {"apiVersion": api_version, "kind": kind, **{k: v for k, v in obj.items() if k != "status"}}
    meta = doc.get("metadata") or {}
    # resourceVersion moves on with every write, status ones too (ours): it must not make a reload.
    doc["metadata"] = {k: v for k, v in meta.items() if k not in ("managedFields", "resourceVersion")}
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
    proxy_namespace: str | None = None
    """The proxy's own namespace: only the Proxy object of it counts (None: any one)."""
    write_status: bool = True
    """Write the status of the HTTPRoutes (fastmesh.kube.status); off by `--no-kube-status`."""
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The raw objects by kind of the last content read (by `read` or the watcher), status included."""

    @property
    def label(self) -> str:
        where = f" namespace {self.namespace}" if self.namespace else ""
        return f"kubernetes {self.connection.server}{where}"

    def objects(self) -> list[dict[str, Any]]:
        client = Client(self.connection)
        listed: dict[str, list[dict[str, Any]]] = {}
        for kind, api_version, plural in RESOURCES:
            found = client.list_with_version(api_version, plural, self.namespace)
            listed[kind] = found[0] if found is not None else []
        self.listed = listed
        return documents(listed, self.proxy_namespace)

    def read(self) -> bytes:
        """The objects as multi-document config text (stable order, so equal state gives equal bytes)."""
        return render(self.objects())


def documents(listed: dict[str, list[dict[str, Any]]], proxy_namespace: str | None = None) -> list[dict[str, Any]]:
    """Raw objects by kind -> config documents, in RESOURCES order then namespace/name. With
    `proxy_namespace`, Proxy objects of other namespaces (other proxies' settings) are left out."""
    docs: list[dict[str, Any]] = []
    for kind, api_version, _ in RESOURCES:
        projected = (project(kind, api_version, item) for item in listed.get(kind, []))
        kept = [d for d in projected if d is not None]
        if kind == "Proxy" and proxy_namespace is not None:
            kept = [d for d in kept if d["metadata"].get("namespace") == proxy_namespace]
        kept.sort(key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"].get("name", "")))
        docs += kept
    return docs


def render(docs: list[dict[str, Any]]) -> bytes:
    parts = [json.dumps(d, sort_keys=True, separators=(",", ":")) for d in docs]
    return ("\n---\n".join(parts) + "\n").encode()
