"""`fastmesh.io/v1alpha1 Rollout`: a canary rollout of one HTTPRoute rule, judged by fastmesh's own stats.

The rule splits between two backendRefs, `stable` and `canary`. The proxy's orchestrator moves the
canary's share through `steps`, one per `interval`, judging each step by the engine's per-backend
counters and latency histograms over the step's window (Argo Rollouts / Flagger analysis, without
an external metrics provider). Failing gates send 100 % to stable at once."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.httproute import SessionPersistence
from fastmesh.config.model.types import (
    DNSLabel,
    Duration,
    HeaderName,
    HeaderValue,
    Percent,
    Port,
    fail,
    parse_duration,
)

StepPercent = Annotated[int, Field(ge=1, le=100)]


class RolloutTarget(Spec):
    """The HTTPRoute rule whose two backendRefs are shifted."""

    group: Literal["gateway.networking.k8s.io"] = "gateway.networking.k8s.io"
    """API group of the route."""
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    """Only HTTPRoute."""
    name: DNSLabel
    """The HTTPRoute, in the Rollout's namespace."""
    rule: int | None = Field(default=None, ge=0, le=63)
    """Index of the rule in `spec.rules`; may be omitted when the route has exactly one rule."""


class RolloutBackend(Spec):
    """A backendRef of the target rule (a Service port)."""

    name: DNSLabel
    """Service name, as in the rule's backendRef."""
    port: Port | None = None
    """Service port, as in the rule's backendRef; may be omitted when the rule names the Service once."""


class RolloutGates(Spec):
    """What a step must show to advance. Set at least one of the success-rate or latency gates."""

    min_success_rate: Percent | None = None
    """Canary success rate (responses that are not 5xx, in percent) at least this."""
    max_success_rate_drop: Percent | None = None
    """Canary success rate at most this many points below stable's over the same window."""
    max_p99_ms: float | None = Field(default=None, gt=0)
    """Canary p99 latency (to response headers, from the engine's histogram) at most this, in ms."""
    max_p99_ratio: float | None = Field(default=None, gt=0)
    """Canary p99 at most this multiple of stable's p99 over the same window (e.g. 1.5)."""
    min_requests: int = Field(default=20, ge=1, le=1_000_000_000)
    """Canary responses the window needs before the step is judged; fewer: the step holds."""

    @model_validator(mode="after")
    def _some_gate(self) -> RolloutGates:
        if all(g is None for g in (self.min_success_rate, self.max_success_rate_drop,
                                   self.max_p99_ms, self.max_p99_ratio)):
            fail("set at least one gate: minSuccessRate, maxSuccessRateDrop, maxP99Ms or maxP99Ratio")
        return self


class RolloutStickiness(Spec):
    """Keep each user on one version while the rollout runs (compiled onto the rule as its session persistence)."""

    type: Literal["Cookie", "Header"]
    """`Cookie`: the first answer sets a cookie naming the version; it is kept while that version's weight is
    above 0. `Header`: a hash of `header`'s value places the user, stable first, so canary users stay canary as
    its weight grows and only stable users move."""
    cookie_name: HeaderName | None = None
    """With `type: Cookie`: the cookie (default `fastmesh-session`)."""
    max_age: Duration | None = None
    """With `type: Cookie`: the cookie's `Max-Age`; a browser-session cookie when unset."""
    header: HeaderName | None = None
    """With `type: Header`: the request header hashed (e.g. `x-user`); required then."""

    @model_validator(mode="after")
    def _fields(self) -> RolloutStickiness:
        if self.type == "Header":
            if self.header is None:
                fail("type Header needs `header`: the request header whose value is hashed")
            if self.cookie_name is not None or self.max_age is not None:
                fail("cookieName and maxAge apply to type Cookie only")
        elif self.header is not None:
            fail("header applies to type Header only")
        if self.max_age is not None and parse_duration(self.max_age) < 1:
            fail(f"maxAge must be at least 1s (got {self.max_age})")
        return self

    def session(self) -> SessionPersistence:
        """The same, as the rule's Gateway API `sessionPersistence`."""
        if self.type == "Header":
            return SessionPersistence.model_validate({"type": "Header", "sessionName": self.header})
        return SessionPersistence.model_validate(
            {"type": "Cookie", "sessionName": self.cookie_name, "absoluteTimeout": self.max_age})


class CanaryHeader(Spec):
    """Requests with this header go to the canary (or stable) whatever the step: for testers (ingress-nginx's
    `canary-by-header` values `always` / `never`)."""

    name: HeaderName = "x-canary"
    """The header, case-insensitive."""
    value: HeaderValue = "always"
    """Exact value that sends a request to the canary, even at 0 %."""
    stable_value: HeaderValue | None = "never"
    """Exact value that sends a request to stable, even at 100 %; null: none."""

    @model_validator(mode="after")
    def _distinct(self) -> CanaryHeader:
        if self.value == self.stable_value:
            fail(f"value and stableValue must differ (both {self.value!r})")
        return self


class RolloutSpec(Spec):
    """Which rule, which two backends, the steps and the gates."""

    target_ref: RolloutTarget
    """The HTTPRoute rule."""
    stable: RolloutBackend
    """The backendRef serving the current version."""
    canary: RolloutBackend
    """The backendRef serving the new version."""
    steps: list[StepPercent] = Field(min_length=1, max_length=32)
    """Canary percent per step, strictly increasing, ending at 100 (e.g. `[5, 10, 25, 50, 100]`)."""
    interval: Duration
    """How long each step lasts before it is judged (e.g. `1m`)."""
    gates: RolloutGates
    """The checks a step must pass."""
    stickiness: RolloutStickiness | None = None
    """Keep each user on one version across steps (the rule must not have its own `sessionPersistence`)."""
    canary_header: CanaryHeader | None = None
    """Pin requests to the canary (or stable) by a header; `{}` for `x-canary: always` / `never`."""
    paused: bool = False
    """Declare the rollout without starting it: it waits (phase `Pending`, 100 % stable) until
    `fastmesh rollout start` (Argo Rollouts' `paused`, Flagger's `suspend`). Read only when the rollout
    has no progress yet: once started, pause and resume are the operator's actions."""

    @model_validator(mode="after")
    def _steps(self) -> RolloutSpec:
        for a, b in zip(self.steps, self.steps[1:]):
            if b <= a:
                fail(f"steps must be strictly increasing (got {a} then {b})")
        if self.steps[-1] != 100:
            fail(f"the last step must be 100 (got {self.steps[-1]})")
        if (self.stable.name, self.stable.port) == (self.canary.name, self.canary.port):
            fail("stable and canary name the same backend")
        return self


class Rollout(KubeObject):
    """A progressive canary rollout of one HTTPRoute rule (file mode: progress kept next to the config;
    Kubernetes: in the Rollout's status, driven by `fastmesh rollout controller`)."""

    API_VERSION = "fastmesh.io/v1alpha1"
    KIND = "Rollout"

    api_version: Literal["fastmesh.io/v1alpha1"] = "fastmesh.io/v1alpha1"
    """API version."""
    kind: Literal["Rollout"] = "Rollout"
    """Kind."""
    spec: RolloutSpec
    """The rollout."""
