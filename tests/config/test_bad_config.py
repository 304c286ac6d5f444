"""The bad config matrix: one mistake per case, each reported once with file, document, field and cause."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastmesh.config import ConfigError, compile_snapshot, load_file
from tests.config.conftest import dedent

# Documents 1-4 of every case: valid on their own.
BASE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports:
    - {name: http, port: 9080}
    - {name: grpc, port: 9090, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-1
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports: [{name: http, port: 18081}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: fastmesh.io/v1alpha1
kind: Proxy
metadata: {name: mesh}
spec:
  externalServices: [{name: billing, endpoints: ["127.0.0.1:18090"]}]
---
"""

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
"""


SLICE = (
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: r-3, labels: {kubernetes.io/service-name: reviews}}\n"
)
"""An EndpointSlice of `reviews` up to its addressType (the cases add the rest)."""

POLICY = """\
apiVersion: fastmesh.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: reviews-policy}}
spec:
  targetRef: {target}
  {spec}
"""
POLICY_LABEL = "TrafficPolicy default/reviews-policy"


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str
    """Appended to BASE as document 5 (and on)."""
    path: str
    """The field path reported."""
    message: str
    """A piece of the message that says what is wrong and what was found."""
    document: int = 5
    label: str = "HTTPRoute default/reviews"


AUTHZ_LABEL = "AuthorizationPolicy default/p"


def policy(spec: str) -> str:
    """An AuthorizationPolicy `default/p` with `spec` (one line of YAML flow)."""
    return f"apiVersion: fastmesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec: {{{spec}}}\n"


def rule(body: str) -> str:
    """A route attached to `reviews` with one rule (given as YAML under `- `)."""
    lines = dedent(body).splitlines()
    return ROUTE + "    - " + "\n      ".join(lines) + "\n"


CASES = [
    # === schema: kinds, fields, types ===
    Case("unknown kind", "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n",
         "kind", "unknown kind 'Servise' (did you mean 'Service'?", label="Servise default/x"),
    Case("wrong apiVersion", ROUTE.replace("/v1", "/v1beta1") + "    - {}\n",
         "apiVersion", "HTTPRoute is apiVersion 'gateway.networking.k8s.io/v1' (got 'gateway.networking.k8s.io/v1beta1')"),
    Case("document is not a mapping", "- apiVersion: v1\n",
         "", "must be a mapping with apiVersion, kind, metadata and spec (got a list)", label="?"),
    Case("unknown field (typo)", rule("backendRefs: [{name: reviews, port: 9080, weigth: 5}]"),
         "spec.rules[0].backendRefs[0].weigth", "unknown field 'weigth' (did you mean 'weight'?)"),
    Case("required field missing", rule("backendRefs: [{port: 9080}]"),
         "spec.rules[0].backendRefs[0].name", "required field is missing"),
    Case("string where a number goes", rule("backendRefs: [{name: reviews, port: 9080, weight: '50'}]"),
         "spec.rules[0].backendRefs[0].weight", "must be an integer (got '50')"),
    Case("unsupported Gateway API field", rule("sessionPersistence: {type: Cookie, idleTimeout: 10m}"),
         "spec.rules[0].sessionPersistence.idleTimeout", "fastmesh does not support yet"),
    # === timeouts, retry, TrafficPolicy ===
    Case("bad request timeout", rule("timeouts: {request: 10 s}"),
         "spec.rules[0].timeouts.request", "must be a duration such as 10s, 500ms or 1h30m (got '10 s')"),
    Case("backendRequest longer than request", rule("timeouts: {request: 1s, backendRequest: 2s}"),
         "spec.rules[0].timeouts.backendRequest", "must not be longer than timeouts.request (got 2s > 1s)"),
    Case("retry code out of range", rule("retry: {codes: [503, 200]}"),
         "spec.rules[0].retry.codes[1]", "must be between 400 and 599 (got 200)"),
    Case("too many retry attempts", rule("retry: {attempts: 50}"),
         "spec.rules[0].retry.attempts", "must be between 0 and 20 (got 50)"),
    Case("TrafficPolicy of a missing Service", POLICY.format(target="{name: reveiws}", spec=""),
         "spec.targetRef.name", "Service default/reveiws not found (did you mean default/reviews?)", label=POLICY_LABEL),
    Case("TrafficPolicy port not on the Service", POLICY.format(target="{name: ratings, port: 9091}", spec=""),
         "spec.targetRef.port", "Service default/ratings has no port 9091 (its ports: 9080, 9090)", label=POLICY_LABEL),
    Case("TrafficPolicy unknown retry condition", POLICY.format(target="{name: reviews}", spec="retry: {retryOn: [5xx, timeout]}"),
         "spec.retry.retryOn[1]", "must be 'connect-failure', 'refused-stream', 'reset', 'gateway-error' or '5xx' (got 'timeout')", label=POLICY_LABEL),
    Case("TrafficPolicy backoff max below base", POLICY.format(target="{name: reviews}", spec="retry: {backoff: {baseInterval: 100ms, maxInterval: 50ms}}"),
         "spec.retry.backoff.maxInterval", "must be at least baseInterval (100ms; got 50ms)", label=POLICY_LABEL),
    Case("TrafficPolicy budget percent", POLICY.format(target="{name: reviews}", spec="retry: {budget: {percent: 150}}"),
         "spec.retry.budget.percent", "must be between 0 and 100 (got 150", label=POLICY_LABEL),
    Case("TrafficPolicy retryable method", POLICY.format(target="{name: reviews}", spec="retry: {retryableMethods: [FETCH]}"),
         "spec.retry.retryableMethods[0]", "(got 'FETCH')", label=POLICY_LABEL),
    Case("TrafficPolicy zero per-try timeout", POLICY.format(target="{name: reviews}", spec="retry: {perTryTimeout: 0s}"),
         "spec.retry.perTryTimeout", "must be longer than 0s", label=POLICY_LABEL),
    Case("TrafficPolicy outlier detection that detects nothing", POLICY.format(target="{name: reviews}", spec="outlierDetection: {consecutive5xxErrors: 0}"),
         "spec.outlierDetection", "both 0: nothing would be detected", label=POLICY_LABEL),
    Case("TrafficPolicy max ejection percent", POLICY.format(target="{name: reviews}", spec="outlierDetection: {maxEjectionPercent: 120}"),
         "spec.outlierDetection.maxEjectionPercent", "120", label=POLICY_LABEL),
    Case("TrafficPolicy zero max connections", POLICY.format(target="{name: reviews}", spec="connectionPool: {maxConnections: 0}"),
         "spec.connectionPool.maxConnections", "greater than or equal to 1", label=POLICY_LABEL),
    Case("TrafficPolicy zero connect timeout", POLICY.format(target="{name: reviews}", spec="connectTimeout: 0s"),
         "spec.connectTimeout", "must be longer than 0s", label=POLICY_LABEL),
    Case("TrafficPolicy of a missing HTTPRoute", POLICY.format(target="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: reveiws}", spec=""),
         "spec.targetRef.name", "HTTPRoute default/reveiws not found", label=POLICY_LABEL),
    Case("TrafficPolicy for an HTTPRoute with endpoint settings",
         ROUTE + "    - backendRefs: [{name: reviews, port: 9080}]\n---\n"
         + POLICY.format(target="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews}", spec="outlierDetection: {}"),
         "spec.outlierDetection", "target the Service, not an HTTPRoute", document=6, label=POLICY_LABEL),
    Case("two TrafficPolicies for one target", POLICY.format(target="{name: reviews}", spec="") + "---\n"
         + POLICY.format(target="{name: reviews}", spec="").replace("name: reviews-policy", "name: second"),
         "spec.targetRef", "TrafficPolicy default/reviews-policy already targets this Service", document=6,
         label="TrafficPolicy default/second"),
    Case("metadata.name missing", "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\nspec: {ports: [{port: 80}]}\n",
         "metadata.name", "required field is missing", label="Service <unnamed>"),
    # === backends ===
    Case("backend Service does not exist", rule("backendRefs: [{name: reviewz, port: 9080}]"),
         "spec.rules[0].backendRefs[0].name", "Service default/reviewz not found (did you mean default/reviews?)"),
    Case("backend port not on the Service", rule("backendRefs: [{name: ratings, port: 9091}]"),
         "spec.rules[0].backendRefs[0].port", "Service default/ratings has no port 9091 (its ports: 9080, 9090)"),
    Case("backend Service without port", rule("backendRefs: [{name: ratings}]"),
         "spec.rules[0].backendRefs[0].port", "required for a Service backend"),
    Case("weight out of range", rule("backendRefs: [{name: reviews, port: 9080, weight: 2000000}]"),
         "spec.rules[0].backendRefs[0].weight", "must be between 0 and 1000000 (got 2000000)"),
    Case("negative weight", rule("backendRefs: [{name: reviews, port: 9080, weight: -1}]"),
         "spec.rules[0].backendRefs[0].weight", "must be between 0 and 1000000 (got -1)"),
    Case("unknown external service", rule("backendRefs: [{group: fastmesh.io, kind: ExternalService, name: biling}]"),
         "spec.rules[0].backendRefs[0].name", "external service 'biling' not found in Proxy spec.externalServices (did you mean billing?)"),
    Case("unsupported backend kind", rule("backendRefs: [{kind: Deployment, name: reviews}]"),
         "spec.rules[0].backendRefs[0].kind", "unsupported backend kind 'Deployment'"),
    # === matches ===
    Case("regex that does not compile", rule("matches: [{path: {type: RegularExpression, value: '/api/(v1'}}]"),
         "spec.rules[0].matches[0].path.value", "invalid regular expression: missing ), unterminated subpattern at position 5 (got '/api/(v1')"),
    Case("regex with look-ahead", rule("matches: [{path: {type: RegularExpression, value: '/(?!admin).*'}}]"),
         "spec.rules[0].matches[0].path.value", "look-ahead (?!...) is not supported by the engine's regex syntax"),
    Case("regex with backreference", rule(r"matches: [{headers: [{type: RegularExpression, name: x-pair, value: '(a+)-\1'}]}]"),
         "spec.rules[0].matches[0].headers[0].value", "backreference or octal escape \\1 is not supported"),
    Case("regex with look-behind in a query match", rule("matches: [{queryParams: [{type: RegularExpression, name: q, value: '(?<=a)b'}]}]"),
         "spec.rules[0].matches[0].queryParams[0].value", "look-behind (?<=...) is not supported"),
    Case("path without leading slash", rule("matches: [{path: {type: PathPrefix, value: api}}]"),
         "spec.rules[0].matches[0].path.value", "must be an absolute path starting with '/' (got 'api')"),
    Case("invalid header name", rule("matches: [{headers: [{name: 'x version', value: v2}]}]"),
         "spec.rules[0].matches[0].headers[0].name", "'x version' is not a valid header name"),
    Case("header matched twice", rule("matches: [{headers: [{name: X-Version, value: v2}, {name: x-version, value: v3}]}]"),
         "spec.rules[0].matches[0].headers[1].name", "'x-version' is matched twice (headers[0] too)"),
    Case("method not in the Gateway API enum", rule("matches: [{method: FETCH}]"),
         "spec.rules[0].matches[0].method", "must be 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE' or 'PATCH' (got 'FETCH')"),
    # === filters ===
    Case("redirect status code", rule("filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]"),
         "spec.rules[0].filters[0].requestRedirect.statusCode", "must be one of 301, 302, 303, 307, 308 (got 305)"),
    Case("ReplacePrefixMatch without a PathPrefix match", rule("""\
         matches: [{path: {type: Exact, value: /old}}]
         filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
         backendRefs: [{name: reviews, port: 9080}]"""),
         "spec.rules[0].filters[0].urlRewrite.path.type",
         "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match (matches[0] is Exact)"),
    Case("redirect together with backendRefs", rule("""\
         filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
         backendRefs: [{name: reviews, port: 9080}]"""),
         "spec.rules[0].backendRefs", "a rule with a RequestRedirect filter answers with the redirect"),
    Case("redirect together with URLRewrite", rule("""\
         filters:
           - {type: RequestRedirect, requestRedirect: {hostname: example.com}}
           - {type: URLRewrite, urlRewrite: {hostname: example.org}}"""),
         "spec.rules[0].filters[1].type", "a rule cannot have both RequestRedirect and URLRewrite"),
    Case("unsupported filter", rule("filters: [{type: CORS}]"),
         "spec.rules[0].filters[0].type", "filter type CORS is not supported by fastmesh"),
    Case("mirror to a missing Service", rule("filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 9080}}}]"),
         "spec.rules[0].filters[0].requestMirror.backendRef.name", "Service default/shadow not found"),
    Case("mirror percent and fraction", rule("filters: [{type: RequestMirror, requestMirror: {backendRef: {name: reviews, port: 9080}, percent: 5, fraction: {numerator: 1}}}]"),
         "spec.rules[0].filters[0].requestMirror.fraction", "give percent or fraction, not both"),
    Case("ExtensionRef to a missing FaultInjection", rule("filters: [{type: ExtensionRef, extensionRef: {group: fastmesh.io, kind: FaultInjection, name: flakey}}]"),
         "spec.rules[0].filters[0].extensionRef.name", "FaultInjection default/flakey not found"),
    Case("ExtensionRef to another kind", rule("filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: x}}]"),
         "spec.rules[0].filters[0].extensionRef.kind", "only group fastmesh.io kind FaultInjection is supported"),
    Case("FaultInjection abort status", "apiVersion: fastmesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {name: f}\nspec: {abort: {percentage: {value: 5}, httpStatus: 99}}\n",
         "spec.abort.httpStatus", "greater than or equal to 200", label="FaultInjection default/f"),
    Case("FaultInjection percentage", "apiVersion: fastmesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {name: f}\nspec: {delay: {percentage: {value: 150}, fixedDelay: 1s}}\n",
         "spec.delay.percentage.value", "must be between 0 and 100 (got 150", label="FaultInjection default/f"),
    Case("FaultInjection without a fault", "apiVersion: fastmesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {name: f}\nspec: {}\n",
         "spec", "give delay, abort or both", label="FaultInjection default/f"),
    Case("filter type without its settings", rule("filters: [{type: RequestHeaderModifier}]"),
         "spec.rules[0].filters[0].requestHeaderModifier", "required when type is RequestHeaderModifier"),
    Case("filter settings of another type", rule("filters: [{type: URLRewrite, urlRewrite: {hostname: a.example}, requestRedirect: {scheme: https}}]"),
         "spec.rules[0].filters[0].requestRedirect", "configures RequestRedirect, but type is URLRewrite"),
    Case("filter given twice", rule("""\
         filters:
           - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}
           - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-b]}}
         backendRefs: [{name: reviews, port: 9080}]"""),
         "spec.rules[0].filters[1].type", "RequestHeaderModifier is given twice in this rule (filters[0] too)"),
    Case("header set twice by one modifier",
         rule("filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: A, value: '1'}, {name: a, value: '2'}]}}]"),
         "spec.rules[0].filters[0].responseHeaderModifier.set[1].name", "header 'a' is given twice (set[0] too)"),
    Case("rewrite path not absolute",
         rule("filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: v2}}}]"),
         "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "must be an absolute path starting with '/' (got 'v2')"),
    # === parents and hostnames ===
    Case("parentRef to a missing Service", ROUTE.replace("kind: Service, name: reviews}", "kind: Service, name: reveiws}") + "    - {}\n",
         "spec.parentRefs[0].name", "Service default/reveiws not found (did you mean default/reviews?)"),
    Case("Service parentRef without the core group", ROUTE.replace('group: "", ', "") + "    - {}\n",
         "spec.parentRefs[0].group", "a Service parent needs group \"\" (the core API group; got 'gateway.networking.k8s.io')"),
    Case("invalid hostname", ROUTE.replace('  parentRefs: [{group: "", kind: Service, name: reviews}]\n', "  hostnames: [Shop.Example.com]\n") + "    - {}\n",
         "spec.hostnames[0]", "must be lower-case (got 'Shop.Example.com')"),
    Case("IP address as hostname", ROUTE.replace('  parentRefs: [{group: "", kind: Service, name: reviews}]\n', "  hostnames: [10.0.0.1]\n") + "    - {}\n",
         "spec.hostnames[0]", "must be a DNS name, not an IP address (got '10.0.0.1')"),
    Case("listener hostname that is a Service's", ROUTE.replace('  parentRefs: [{group: "", kind: Service, name: reviews}]\n', "  hostnames: [reviews.default.svc]\n") + "    - {}\n",
         "spec.hostnames[0]", "'reviews.default.svc' is a hostname of Service default/reviews"),
    # === objects ===
    Case("duplicate object", "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec: {ports: [{port: 80}]}\n",
         "metadata.name", "duplicate Service default/reviews: document 1 defines it too", label="Service default/reviews"),
    Case("two Proxy documents", "apiVersion: fastmesh.io/v1alpha1\nkind: Proxy\nmetadata: {name: second}\n",
         "", "only one Proxy document is allowed (document 4 is Proxy default/mesh)", label="Proxy default/second"),
    # === Service ===
    Case("Service name that cannot be a host name", "apiVersion: v1\nkind: Service\nmetadata: {name: reviews.v1}\nspec: {ports: [{port: 80}]}\n",
         "metadata.name", "a Service name must be a DNS-1035 label", label="Service default/reviews.v1"),
    Case("unsupported appProtocol", "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432, appProtocol: postgresql}]}\n",
         "spec.ports[0].appProtocol", "unsupported appProtocol 'postgresql'", label="Service default/db"),
    Case("load-balancer annotation", "apiVersion: v1\nkind: Service\nmetadata: {name: db, annotations: {fastmesh.io/load-balancer: rr}}\nspec: {ports: [{port: 80}]}\n",
         'metadata.annotations["fastmesh.io/load-balancer"]', "must be one of p2c-peak-ewma, round-robin (got 'rr')", label="Service default/db"),
    Case("unnamed port among several", "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 80}, {name: admin, port: 81}]}\n",
         "spec.ports[0].name", "required when the Service has more than one port", label="Service default/db"),
    Case("UDP port", "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec: {ports: [{port: 53, protocol: UDP}]}\n",
         "spec.ports[0].protocol", "must be 'TCP' (got 'UDP')", label="Service default/dns"),
    Case("duplicate Service port", "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{name: a, port: 80}, {name: b, port: 80}]}\n",
         "spec.ports[1].port", "duplicate port 80 (ports[0] has it)", label="Service default/db"),
    # === EndpointSlice ===
    Case("EndpointSlice naming a missing Service port",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ratings-1, labels: {kubernetes.io/service-name: ratings}}\n"
         "addressType: IPv4\nports: [{name: grcp, port: 19090}]\nendpoints: [{addresses: [127.0.0.1]}]\n",
         "ports[0].name", "Service default/ratings has no port named 'grcp' (its port names: 'http', 'grpc')",
         label="EndpointSlice default/ratings-1"),
    Case("EndpointSlice of a missing Service",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x-1, labels: {kubernetes.io/service-name: ratingz}}\n"
         "addressType: IPv4\nports: [{name: http, port: 1}]\n",
         'metadata.labels["kubernetes.io/service-name"]', "Service default/ratingz not found (did you mean ratings?)",
         label="EndpointSlice default/x-1"),
    Case("EndpointSlice address of the wrong family",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: r-2, labels: {kubernetes.io/service-name: reviews}}\n"
         "addressType: IPv4\nports: [{name: http, port: 1}]\nendpoints: [{addresses: ['::1']}]\n",
         "endpoints[0].addresses[0]", "must be an IPv4 address, as the slice's addressType says (got '::1')",
         label="EndpointSlice default/r-2"),
    # The schema of an EndpointSlice (ext/endpointslice.pyx declines these: pydantic words them).
    *(Case(f"EndpointSlice {what}", SLICE + body, path, message, label="EndpointSlice default/r-3") for what, body, path, message in (
        ("port as a string", "addressType: IPv4\nports: [{name: http, port: '18081'}]\n", "ports[0].port",
         "must be an integer (got '18081')"),
        ("port out of range", "addressType: IPv4\nports: [{name: http, port: 70000}]\n", "ports[0].port",
         "must be between 1 and 65535 (got 70000)"),
        ("UDP port", "addressType: IPv4\nports: [{name: http, port: 1, protocol: UDP}]\n", "ports[0].protocol",
         "must be 'TCP' (got 'UDP')"),
        ("no ports", "addressType: IPv4\nports: []\n", "ports", "must have at least 1 item(s) (got 0)"),
        ("addressType misspelled", "addressType: ipv4\nports: [{name: http, port: 1}]\n", "addressType",
         "must be 'IPv4', 'IPv6' or 'FQDN' (got 'ipv4')"),
        ("endpoints as a mapping", "addressType: IPv4\nports: [{name: http, port: 1}]\nendpoints: {addresses: [127.0.0.1]}\n",
         "endpoints", "must be a list (got a mapping)"),
        ("endpoint without addresses", "addressType: IPv4\nports: [{name: http, port: 1}]\nendpoints: [{addresses: []}]\n",
         "endpoints[0].addresses", "must have at least 1 item(s) (got 0)"),
        ("address as a number", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1, 5]}]\n", "endpoints[0].addresses[1]", "must be a string (got 5)"),
        ("ready as a string", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1], conditions: {ready: 'yes'}}]\n", "endpoints[0].conditions.ready",
         "must be true or false (got 'yes')"),
        ("conditions null", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1], conditions: null}]\n", "endpoints[0].conditions",
         "must be a mapping (got null)"),
        ("condition misspelled", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1], conditions: {redy: true}}]\n", "endpoints[0].conditions.redy",
         "unknown field 'redy' (did you mean 'ready'?)"),
        ("endpoint field misspelled", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1], nodename: n1}]\n", "endpoints[0].nodename",
         "unknown field 'nodename' (did you mean 'nodeName'?)"),
        ("zone as a number", "addressType: IPv4\nports: [{name: http, port: 1}]\n"
         "endpoints: [{addresses: [127.0.0.1], zone: 3}]\n", "endpoints[0].zone", "must be a string (got 3)"),
    )),
    # === AuthorizationPolicy ===
    Case("policy targets a missing Service", policy("targetRefs: [{kind: Service, name: reviewz}]"),
         "spec.targetRefs[0].name", "Service default/reviewz not found (did you mean reviews?)", label=AUTHZ_LABEL),
    Case("policy targets another namespace", policy("targetRefs: [{kind: Service, name: reviews, namespace: prod}]"),
         "spec.targetRefs[0].namespace", "must be the policy's namespace 'default' (got 'prod')", label=AUTHZ_LABEL),
    Case("policy targets a Deployment", policy("targetRefs: [{kind: Deployment, name: reviews}]"),
         "spec.targetRefs[0].kind", "must be 'Service' (got 'Deployment')", label=AUTHZ_LABEL),
    Case("policy action CUSTOM", policy("action: CUSTOM"),
         "spec.action", "must be 'ALLOW', 'DENY' or 'AUDIT' (got 'CUSTOM')", label=AUTHZ_LABEL),
    Case("policy workload selector", policy("selector: {matchLabels: {app: reviews}}"),
         "spec.selector", "fastmesh does not support yet", label=AUTHZ_LABEL),
    Case("policy when condition", policy("rules: [{when: [{key: 'request.headers[x]', values: [a]}]}]"),
         "spec.rules[0].when", "fastmesh does not support yet", label=AUTHZ_LABEL),
    Case("policy typo in operation", policy("rules: [{to: [{operation: {method: [GET]}}]}]"),
         "spec.rules[0].to[0].operation.method", "unknown field 'method' (did you mean 'methods'?)", label=AUTHZ_LABEL),
    Case("policy empty source", policy("rules: [{from: [{source: {}}]}]"),
         "spec.rules[0].from[0].source", "must set at least one of principals", label=AUTHZ_LABEL),
    Case("policy empty operation", policy("rules: [{to: [{operation: {}}]}]"),
         "spec.rules[0].to[0].operation", "must set at least one of hosts, ports, methods, paths", label=AUTHZ_LABEL),
    Case("policy wildcard in the middle of a path", policy("rules: [{to: [{operation: {paths: [/ok, '/api/*/x']}}]}]"),
         "spec.rules[0].to[0].operation.paths[1]", 'only "*", a prefix ("abc*") or a suffix ("*abc") wildcard', label=AUTHZ_LABEL),
    Case("policy path without slash", policy("rules: [{to: [{operation: {notPaths: [api]}}]}]"),
         "spec.rules[0].to[0].operation.notPaths[0]", "must start with '/' or '*' (got 'api')", label=AUTHZ_LABEL),
    Case("policy host with port", policy("rules: [{to: [{operation: {hosts: ['reviews:9080']}}]}]"),
         "spec.rules[0].to[0].operation.hosts[0]", "hosts are matched without port", label=AUTHZ_LABEL),
    Case("policy port out of range", policy("rules: [{to: [{operation: {ports: ['70000']}}]}]"),
         "spec.rules[0].to[0].operation.ports[0]", "must be between 1 and 65535 (got 70000)", label=AUTHZ_LABEL),
    Case("policy port that is not a number", policy("rules: [{to: [{operation: {notPorts: [http]}}]}]"),
         "spec.rules[0].to[0].operation.notPorts[0]", "must be a port number such as 8080", label=AUTHZ_LABEL),
    Case("policy bad method", policy("rules: [{to: [{operation: {methods: ['GE T']}}]}]"),
         "spec.rules[0].to[0].operation.methods[0]", "'GE T' is not an HTTP method", label=AUTHZ_LABEL),
    Case("policy double-wildcard principal", policy("rules: [{from: [{source: {principals: ['*/ns/*']}}]}]"),
         "spec.rules[0].from[0].source.principals[0]", 'only "*", a prefix', label=AUTHZ_LABEL),
    Case("policy empty namespace", policy("rules: [{from: [{source: {notNamespaces: ['']}}]}]"),
         "spec.rules[0].from[0].source.notNamespaces[0]", "must not be empty", label=AUTHZ_LABEL),
    # === identity and mTLS (issue 5) ===
    Case("meshed Service without identity",
         "apiVersion: v1\nkind: Service\nmetadata: {name: details, annotations: {fastmesh.io/service-account: details}}\n"
         "spec: {ports: [{port: 9080}]}\n",
         'metadata.annotations["fastmesh.io/service-account"]',
         "marks the Service meshed (mTLS to its endpoints), which needs a Proxy with spec.identity",
         label="Service default/details"),
    Case("bad service-account annotation",
         "apiVersion: v1\nkind: Service\nmetadata: {name: details, annotations: {fastmesh.io/service-account: Details_SA}}\n"
         "spec: {ports: [{port: 9080}]}\n",
         'metadata.annotations["fastmesh.io/service-account"]', "invalid service account 'Details_SA'",
         label="Service default/details"),
    # === Proxy (replaces BASE's Proxy: documents 1-3 then this one as document 4) ===
]

IDENTITY = "identity: {trustDomain: td.test, serviceAccount: web, ca: {directory: ca}"

PROXY_CASES = [
    Case("duplicate listener port", "listeners: [{name: a, port: 15001}, {name: b, port: 15001}]",
         "spec.listeners[1].port", "127.0.0.1:15001 is already used by listeners[0] (127.0.0.1:15001)"),
    Case("listener on every address, same port", "listeners: [{name: a, port: 15001}, {name: b, address: 0.0.0.0, port: 15001}]",
         "spec.listeners[1].port", "0.0.0.0:15001 is already used by listeners[0]"),
    Case("duplicate listener name", "listeners: [{name: a, port: 15001}, {name: a, port: 15002}]",
         "spec.listeners[1].name", "duplicate listener name 'a' (listeners[0] has it)"),
    Case("bad listener address", "listeners: [{name: a, address: localhost, port: 15001}]",
         "spec.listeners[0].address", "must be an IP address such as 127.0.0.1, 0.0.0.0 or ::1 (got 'localhost')"),
    Case("listener port out of range", "listeners: [{name: a, port: 65536}]",
         "spec.listeners[0].port", "must be between 0 and 65535 (got 65536)"),
    Case("admin on a listener's port", "admin: {address: '127.0.0.1:15001'}",
         "spec.admin.address", "127.0.0.1:15001 is already used by listeners[0] (127.0.0.1:15001)"),
    Case("admin address without port", "admin: {address: 127.0.0.1}",
         "spec.admin.address", "must be ip:port such as 127.0.0.1:15000"),
    Case("bad duration", "drainTimeout: 10 seconds",
         "spec.drainTimeout", "must be a duration such as 10s, 500ms or 1h30m (got '10 seconds')"),
    Case("bad pool duration", "pool: {idleTimeout: 1.5m}",
         "spec.pool.idleTimeout", "must be a duration such as 10s, 500ms or 1h30m (got '1.5m')"),
    Case("worker threads out of range", "workerThreads: 0",
         "spec.workerThreads", "must be between 1 and 256 (got 0)"),
    Case("unknown load balancer", "loadBalancer: LeastRequest",
         "spec.loadBalancer", "must be 'P2CPeakEWMA' or 'RoundRobin' (got 'LeastRequest')"),
    Case("duplicate external service", "externalServices: [{name: b, endpoints: ['10.0.0.1:80']}, {name: b, endpoints: ['10.0.0.2:80']}]",
         "spec.externalServices[1].name", "duplicate external service 'b' (externalServices[0] has it)"),
    Case("connect timeout of zero", "pool: {connectTimeout: 0s}", "spec.pool.connectTimeout", "must be longer than 0s"),
    Case("inbound listener for a missing Service", "listeners: [{name: in, port: 15006, inboundService: reviewz}]",
         "spec.listeners[0].inboundService", "Service default/reviewz not found (did you mean default/reviews?)"),
    Case("inbound listener for a Service in another namespace", "listeners: [{name: in, port: 15006, inboundService: prod/reviews}]",
         "spec.listeners[0].inboundService", "Service prod/reviews not found"),
    Case("inbound service with two slashes", "listeners: [{name: in, port: 15006, inboundService: a/b/c}]",
         "spec.listeners[0].inboundService", "must be a Service name or namespace/name (got 'a/b/c')"),
    Case("default deny not a boolean", "authorization: {defaultDeny: 'yes'}",
         "spec.authorization.defaultDeny", "must be"),
    Case("external endpoint without port", "externalServices: [{name: billing, endpoints: [billing.internal]}]",
         "spec.externalServices[0].endpoints[0]", "must be host:port such as 10.0.0.7:8080"),
    # === identity and mTLS (issue 5) ===
    Case("STRICT listener without identity", "listeners: [{name: inbound, port: 15006, mtls: STRICT}]",
         "spec.listeners[0].mtls", "STRICT needs spec.identity: mTLS presents a workload certificate"),
    Case("PERMISSIVE listener without identity", "listeners: [{name: a, port: 15001}, {name: b, port: 15006, mtls: PERMISSIVE}]",
         "spec.listeners[1].mtls", "PERMISSIVE needs spec.identity"),
    Case("unknown mtls mode", "listeners: [{name: inbound, port: 15006, mtls: MUTUAL}]",
         "spec.listeners[0].mtls", "must be 'DISABLE', 'PERMISSIVE' or 'STRICT' (got 'MUTUAL')"),
    Case("bad trust domain", "identity: {trustDomain: Cluster.Local, serviceAccount: web, ca: {directory: ca}}",
         "spec.identity.trustDomain", "invalid trust domain 'Cluster.Local'"),
    Case("bad service account", "identity: {trustDomain: td.test, serviceAccount: web_1, ca: {directory: ca}}",
         "spec.identity.serviceAccount", "invalid service account 'web_1'"),
    Case("identity without ca", "identity: {trustDomain: td.test, serviceAccount: web}",
         "spec.identity.ca", "required field is missing"),
    Case("cert TTL of zero", IDENTITY + ", certTTL: 0s}", "spec.identity.certTTL", "must be at least 1s"),
    Case("cert TTL not a duration", IDENTITY + ", certTTL: 1d}", "spec.identity.certTTL",
         "must be a duration such as 10s, 500ms or 1h30m (got '1d')"),
    Case("certTTL misspelled", IDENTITY + ", certTtl: 1h}", "spec.identity.certTtl", "unknown field"),
]


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def _assert_one_problem(path: Path, case: Case) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(path)
    problems = info.value.problems
    assert len(problems) == 1, str(info.value)
    (problem,) = problems
    assert (problem.source, problem.document, problem.label, problem.path) == (
        str(path), case.document, case.label, case.path
    ), str(problem)
    assert case.message in problem.message, str(problem)
    prefix = f"{path}: document {case.document} ({case.label}): "
    assert str(info.value) == prefix + (f"{case.path}: " if case.path else "") + problem.message


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_one_mistake_one_precise_message(case: Case, config_file: Callable[[str], Path]) -> None:
    _assert_one_problem(config_file(BASE + case.yaml), case)


@pytest.mark.parametrize("case", PROXY_CASES, ids=_ids(PROXY_CASES))
def test_one_proxy_mistake_one_precise_message(case: Case, config_file: Callable[[str], Path]) -> None:
    without_proxy = BASE.split("---\napiVersion: fastmesh.io/v1alpha1")[0]
    proxy = "apiVersion: fastmesh.io/v1alpha1\nkind: Proxy\nmetadata: {name: mesh}\nspec:\n  " + case.yaml + "\n"
    expected = Case(case.id, case.yaml, case.path, case.message, document=4, label="Proxy default/mesh")
    _assert_one_problem(config_file(without_proxy + "---\n" + proxy), expected)


def test_the_base_is_valid(config_file: Callable[[str], Path]) -> None:
    load_file(config_file(BASE + ROUTE + "    - backendRefs: [{name: reviews, port: 9080}]\n"))


@pytest.mark.parametrize("weight", [0, 1, 1_000_000])
def test_weight_bounds_are_inclusive(weight: int, config_file: Callable[[str], Path]) -> None:
    cfg = load_file(config_file(BASE + rule(f"backendRefs: [{{name: reviews, port: 9080, weight: {weight}}}]")))
    (route,) = cfg.routes
    assert route.spec.rules[0].backend_refs[0].weight == weight
    compiled = [b["weight"] for v in compile_snapshot(cfg)["vhosts"] for r in v["routes"]
                if r["name"] == "default/reviews/rule/0" for b in r["backends"]]
    assert compiled == [weight]


def test_weight_just_above_the_bound_is_refused(config_file: Callable[[str], Path]) -> None:
    weight = 1_000_001
    case = Case(f"weight {weight}", rule(f"backendRefs: [{{name: reviews, port: 9080, weight: {weight}}}]"),
                "spec.rules[0].backendRefs[0].weight", f"must be between 0 and 1000000 (got {weight})")
    _assert_one_problem(config_file(BASE + case.yaml), case)


# === YAML itself ===


def test_yaml_syntax_error_gives_line_and_column(config_file: Callable[[str], Path]) -> None:
    path = config_file(BASE + ROUTE + "    - backendRefs: [{name: reviews, port: 9080}\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    line = BASE.count("\n") + ROUTE.count("\n") + 2
    assert str(info.value) == (
        f"{path}: line {line}, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"
        f" (while parsing a flow sequence started at line {line - 1}, column 20)"
    )


def test_yaml_indentation_error(config_file: Callable[[str], Path]) -> None:
    path = config_file("apiVersion: v1\nkind: Service\n  metadata: {name: x}\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: line 3, column 11: invalid YAML: mapping values are not allowed here"


def test_duplicate_yaml_key(config_file: Callable[[str], Path]) -> None:
    path = config_file(BASE + ROUTE + "    - backendRefs: [{name: reviews, port: 9080}]\n  rules: []\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.line == BASE.count("\n") + ROUTE.count("\n") + 2
    assert "found duplicate key 'rules'" in str(problem)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


# === several mistakes ===


def test_every_problem_is_reported_in_file_order(errors: Callable[[str], ConfigError]) -> None:
    error = errors(
        BASE
        + rule("backendRefs: [{name: reviews, port: 9080, weight: 2000000}, {name: nope, port: 1}]")
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec: {ports: [{port: 80, prot: TCP}]}\n"
    )
    lines = str(error).splitlines()
    assert [(p.document, p.path) for p in error.problems] == [
        (5, "spec.rules[0].backendRefs[0].weight"),
        (6, "spec.ports[0].prot"),
    ]
    assert len(lines) == 2
    # Once the schema passes, the reference checks speak.
    error = errors(BASE + rule("backendRefs: [{name: nope, port: 1}, {name: ratings, port: 1}]"))
    assert [p.path for p in error.problems] == [
        "spec.rules[0].backendRefs[0].name",
        "spec.rules[0].backendRefs[1].port",
    ]


def test_a_broken_service_is_not_also_reported_missing(errors: Callable[[str], ConfigError]) -> None:
    broken = "apiVersion: v1\nkind: Service\nmetadata: {name: details}\nspec: {ports: [{port: 0}]}\n---\n"
    error = errors(BASE + broken + rule("backendRefs: [{name: details, port: 80}]"))
    assert [(p.label, p.path, p.message) for p in error.problems] == [
        ("Service default/details", "spec.ports[0].port", "must be between 1 and 65535 (got 0)")
    ]
