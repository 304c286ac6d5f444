"""`gateway.networking.k8s.io/v1 HTTPRoute`: the subset of Gateway API the engine executes."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from fastmesh.config.model.base import KubeObject, Spec
from fastmesh.config.model.types import (
    DNSLabel,
    Duration,
    HeaderName,
    HeaderValue,
    Hostname,
    HTTPMethod,
    Port,
    PreciseHostname,
    RedirectStatus,
    RetryAttempts,
    RetryStatus,
    Unsupported,
    Weight,
    fail,
    parse_duration,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
FASTMESH_GROUP = "fastmesh.io"

# === matches ===


class HTTPPathMatch(Spec):
    """How the request path is matched."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    """`PathPrefix` matches whole path elements (`/foo` matches `/foo/bar`, not `/foobar`)."""
    value: str = Field(default="/", max_length=1024)
    """The path, or a regular expression (Rust `regex` syntax, matching the whole path)."""


class HTTPHeaderMatch(Spec):
    """A request header that must be present with a matching value."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    """How `value` is compared."""
    name: HeaderName
    """Header name, case-insensitive."""
    value: HeaderValue
    """Exact value, or a regular expression matching the whole value."""


class HTTPQueryParamMatch(Spec):
    """A query parameter that must be present with a matching value."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    """How `value` is compared."""
    name: HeaderName
    """Parameter name, case-sensitive."""
    value: HeaderValue
    """Exact value, or a regular expression matching the whole value."""


class HTTPRouteMatch(Spec):
    """Conditions that must all hold for a request to take the rule."""

    path: HTTPPathMatch = HTTPPathMatch()
    """Path condition."""
    headers: list[HTTPHeaderMatch] = Field(default_factory=list, max_length=16)
    """Header conditions (names unique, case-insensitive)."""
    query_params: list[HTTPQueryParamMatch] = Field(default_factory=list, max_length=16)
    """Query parameter conditions (names unique)."""
    method: HTTPMethod | None = None
    """Only this method; any method when unset."""


# === filters ===


class HTTPHeader(Spec):
    """A header name and value."""

    name: HeaderName
    """Header name."""
    value: HeaderValue
    """Header value."""


class HTTPHeaderFilter(Spec):
    """Header edits: `set` replaces, `add` appends, `remove` deletes."""

    set: list[HTTPHeader] = Field(default_factory=list, max_length=16)
    """Headers to set, replacing any present."""
    add: list[HTTPHeader] = Field(default_factory=list, max_length=16)
    """Headers to append to any present."""
    remove: list[HeaderName] = Field(default_factory=list, max_length=16)
    """Header names to remove."""


class HTTPPathModifier(Spec):
    """How a redirect or rewrite changes the path."""

    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    """`ReplacePrefixMatch` needs every match of the rule to be a `PathPrefix`."""
    replace_full_path: str | None = Field(default=None, max_length=1024)
    """The new path, with `type: ReplaceFullPath`."""
    replace_prefix_match: str | None = Field(default=None, max_length=1024)
    """What replaces the matched prefix, with `type: ReplacePrefixMatch`."""


class HTTPRequestRedirectFilter(Spec):
    """Answer with a redirect built from the request, replacing the given parts."""

    scheme: Literal["http", "https"] | None = None
    """New scheme; the request's when unset."""
    hostname: PreciseHostname | None = None
    """New host; the request's when unset."""
    path: HTTPPathModifier | None = None
    """New path; the request's when unset."""
    port: Port | None = None
    """New port; the request's when unset (dropped when it is the scheme's default)."""
    status_code: RedirectStatus = 302
    """Redirect status code."""


class HTTPURLRewriteFilter(Spec):
    """Rewrite the request before forwarding it."""

    hostname: PreciseHostname | None = None
    """New `Host` / `:authority`; unchanged when unset."""
    path: HTTPPathModifier | None = None
    """New path; unchanged when unset."""


class Fraction(Spec):
    """`numerator / denominator` of requests."""

    numerator: int = Field(ge=0)
    """Numerator."""
    denominator: int = Field(default=100, ge=1)
    """Denominator (at least the numerator)."""


class HTTPMirrorBackendRef(Spec):
    """A Service port to mirror to."""

    group: Literal[""] = ""
    """`""` (core)."""
    kind: Literal["Service"] = "Service"
    """Only Services."""
    name: str
    """Name of the Service."""
    namespace: DNSLabel | None = None
    """Namespace of the Service; the route's when unset."""
    port: Port
    """The Service port."""


class HTTPRequestMirrorFilter(Spec):
    """Send a copy of a share of the requests to another backend; its answers are ignored."""

    backend_ref: HTTPMirrorBackendRef
    """Where copies go (a Service port)."""
    percent: int | None = Field(default=None, ge=0, le=100)
    """Share of requests copied (default 100); or `fraction`."""
    fraction: Fraction | None = None
    """Share of requests copied, as a fraction; or `percent`."""


class LocalObjectReference(Spec):
    """An object in the route's namespace."""

    group: str
    """`fastmesh.io`."""
    kind: str
    """`FaultInjection`."""
    name: str
    """Its name."""


FilterType = Literal[
    "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror", "ExtensionRef"
]
UNSUPPORTED_FILTERS = ("CORS", "ExternalAuth")


def _filter_type(value: Any) -> Any:
    if value in UNSUPPORTED_FILTERS:
        fail(f"filter type {value} is not supported by fastmesh (supported: {', '.join(get_args(FilterType))})")
    return value


class HTTPRouteFilter(Spec):
    """One filter: `type` names it and the field of the same name configures it."""

    type: Annotated[FilterType, BeforeValidator(_filter_type)]
    """Which filter (CORS and ExternalAuth are not supported; ExtensionRef names a FaultInjection)."""
    request_header_modifier: HTTPHeaderFilter | None = None
    """With `type: RequestHeaderModifier`: edits of request headers."""
    response_header_modifier: HTTPHeaderFilter | None = None
    """With `type: ResponseHeaderModifier`: edits of response headers."""
    request_redirect: HTTPRequestRedirectFilter | None = None
    """With `type: RequestRedirect`: the redirect (the rule may then have no backendRefs)."""
    url_rewrite: HTTPURLRewriteFilter | None = None
    """With `type: URLRewrite`: the rewrite."""
    request_mirror: HTTPRequestMirrorFilter | None = None
    """With `type: RequestMirror`: the mirror. Copies carry the body when it is at most 64 KiB (longer ones are
    not copied); the mirror must speak the backend's protocol."""
    extension_ref: LocalObjectReference | None = None
    """With `type: ExtensionRef`: a `FaultInjection` (group `fastmesh.io`) in the route's namespace."""


# === backends and parents ===


class HTTPBackendRef(Spec):
    """Where a share of the rule's requests goes: a Service port or an external service."""

    group: str = ""
    """`""` (core) for a Service; `fastmesh.io` for an ExternalService."""
    kind: str = "Service"
    """`Service`, or `ExternalService` (declared in `Proxy.spec.externalServices`)."""
    name: str
    """Name of the Service or external service."""
    namespace: DNSLabel | None = None
    """Namespace of the Service; the route's when unset. Not used for external services."""
    port: Port | None = None
    """Service port (its `port`, not `targetPort`); required for a Service."""
    weight: Weight = 1
    """Share of requests, relative to the other backendRefs of the rule; 0 sends none."""
    filters: Unsupported = None
    """Per-backend filters are not supported; use the rule's filters."""


class ParentReference(Spec):
    """What the route attaches to: a Service (GAMMA, mesh traffic) or a Gateway (hostnames)."""

    group: str = GATEWAY_GROUP
    """`""` (core) with `kind: Service` attaches to a Service."""
    kind: str = "Gateway"
    """`Service`, or `Gateway`: the route then serves its `hostnames` on every listener."""
    namespace: DNSLabel | None = None
    """Namespace of the parent; the route's when unset."""
    name: str
    """Name of the parent."""
    section_name: str | None = None
    """Listener of a Gateway; ignored (fastmesh listeners are not selected by name)."""
    port: Port | None = None
    """Port of the Service; must be one of its ports. Routing is by host, so it does not narrow the route."""


class HTTPRouteTimeouts(Spec):
    """Gateway API timeouts, to the end of the response: before the headers a timeout answers 504 (or retries);
    once the headers are sent, a body still streaming is cut (HTTP/1.1 connection closed, HTTP/2 stream reset)."""

    request: Duration | None = None
    """The whole request, every retry and backoff included: 504 after it. Unset or `0s`: none."""
    backend_request: Duration | None = None
    """One try to the backend (a per-try timeout; overrides TrafficPolicy `retry.perTryTimeout`); at most
    `request`. Unset or `0s`: none."""


class HTTPRouteRetry(Spec):
    """Gateway API retry; TrafficPolicy `retry` adds conditions, budget and more, this overrides its fields."""

    codes: list[RetryStatus] = Field(default_factory=list, max_length=32)
    """Response status codes retried (400-599), in addition to unprocessed requests and connection resets."""
    attempts: RetryAttempts | None = None
    """Retries after the first try; default 1 (TrafficPolicy `retry.attempts` when set)."""
    backoff: Duration | None = None
    """Base wait before a retry, doubled for each further retry (up to 10x) with up to 50 % jitter; default 25ms."""


class CookieConfig(Spec):
    """The persistence cookie's lifetime."""

    lifetime_type: Literal["Permanent", "Session"] = "Session"
    """`Session`: a browser-session cookie (no `Max-Age`) unless `absoluteTimeout` is set; `Permanent`:
    `Max-Age` = `absoluteTimeout` (required then)."""


class SessionPersistence(Spec):
    """Keep a user on one backendRef of the rule (Gateway API `sessionPersistence`)."""

    session_name: HeaderName | None = None
    """Cookie name (default `fastmesh-session`), or with `type: Header` the request header whose value is
    hashed (required then)."""
    type: Literal["Cookie", "Header"] = "Cookie"
    """`Cookie`: the first answer sets `Set-Cookie: <sessionName>=<token of the backendRef>; Path=/; HttpOnly`
    and requests carrying it go to that backendRef while its weight is above 0 (else a fresh weighted choice
    and a new cookie); the token is a hash of the backend's name, so it survives reloads and weight changes.
    `Header`: a hash of the header's value places the user within the weighted split, backendRefs in rule
    order (as a later backendRef's weight grows its users stay, only users of the earlier ones move to it);
    requests without the header take the weighted choice. This is Istio's `consistentHash.httpHeaderName`,
    not Envoy's header-token session (no header is written to answers)."""
    absolute_timeout: Duration | None = None
    """With `type: Cookie`: the cookie's `Max-Age`."""
    idle_timeout: Unsupported = None
    """Not supported (the cookie carries no timestamp)."""
    cookie_config: CookieConfig | None = None
    """With `type: Cookie`: the cookie's lifetime."""

    @model_validator(mode="after")
    def _consistent(self) -> SessionPersistence:
        if self.type == "Header":
            if self.session_name is None:
                fail("type Header needs sessionName: the request header whose value is hashed")
            if self.absolute_timeout is not None or self.cookie_config is not None:
                fail("absoluteTimeout and cookieConfig apply to type Cookie only")
        elif self.cookie_config is not None and self.cookie_config.lifetime_type == "Permanent" \
                and self.absolute_timeout is None:
            fail("cookieConfig.lifetimeType Permanent needs absoluteTimeout (the cookie's Max-Age)")
        if self.absolute_timeout is not None and parse_duration(self.absolute_timeout) < 1:
            fail(f"absoluteTimeout must be at least 1s (got {self.absolute_timeout})")
        return self

    def compile(self) -> dict[str, object]:
        """The snapshot's route `session` (docs/engine-snapshot.md)."""
        if self.type == "Header":
            return {"type": "Header", "name": (self.session_name or "").lower()}
        max_age = round(parse_duration(self.absolute_timeout)) if self.absolute_timeout else None
        return {"type": "Cookie", "name": self.session_name or DEFAULT_SESSION_COOKIE, "max_age_s": max_age}


DEFAULT_SESSION_COOKIE = "fastmesh-session"


class HTTPRouteRule(Spec):
    """Matches, filters and weighted backends."""

    name: str | None = None
    """Optional rule name; metrics name rules `<ns>/<route>/rule/<index>` regardless."""
    matches: list[HTTPRouteMatch] = Field(default_factory=list, max_length=64)
    """Any one of these selects the rule; none means `PathPrefix /`."""
    filters: list[HTTPRouteFilter] = Field(default_factory=list, max_length=16)
    """Applied in order; each type at most once."""
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list, max_length=16)
    """Weighted backends; none (and no redirect) answers 500."""
    timeouts: HTTPRouteTimeouts | None = None
    """Timeouts of the rule's requests; none by default."""
    retry: HTTPRouteRetry | None = None
    """Retries of the rule's requests; without it (and without a TrafficPolicy `retry`) only the built-in
    retry of requests that provably were not processed."""
    session_persistence: SessionPersistence | None = None
    """Keep each user on one backendRef (cookie or header hash); see also Rollout `stickiness`."""


class HTTPRouteSpec(Spec):
    """The route."""

    parent_refs: list[ParentReference] = Field(default_factory=list, max_length=32)
    """Services (GAMMA) and/or Gateways; none means the listeners, like a Gateway parent."""
    hostnames: list[Hostname] = Field(default_factory=list, max_length=16)
    """Hosts served on the listeners (not for Service parents); none means every host."""
    rules: list[HTTPRouteRule] = Field(default_factory=lambda: [HTTPRouteRule()], max_length=16)
    """Rules; by default one rule matching everything, with no backends."""


class HTTPRoute(KubeObject):
    """Routes HTTP requests to weighted backends (Gateway API)."""

    API_VERSION = f"{GATEWAY_GROUP}/v1"
    KIND = "HTTPRoute"

    api_version: Literal["gateway.networking.k8s.io/v1"] = "gateway.networking.k8s.io/v1"
    """API version."""
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    """Kind."""
    spec: HTTPRouteSpec
    """The route."""

    def service_parents(self) -> list[tuple[str, str, ParentReference]]:
        """(namespace, name, ref) of each Service this route is attached to (GAMMA)."""
        return [
            (p.namespace or self.namespace, p.name, p)
            for p in self.spec.parent_refs
            if (p.group, p.kind) == ("", "Service")
        ]

    def on_listeners(self) -> bool:
        """Whether the route serves its hostnames on the listeners: no parents, or a non-Service one."""
        refs = self.spec.parent_refs
        return not refs or any((p.group, p.kind) != ("", "Service") for p in refs)
