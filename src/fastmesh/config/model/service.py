"""`v1 Service`: a name with ports; each port is one backend, its EndpointSlices give the endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import IntOrString, Port

H2C = "kubernetes.io/h2c"
APP_PROTOCOLS = ("http", H2C)
LB_ANNOTATION = "fastmesh.io/load-balancer"
LB_ANNOTATION_VALUES = {"p2c-peak-ewma": "p2c_peak_ewma", "round-robin": "round_robin"}
SERVICE_ACCOUNT_ANNOTATION = "fastmesh.io/service-account"
"""Marks the Service meshed: its endpoints are proxies serving mTLS as this service account."""


class ServicePort(Spec):
    """A port of the Service: one backend `<ns>/<name>:<port>`."""

    name: str | None = None
    """Port name (required when there are several); EndpointSlice ports are matched by it."""
    port: Port
    """The port clients address; backendRefs name it."""
    target_port: IntOrString | None = None
    """Port on the endpoints; informational (EndpointSlices carry the real port)."""
    app_protocol: str | None = None
    """`kubernetes.io/h2c`: the upstream speaks HTTP/2 cleartext; unset or `http`: HTTP/1.1."""
    protocol: Literal["TCP"] = "TCP"
    """Only TCP ports carry HTTP."""
    node_port: int | None = None
    """Accepted for compatibility with Kubernetes manifests; ignored."""


class ServiceSpec(Spec):
    """The Service's ports. The other fields are accepted so Kubernetes manifests load, and ignored."""

    ports: list[ServicePort] = Field(min_length=1)
    """Ports; the first is the target of the default route."""
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Ignored (ExternalName Services are not supported: use `Proxy.spec.externalServices`)."""
    selector: dict[str, str] = Field(default_factory=dict)
    """Ignored: endpoints come from EndpointSlices."""
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    """Ignored."""
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    """Ignored."""
    ip_families: list[str] = Field(default_factory=list)
    """Ignored."""
    ip_family_policy: str | None = None
    """Ignored."""
    session_affinity: str | None = None
    """Ignored."""
    internal_traffic_policy: str | None = None
    """Ignored."""
    external_traffic_policy: Any = None
    """Ignored."""


class Service(KubeObject):
    """A Service: hostnames `<name>`, `<name>.<ns>`, `<name>.<ns>.svc`, `<name>.<ns>.svc.cluster.local`."""

    API_VERSION = "v1"
    KIND = "Service"

    api_version: Literal["v1"] = "v1"
    """API version."""
    kind: Literal["Service"] = "Service"
    """Kind."""
    spec: ServiceSpec
    """Ports."""

    @property
    def service_account(self) -> str | None:
        """The `fastmesh.io/service-account` annotation: set, the Service is meshed (mTLS)."""
        return self.metadata.annotations.get(SERVICE_ACCOUNT_ANNOTATION)

    def port(self, number: int) -> ServicePort | None:
        """The port numbered `number`, if the Service has it."""
        return next((p for p in self.spec.ports if p.port == number), None)

    def hostnames(self) -> list[str]:
        """The four names a client can address the Service by."""
        base = f"{self.name}.{self.namespace}"
        return [self.name, base, f"{base}.svc", f"{base}.svc.cluster.local"]
