"""`fastmesh.io/v1alpha1 AuthorizationPolicy`: Istio's `security.istio.io/v1 AuthorizationPolicy`, the
subset fastmesh enforces (docs/config.md "Authorization")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import Doc, Port, Unsupported, fail, schema

SPIFFE = "spiffe://"


def wildcard_problem(value: str) -> str | None:
    """Why `value` is not an Istio string pattern (`*`, `prefix*`, `*suffix` or exact), or None."""
    if not value:
        return "must not be empty"
    inner = value.removeprefix("*").removesuffix("*")
    if "*" in inner or (len(value) > 1 and value.startswith("*") and value.endswith("*")):
        return f'only "*", a prefix ("abc*") or a suffix ("*abc") wildcard is supported (got {value!r})'
    return None


def principal_uri(principal: str) -> str:
    """Istio's `td/ns/x/sa/y` (or a `spiffe://` URI) -> the SPIFFE URI the engine matches.

    `*` and suffix patterns (`*/sa/web`) stay as they are: they match the end of any URI."""
    if principal.startswith((SPIFFE, "*")):
        return principal
    return SPIFFE + principal


def _port(value: Any) -> Any:
    """Istio writes ports as strings ("8080"); numbers are accepted too."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f'must be a port number such as 8080 or "8080" (got {value!r})')
    return value


PortString = Annotated[Port, BeforeValidator(_port), schema(**{"x-kubernetes-int-or-string": True})]


class Source(Spec):
    """Who is calling: the peer identity of an mTLS connection. Fields set must all match."""

    principals: list[str] = Field(default_factory=list, max_length=256)
    """Caller identities: `<trust-domain>/ns/<ns>/sa/<sa>` (Istio form) or `spiffe://...`; `*` is any
    authenticated caller (plaintext has none), `prefix*` / `*suffix` wildcards."""
    not_principals: list[str] = Field(default_factory=list, max_length=256)
    """Callers that do not match; `["*"]` matches plaintext callers only."""
    namespaces: list[str] = Field(default_factory=list, max_length=256)
    """Namespaces of the caller (from its SPIFFE ID, `/ns/<ns>/`); wildcards as for principals."""
    not_namespaces: list[str] = Field(default_factory=list, max_length=256)
    """Namespaces the caller must not be in."""
    request_principals: Unsupported = None
    """JWT principals: not supported."""
    not_request_principals: Unsupported = None
    """Not supported."""
    ip_blocks: Unsupported = None
    """Not supported."""
    not_ip_blocks: Unsupported = None
    """Not supported."""
    remote_ip_blocks: Unsupported = None
    """Not supported."""
    not_remote_ip_blocks: Unsupported = None
    """Not supported."""


class From(Spec):
    """One accepted caller."""

    source: Source
    """The caller; at least one field must be set."""


class Operation(Spec):
    """What is requested. Fields set must all match."""

    hosts: list[str] = Field(default_factory=list, max_length=256)
    """`Host` / `:authority` without port, case-insensitive; `prefix*` / `*suffix` wildcards."""
    not_hosts: list[str] = Field(default_factory=list, max_length=256)
    """Hosts that do not match."""
    ports: list[PortString] = Field(default_factory=list, max_length=256)
    """Port of the listener the request came through."""
    not_ports: list[PortString] = Field(default_factory=list, max_length=256)
    """Listener ports that do not match."""
    methods: list[str] = Field(default_factory=list, max_length=64)
    """HTTP methods (`GET`, case-sensitive)."""
    not_methods: list[str] = Field(default_factory=list, max_length=64)
    """Methods that do not match."""
    paths: list[str] = Field(default_factory=list, max_length=256)
    """Paths without query string: exact, `/prefix*`, `*suffix` or `*`."""
    not_paths: list[str] = Field(default_factory=list, max_length=256)
    """Paths that do not match."""


class To(Spec):
    """One accepted operation."""

    operation: Operation
    """The operation; at least one field must be set."""


class Rule(Spec):
    """Matches when one of `from` and one of `to` match (an empty list matches anything)."""

    from_: list[From] = Field(default_factory=list, alias="from", max_length=64)
    """Callers; any caller when empty."""
    to: list[To] = Field(default_factory=list, max_length=64)
    """Operations; any operation when empty."""
    when: Unsupported = None
    """Conditions: not supported."""


class PolicyTargetReference(Spec):
    """The Service whose workload the policy protects."""

    group: Annotated[Literal[""], Doc('`""`')] = ""
    """The core API group."""
    kind: Literal["Service"]
    """Only Services are targets."""
    name: str
    """Name of the Service, in the policy's namespace."""
    namespace: str | None = None
    """Must be the policy's namespace, when set (as in Istio)."""


class AuthorizationPolicySpec(Spec):
    """Like Istio's: DENY policies first, then ALLOW; AUDIT policies are counted only."""

    target_refs: list[PolicyTargetReference] = Field(default_factory=list, max_length=16)
    """Services whose inbound listeners (`Proxy.spec.listeners[].inboundService`) enforce the policy;
    every inbound listener of a Service in the policy's namespace when empty."""
    action: Literal["ALLOW", "DENY", "AUDIT"] = "ALLOW"
    """What a match does. CUSTOM is not supported."""
    rules: list[Rule] = Field(default_factory=list, max_length=256)
    """Rules; no rules matches nothing (an ALLOW policy without rules allows nothing), `[{}]` matches all."""
    selector: Unsupported = None
    """Workload selectors: not supported; use `targetRefs` to a Service."""
    target_ref: Unsupported = None
    """Deprecated in Istio: use `targetRefs`."""
    provider: Unsupported = None
    """CUSTOM providers: not supported."""


class AuthorizationPolicy(KubeObject):
    """Who may call a Service's workload, and what (Istio's AuthorizationPolicy)."""

    API_VERSION = "fastmesh.io/v1alpha1"
    KIND = "AuthorizationPolicy"

    api_version: Literal["fastmesh.io/v1alpha1"] = "fastmesh.io/v1alpha1"
    """API version."""
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    """Kind."""
    spec: AuthorizationPolicySpec = AuthorizationPolicySpec()
    """The policy; an empty spec is an ALLOW policy that allows nothing."""
