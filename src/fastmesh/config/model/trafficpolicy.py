"""`fastmesh.io/v1alpha1 TrafficPolicy`: what the Gateway API lacks for resilience, attached to a Service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import ByteCount, Duration, HTTPMethod, Percent, Port, RetryAttempts, RetryStatus

RetryCondition = Literal["connect-failure", "refused-stream", "reset", "gateway-error", "5xx"]

DEFAULT_RETRY_ON: tuple[RetryCondition, ...] = ("connect-failure", "refused-stream", "reset")
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")


class PolicyTargetRef(Spec):
    """What the policy applies to (Gateway API policy attachment): a Service (port), or one HTTPRoute."""

    group: Literal["", "gateway.networking.k8s.io"] = ""
    """`""` (core) for a Service; `gateway.networking.k8s.io` for an HTTPRoute."""
    kind: Literal["Service", "HTTPRoute"] = "Service"
    """`Service`: its routes and backends. `HTTPRoute`: that route's rules only, and only `retry` (the other
    fields belong to a Service's endpoints); it wins over a Service's policy."""
    name: str
    """Name of the Service or HTTPRoute, in the policy's namespace."""
    port: Port | None = None
    """Only this Service port; every port when unset. A policy naming the port wins over one naming the Service."""


class RetryBackoff(Spec):
    """Exponential backoff with jitter: retry n waits `min(maxInterval, baseInterval * 2^(n-1))` plus up to 50 %."""

    base_interval: Duration = "25ms"
    """First wait (HTTPRoute `retry.backoff` overrides it)."""
    max_interval: Duration | None = None
    """Longest wait; default 10x `baseInterval` (250ms)."""


class RetryBudget(Spec):
    """Retries allowed over a sliding window: `minRetriesPerSecond * ttl` plus `percent` % of requests."""

    percent: Percent = 20
    """Share of the requests in the window that may be retried."""
    min_retries_per_second: int = Field(default=10, ge=0, le=100_000)
    """Retries allowed whatever the traffic (so low traffic can still retry)."""
    ttl: Duration = "10s"
    """The window."""


class TrafficRetry(Spec):
    """Which failed tries are retried, how often, how soon, and within what budget (Envoy's conditions)."""

    attempts: RetryAttempts = 1
    """Retries after the first try (HTTPRoute `retry.attempts` overrides it)."""
    retry_on: list[RetryCondition] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    """Conditions: `connect-failure`, `refused-stream` (nothing was processed: any method), `reset` (closed or
    reset before the response headers, or the per-try timeout), `gateway-error` (502, 503, 504, connect
    failure, refused stream, per-try timeout), `5xx` (any 5xx, resets, per-try timeout)."""
    codes: list[RetryStatus] = Field(default_factory=list, max_length=32)
    """Status codes retried as well (HTTPRoute `retry.codes` adds to them)."""
    per_try_timeout: Duration | None = None
    """One try, to the end of its response (a try without headers by then is retried; a body still streaming
    is cut); none by default (HTTPRoute `timeouts.backendRequest` overrides it)."""
    backoff: RetryBackoff = RetryBackoff()
    """Wait before each retry."""
    budget: RetryBudget = RetryBudget()
    """Cap on retries (default 20 % of requests plus 10 retries/s over 10 s)."""
    retryable_methods: list[HTTPMethod] = Field(default_factory=list, max_length=9)
    """Methods retried besides GET, HEAD, OPTIONS, PUT, DELETE (e.g. POST, if the service can take it twice)."""
    max_buffered_body: ByteCount = 65536
    """Request bodies up to this size are buffered for replay; larger ones are streamed and not retried."""


class OutlierDetection(Spec):
    """Ejects endpoints that fail in a row (Istio's `outlierDetection`, Envoy's consecutive detectors)."""

    consecutive_5xx_errors: int = Field(default=5, ge=0, le=1000, alias="consecutive5xxErrors")
    """5xx responses, connect failures, resets and timeouts in a row that eject an endpoint; 0: off."""
    consecutive_gateway_errors: int = Field(default=0, ge=0, le=1000)
    """502, 503, 504, connect failures, resets and timeouts in a row that eject an endpoint; 0: off."""
    interval: Duration = "10s"
    """Each interval an endpoint spends in service takes one off the multiplier of its next ejection."""
    base_ejection_time: Duration = "30s"
    """An ejection lasts this times the number of times the endpoint was ejected (decayed by `interval`)."""
    max_ejection_percent: int = Field(default=10, ge=0, le=100)
    """At most this share of the endpoints is ejected at once, but always at least one (as Envoy): with 3
    endpoints and the default 10 %, one. When every endpoint is ejected, all take traffic (panic mode)."""


class ConnectionPool(Spec):
    """Limits: a request over one is answered 503 at once, with `x-fastmesh-overflow: <limit>`. Unset: no limit."""

    max_connections: int | None = Field(default=None, ge=1, le=1_000_000)
    """HTTP/1.1 connections to each endpoint (HTTP/2 uses one per endpoint anyway)."""
    max_pending_requests: int | None = Field(default=None, ge=0, le=1_000_000)
    """Requests that may wait for a connection when an endpoint is at `maxConnections`; 0: none wait."""
    max_requests: int | None = Field(default=None, ge=1, le=1_000_000)
    """Concurrent requests to the Service port (to the end of their responses)."""
    max_retries: int | None = Field(default=None, ge=0, le=1_000_000)
    """Concurrent retries to the Service port; over it a failed try is not retried (not a 503)."""


class TrafficPolicySpec(Spec):
    """The policy."""

    target_ref: PolicyTargetRef
    """A Service (port): its default route, every rule whose first backendRef is it, and its endpoints. Or an
    HTTPRoute: its rules."""
    retry: TrafficRetry | None = None
    """Retries; HTTPRoute `retry` fields override its fields."""
    outlier_detection: OutlierDetection | None = None
    """Ejection of failing endpoints of the Service port; off when unset."""
    connection_pool: ConnectionPool | None = None
    """Concurrency limits of the Service port; none when unset."""
    connect_timeout: Duration | None = None
    """Upstream TCP connect timeout for this Service port; the Proxy's `pool.connectTimeout` (2s) when unset."""
    idle_timeout: Duration | None = None
    """Idle upstream connections of this Service port close after this; the Proxy's `pool.idleTimeout` (90s)
    when unset."""


class TrafficPolicy(KubeObject):
    """Resilience settings of a Service the Gateway API has no field for (fastmesh)."""

    API_VERSION = "fastmesh.io/v1alpha1"
    KIND = "TrafficPolicy"

    api_version: Literal["fastmesh.io/v1alpha1"] = "fastmesh.io/v1alpha1"
    """API version."""
    kind: Literal["TrafficPolicy"] = "TrafficPolicy"
    """Kind."""
    spec: TrafficPolicySpec
    """The policy."""
