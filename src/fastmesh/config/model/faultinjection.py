"""`fastmesh.io/v1alpha1 FaultInjection`: delays and aborts for a share of a route rule's requests.

Used from an HTTPRoute rule as a Gateway API `ExtensionRef` filter (group `fastmesh.io`, kind
`FaultInjection`): per rule, as Istio's VirtualService `fault`, whose field names it keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import Duration, Percent


class Percentage(Spec):
    """A share of requests (Istio's `Percent`)."""

    value: Percent
    """Percent of requests, 0..100 (fractions allowed: 0.1)."""


class FaultDelay(Spec):
    """Wait before forwarding."""

    percentage: Percentage
    """Share of requests delayed."""
    fixed_delay: Duration
    """How long."""


class FaultAbort(Spec):
    """Answer with a status instead of forwarding."""

    percentage: Percentage
    """Share of requests aborted (drawn independently of the delay: a request may be delayed, then aborted)."""
    http_status: int = Field(ge=200, le=599)
    """The status the engine answers with (body empty)."""


class FaultInjectionSpec(Spec):
    """At least one of `delay` and `abort`."""

    delay: FaultDelay | None = None
    """Delay injected before the request is forwarded."""
    abort: FaultAbort | None = None
    """Status answered instead of forwarding."""


class FaultInjection(KubeObject):
    """Faults a route rule injects, referenced by an `ExtensionRef` filter of the rule."""

    API_VERSION = "fastmesh.io/v1alpha1"
    KIND = "FaultInjection"

    api_version: Literal["fastmesh.io/v1alpha1"] = "fastmesh.io/v1alpha1"
    """API version."""
    kind: Literal["FaultInjection"] = "FaultInjection"
    """Kind."""
    spec: FaultInjectionSpec
    """The faults."""
