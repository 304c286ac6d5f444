"""`fastmesh.io/v1alpha1 Proxy`: what Kubernetes has no object for (listeners, admin, external hosts,
the workload identity)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from fastmesh import spiffe
from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import (
    Doc,
    DNSLabel,
    Duration,
    Endpoint,
    IdleCap,
    IPAddress,
    ListenPort,
    SocketAddress,
    WorkerThreads,
    _checked,
    fail,
    join_hostport,
    parse_duration,
)


def _problem_check(problem: Callable[[str], str | None]) -> Callable[[str], None]:
    def check(value: str) -> None:
        message = problem(value)
        if message:
            fail(message)

    return check


TrustDomain = Annotated[str, _checked(_problem_check(spiffe.trust_domain_problem)),
                        Doc("SPIFFE trust domain (`cluster.local`)")]
ServiceAccountName = Annotated[str, _checked(_problem_check(spiffe.service_account_problem)),
                               Doc("DNS-1123 subdomain")]
MTLSMode = Literal["DISABLE", "PERMISSIVE", "STRICT"]

LB_POLICIES = {"P2CPeakEWMA": "p2c_peak_ewma", "RoundRobin": "round_robin"}


class AdminSpec(Spec):
    """The admin HTTP server (/ready, /live, /config, /stats, /metrics)."""

    address: SocketAddress = "127.0.0.1:15000"
    """Address it listens on."""
    token_file: str | None = None
    """File holding the bearer token that endpoints changing state (`POST /identity/renew`) require
    (`Authorization: Bearer <token>`); relative to the config file. Unset: those endpoints answer 403."""


class ListenerSpec(Spec):
    """A port the proxy accepts HTTP/1.1 and HTTP/2 (prior knowledge) on."""

    name: DNSLabel
    """Listener name (metrics, `--listener NAME=ADDR` overrides)."""
    address: IPAddress = "127.0.0.1"
    """IP address to bind."""
    port: ListenPort
    """Port to bind."""
    mtls: MTLSMode = "DISABLE"
    """Inbound mutual TLS: `STRICT` accepts only clients with a workload certificate of the trust
    domain, `PERMISSIVE` serves TLS and plaintext on the same port, `DISABLE` plaintext only.
    `PERMISSIVE` and `STRICT` need `spec.identity`."""
    inbound_service: str | None = None
    """The Service (`name` or `namespace/name`; namespace `default` when omitted) whose workload this
    listener serves inbound: AuthorizationPolicies targeting it (or its namespace) are enforced here,
    and `authorization.defaultDeny` applies. Listeners without it enforce no policy."""

    @property
    def inbound_service_ref(self) -> tuple[str, str] | None:
        """(namespace, name) of `inbound_service`."""
        if self.inbound_service is None:
            return None
        namespace, _, name = self.inbound_service.rpartition("/")
        return (namespace or "default", name)

    @property
    def socket_address(self) -> str:
        """`ip:port`, IPv6 in brackets."""
        return join_hostport(self.address, self.port)


class PoolSpec(Spec):
    """Upstream connection pools."""

    idle_timeout: Duration = "90s"
    """Idle upstream connections are closed after this."""
    max_idle_per_endpoint: IdleCap = 64
    """Idle HTTP/1.1 connections kept per endpoint."""
    connect_timeout: Duration = "2s"
    """Give up connecting to an endpoint after this (502)."""


class ExternalServiceSpec(Spec):
    """Hosts outside the mesh, referenced as `{group: fastmesh.io, kind: ExternalService, name}`."""

    name: DNSLabel
    """Name; the backend is `external/<name>`."""
    protocol: Literal["HTTP", "H2C"] = "HTTP"
    """HTTP/1.1, or HTTP/2 cleartext (prior knowledge)."""
    endpoints: list[Endpoint] = Field(min_length=1, max_length=1000)
    """`host:port` endpoints."""


class IdentityCASpec(Spec):
    """The certificate authority the proxy issues its own workload certificate from."""

    directory: str
    """A CA directory made by `fastmesh ca init` (relative to the config file). Its `bundle.pem`
    is the trust bundle; when it changes (root rotation) the proxy renews at once."""


class IdentitySpec(Spec):
    """The proxy's workload identity `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`,
    presented in mTLS. The certificate is renewed at two thirds of its lifetime."""

    trust_domain: TrustDomain
    """Trust domain of the mesh; peers' certificates must belong to it too."""
    namespace: DNSLabel = "default"
    """Namespace of the workload."""
    service_account: ServiceAccountName
    """Service account of the workload."""
    ca: IdentityCASpec
    """Where the certificate comes from."""
    cert_ttl: Duration = Field(default="24h", alias="certTTL")
    """Lifetime of each workload certificate."""

    @property
    def spiffe_id(self) -> str:
        return spiffe.workload_id(self.trust_domain, self.namespace, self.service_account)


class AuthorizationSettings(Spec):
    """Mesh-wide authorization settings (the policies are AuthorizationPolicy documents)."""

    default_deny: bool = False
    """Deny requests on inbound listeners that no ALLOW policy allows, even when the Service has no
    ALLOW policy (Istio's mesh-wide "allow-nothing" policy)."""


def _default_listeners() -> list[ListenerSpec]:
    return [ListenerSpec.model_validate({"name": "outbound", "port": 15001})]


class ProxySpec(Spec):
    """Settings of the proxy process. This is `cfg.proxy` (defaults when the file has no Proxy)."""

    admin: AdminSpec = AdminSpec()
    """Admin server."""
    listeners: list[ListenerSpec] = Field(default_factory=_default_listeners, min_length=1, max_length=64)
    """Listeners (names and address:port unique)."""
    worker_threads: WorkerThreads = 1
    """Engine (tokio) worker threads."""
    drain_timeout: Duration = "10s"
    """On SIGTERM, how long in-flight requests get to finish."""
    pool: PoolSpec = PoolSpec()
    """Upstream connection pools."""
    load_balancer: Literal["P2CPeakEWMA", "RoundRobin"] = "P2CPeakEWMA"
    """Default balancer of every backend (a Service may override it with `fastmesh.io/load-balancer`)."""
    external_services: list[ExternalServiceSpec] = Field(default_factory=list, max_length=1000)
    """Hosts outside the mesh (names unique)."""
    identity: IdentitySpec | None = None
    """Workload identity for mTLS; unset: no TLS anywhere (listeners `DISABLE`, no meshed Services)."""
    authorization: AuthorizationSettings = AuthorizationSettings()
    """Mesh-wide authorization settings."""

    @property
    def admin_address(self) -> str:
        return self.admin.address

    @property
    def drain_timeout_s(self) -> float:
        return parse_duration(self.drain_timeout)

    @property
    def lb(self) -> str:
        """Snapshot name of the default balancer."""
        return LB_POLICIES[self.load_balancer]


class Proxy(KubeObject):
    """The proxy itself; at most one per file."""

    API_VERSION = "fastmesh.io/v1alpha1"
    KIND = "Proxy"

    api_version: Literal["fastmesh.io/v1alpha1"] = "fastmesh.io/v1alpha1"
    """API version."""
    kind: Literal["Proxy"] = "Proxy"
    """Kind."""
    spec: ProxySpec = ProxySpec()
    """Settings; every field has a default."""
