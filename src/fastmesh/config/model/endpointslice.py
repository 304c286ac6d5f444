"""`discovery.k8s.io/v1 EndpointSlice`: the addresses behind a Service's ports (static, in the file)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import Port

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EndpointConditions(Spec):
    """State of an endpoint; only `ready` is used."""

    ready: bool | None = None
    """Unset counts as ready; `false` takes the endpoint out of the backend."""
    serving: bool | None = None
    """Ignored."""
    terminating: bool | None = None
    """Ignored."""


class EndpointEntry(Spec):
    """One endpoint: addresses serving every port of the slice."""

    addresses: list[str] = Field(min_length=1, max_length=100)
    """Addresses of the `addressType` (IPs, or DNS names for FQDN)."""
    conditions: EndpointConditions = EndpointConditions()
    """Readiness."""
    hostname: str | None = None
    """Ignored."""
    node_name: str | None = None
    """Ignored."""
    zone: str | None = None
    """Ignored."""
    target_ref: Any = None
    """Ignored."""
    hints: Any = None
    """Ignored."""


class EndpointPort(Spec):
    """A port of the slice, matched to the Service port of the same name."""

    name: str | None = None
    """Name of the Service port these endpoints serve; unset for a Service's single unnamed port."""
    port: Port
    """Port on the endpoints."""
    protocol: Literal["TCP"] = "TCP"
    """Only TCP."""
    app_protocol: str | None = None
    """Ignored: the Service port's appProtocol decides."""


class EndpointSlice(KubeObject):
    """Endpoints of one Service, named by the label `kubernetes.io/service-name`."""

    API_VERSION = "discovery.k8s.io/v1"
    KIND = "EndpointSlice"

    api_version: Literal["discovery.k8s.io/v1"] = "discovery.k8s.io/v1"
    """API version."""
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    """Kind."""
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    """Type of every address in the slice."""
    endpoints: list[EndpointEntry] = Field(default_factory=list, max_length=1000)
    """Endpoints."""
    ports: list[EndpointPort] = Field(min_length=1, max_length=100)
    """Ports served by every endpoint."""

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)
