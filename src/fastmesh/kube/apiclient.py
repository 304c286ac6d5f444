"""The control plane's transport for fastmesh.kube.watch.Reflector: the `kubernetes` client (`ApiClient` on
each kind's collection path, `kubernetes.watch.Watch` for the watch stream), configured from the same
Connection as the sidecar's http.client transport. Objects stay the API's JSON (`raw_object`): no model is
deserialised. Importing `kubernetes` costs ~34 MB RSS, so the sidecar (`fastmesh proxy --kubernetes`) never
imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from fastmesh.kube import KubeError
from fastmesh.kube.kubeconfig import Connection
from fastmesh.kube.source import PAGE, add_page, collection_path
from fastmesh.kube.watch import Gone


class KubernetesTransport:
    def __init__(self, connection: Connection, timeout_s: float = 10.0) -> None:
        self.connection, self.timeout_s = connection, timeout_s
        config = k8s.Configuration(host=connection.server)
        config.verify_ssl = not connection.insecure
        config.ssl_ca_cert = connection.ca_file
        config.ca_cert_data = connection.ca_data.decode() if connection.ca_data else None
        config.retries = 0  # the Reflector backs off itself
        self.api = k8s.ApiClient(config)

    def _get(self, path: str, query: list[tuple[str, Any]], timeout_s: float) -> Any:
        """The urllib3 response, its body unread; KubeError when no answer came."""
        headers = {"Accept": "application/json"}
        token = self.connection.bearer()  # read at each request: a rotated token file is followed
        if token:
            headers["Authorization"] = f"Bearer {token}"
        method, url, headers, _, _ = self.api.param_serialize("GET", path, query_params=query, header_params=headers)
        try:
            return self.api.call_api(method, url, header_params=headers, _request_timeout=timeout_s).response
        except (ApiException, urllib3.exceptions.HTTPError) as e:
            raise KubeError(f"GET {self.connection.server}{path}: {e}") from None

    def list(
        self, api_version: str, plural: str, namespace: str | None, each: Callable[[dict[str, Any]], Any] | None,
    ) -> tuple[list[Any], str] | None:
        path = collection_path(api_version, plural, namespace)
        items: list[Any] = []
        token = ""
        while True:
            response = self._get(path, [("limit", PAGE), *([("continue", token)] if token else [])], self.timeout_s)
            try:
                body = response.data
            except urllib3.exceptions.HTTPError as e:
                raise KubeError(f"GET {self.connection.server}{path}: {e}") from None
            finally:
                response.release_conn()
            if response.status == 404:
                return None
            if response.status != 200:
                raise KubeError(f"GET {self.connection.server}{path}: {response.status} {body[:200]!r}")
            token, version = add_page(json.loads(body), items, each)
            if not token:
                return items, version

    def watch(
        self, api_version: str, plural: str, namespace: str | None, resource_version: str, timeout_s: int,
    ) -> KubernetesWatch:
        return KubernetesWatch(self, collection_path(api_version, plural, namespace), resource_version, timeout_s)


class KubernetesWatch:
    """`kubernetes.watch.Watch().stream` on a collection path; 410 (answer or ERROR event) raises Gone."""

    def __init__(self, transport: KubernetesTransport, path: str, resource_version: str, timeout_s: int) -> None:
        self.transport, self.path = transport, path
        self.resource_version, self.timeout_s = resource_version, timeout_s
        self._watch = k8s_watch.Watch()
        self._aborted = False

    def _open(self, **kwargs: Any) -> Any:
        """The watch request, as Watch.stream calls an API function (watch=True, _preload_content=False, ...)."""
        if self._aborted:  # stopped before the request: Watch.stream has reset its own stop flag
            raise KubeError(f"watch {self.path}: stopped")
        query = [("watch", "true"), ("resourceVersion", kwargs["resource_version"]),
                 ("allowWatchBookmarks", "true" if kwargs["allow_watch_bookmarks"] else "false"),
                 ("timeoutSeconds", kwargs["timeout_seconds"])]
        response = self.transport._get(self.path, query, kwargs["timeout_seconds"] + 30)
        if response.status != 200:
            body = response.data[:200]
            response.release_conn()
            if response.status == 410:
                raise Gone(f"{self.path}: 410")
            raise KubeError(f"watch {self.path}: {response.status} {body!r}")
        return response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            # timeout_seconds given: Watch.stream neither retries nor resumes; the Reflector does.
            for event in self._watch.stream(self._open, resource_version=self.resource_version,
                                            allow_watch_bookmarks=True, timeout_seconds=self.timeout_s):
                yield {"type": event["type"], "object": event["raw_object"]}
        except ApiException as e:  # an ERROR event
            if e.status == 410:
                raise Gone(f"{self.path}: {e.reason}") from None
            raise KubeError(f"watch {self.path}: {e.status} {e.reason}") from None
        except urllib3.exceptions.HTTPError as e:
            raise KubeError(f"watch {self.path}: {e}") from None

    def abort(self) -> None:
        self._aborted = True
        self._watch.stop()  # shuts the socket down: a read waiting for the next event returns
