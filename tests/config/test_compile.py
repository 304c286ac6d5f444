"""compile_snapshot: backends, endpoints, protocols, balancers, virtual hosts, default routes, weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fastmesh.config import MeshConfig, compile_snapshot, load_text

Load = Callable[[str], MeshConfig]


def service(name: str, ports: str = "[{name: http, port: 8080}]", ns: str = "default", annotations: str = "{}") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, annotations: {annotations}}}\n"
        f"spec: {{ports: {ports}}}\n---\n"
    )


def endpoint_slice(name: str, service_name: str, ports: str, endpoints: str, ns: str = "default", kind: str = "IPv4") -> str:
    return (
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {service_name}}}}}\n"
        f"addressType: {kind}\nports: {ports}\nendpoints: {endpoints}\n---\n"
    )


def backend(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in snapshot["backends"] if b["name"] == name)


def vhost(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in snapshot["vhosts"] if v["name"] == name)


# === listeners, pool ===


def test_defaults_without_a_proxy_document(load: Load) -> None:
    snapshot = compile_snapshot(load(service("web")))
    assert "version" not in snapshot
    assert snapshot["listeners"] == [{"name": "outbound", "address": "127.0.0.1:15001"}]
    assert snapshot["pool"] == {"idle_timeout_ms": 90000, "max_idle_per_endpoint": 64, "connect_timeout_ms": 2000}
    json.dumps(snapshot)  # JSON-ready


def test_proxy_settings(load: Load) -> None:
    cfg = load(
        """
        apiVersion: fastmesh.io/v1alpha1
        kind: Proxy
        metadata: {name: p}
        spec:
          admin: {address: "[::1]:9901"}
          listeners: [{name: in, address: "::", port: 8080}, {name: out, port: 0}]
          workerThreads: 4
          drainTimeout: 1m30s
          pool: {idleTimeout: 1h, maxIdlePerEndpoint: 0, connectTimeout: 250ms}
        """
    )
    assert cfg.proxy.admin_address == "[::1]:9901"
    assert cfg.proxy.drain_timeout_s == 90.0
    assert cfg.proxy.worker_threads == 4
    assert [(li.name, li.address, li.port) for li in cfg.proxy.listeners] == [("in", "::", 8080), ("out", "127.0.0.1", 0)]
    snapshot = compile_snapshot(cfg)
    assert snapshot["listeners"] == [{"name": "in", "address": "[::]:8080"}, {"name": "out", "address": "127.0.0.1:0"}]
    assert snapshot["pool"] == {"idle_timeout_ms": 3_600_000, "max_idle_per_endpoint": 0, "connect_timeout_ms": 250}


# === backends ===


def test_one_backend_per_service_port_with_protocol(load: Load) -> None:
    snapshot = compile_snapshot(
        load(service("ratings", "[{name: http, port: 8080}, {name: grpc, port: 9090, appProtocol: kubernetes.io/h2c},"
                                " {name: web, port: 80, appProtocol: http}]", ns="shop"))
    )
    assert [(b["name"], b["protocol"]) for b in snapshot["backends"]] == [
        ("shop/ratings:8080", "http1"),
        ("shop/ratings:9090", "h2c"),
        ("shop/ratings:80", "http1"),
    ]


def test_endpoints_are_ready_addresses_at_the_slice_port_of_the_same_name(load: Load) -> None:
    snapshot = compile_snapshot(
        load(
            service("ratings", "[{name: http, port: 8080}, {name: grpc, port: 9090}]")
            + endpoint_slice(
                "ratings-a", "ratings", "[{name: http, port: 18080}, {name: grpc, port: 19090}]",
                "[{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false}},"
                " {addresses: [10.0.0.3], conditions: {ready: true, serving: true}}]",
            )
            + endpoint_slice("ratings-b", "ratings", "[{name: http, port: 18081}]", "[{addresses: [10.0.0.1, 10.0.0.4]}]")
            + endpoint_slice("ratings-v6", "ratings", "[{name: http, port: 18080}]", "[{addresses: ['fd00::1']}]", kind="IPv6")
            + endpoint_slice("ratings-dup", "ratings", "[{name: http, port: 18080}]", "[{addresses: [10.0.0.1]}]")
            + endpoint_slice("other-ns", "ratings", "[{name: http, port: 1}]", "[{addresses: [10.9.9.9]}]", ns="elsewhere")
            + service("ratings", ns="elsewhere")
        )
    )
    assert backend(snapshot, "default/ratings:8080")["endpoints"] == [
        "10.0.0.1:18080", "10.0.0.3:18080", "10.0.0.1:18081", "10.0.0.4:18081", "[fd00::1]:18080",
    ]
    assert backend(snapshot, "default/ratings:9090")["endpoints"] == ["10.0.0.1:19090", "10.0.0.3:19090"]
    assert backend(snapshot, "elsewhere/ratings:8080")["endpoints"] == ["10.9.9.9:1"]


def test_unnamed_single_port_and_fqdn_endpoints(load: Load) -> None:
    snapshot = compile_snapshot(
        load(service("web", "[{port: 80}]") + endpoint_slice("web-1", "web", "[{port: 8080}]",
                                                             "[{addresses: [web-1.internal]}]", kind="FQDN"))
    )
    assert backend(snapshot, "default/web:80")["endpoints"] == ["web-1.internal:8080"]


def test_a_service_without_slices_has_no_endpoints(load: Load) -> None:
    assert backend(compile_snapshot(load(service("web"))), "default/web:8080")["endpoints"] == []


def test_balancer_from_annotation_else_proxy_default(load: Load) -> None:
    proxy = "apiVersion: fastmesh.io/v1alpha1\nkind: Proxy\nmetadata: {name: p}\nspec: {loadBalancer: RoundRobin}\n---\n"
    annotated = "{fastmesh.io/load-balancer: p2c-peak-ewma}"
    snapshot = compile_snapshot(load(proxy + service("a") + service("b", annotations=annotated)))
    assert backend(snapshot, "default/a:8080")["lb"] == "round_robin"
    assert backend(snapshot, "default/b:8080")["lb"] == "p2c_peak_ewma"
    snapshot = compile_snapshot(load(service("a") + service("b", annotations="{fastmesh.io/load-balancer: round-robin}")))
    assert [b["lb"] for b in snapshot["backends"]] == ["p2c_peak_ewma", "round_robin"]


def test_external_services(load: Load) -> None:
    cfg = load(
        """
        apiVersion: fastmesh.io/v1alpha1
        kind: Proxy
        metadata: {name: p}
        spec:
          externalServices:
            - {name: billing, endpoints: ["billing.example.com:80", "10.1.1.1:8080"]}
            - {name: ledger, protocol: H2C, endpoints: ["[fd00::9]:50051"]}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: out}
        spec:
          rules: [{backendRefs: [{group: fastmesh.io, kind: ExternalService, name: ledger, weight: 3}]}]
        """
    )
    snapshot = compile_snapshot(cfg)
    assert snapshot["backends"] == [
        {"name": "external/billing", "protocol": "http1", "lb": "p2c_peak_ewma",
         "endpoints": ["billing.example.com:80", "10.1.1.1:8080"]},
        {"name": "external/ledger", "protocol": "h2c", "lb": "p2c_peak_ewma", "endpoints": ["[fd00::9]:50051"]},
    ]
    assert vhost(snapshot, "*")["routes"][0]["backends"] == [{"backend": "external/ledger", "weight": 3}]


# === virtual hosts ===


def test_service_vhost_with_default_route(load: Load) -> None:
    snapshot = compile_snapshot(load(service("web", "[{name: http, port: 80}, {name: admin, port: 9000}]", ns="shop")))
    assert snapshot["vhosts"] == [
        {
            "name": "shop/web",
            "domains": ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"],
            "routes": [
                {
                    "name": "shop/web/default",
                    "match": {"path": {"type": "PathPrefix", "value": "/"}, "method": None, "headers": [], "query": []},
                    "filters": [],
                    "backends": [{"backend": "shop/web:80", "weight": 1}],
                }
            ],
        }
    ]


def test_gamma_routes_replace_the_default_route_of_their_service_only(load: Load) -> None:
    cfg = load(
        service("reviews") + service("reviews-v2") + service("details", ns="shop")
        + """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: reviews, namespace: default}
        spec:
          parentRefs: [{group: "", kind: Service, name: reviews}]
          rules:
            - backendRefs:
                - {name: reviews, namespace: default, port: 8080, weight: 90}
                - {name: reviews-v2, namespace: default, port: 8080, weight: 10}
                - {name: details, namespace: shop, port: 8080, weight: 0}
        """.replace("\n        ", "\n")
    )
    snapshot = compile_snapshot(cfg)
    reviews = vhost(snapshot, "default/reviews")
    assert [r["name"] for r in reviews["routes"]] == ["default/reviews/rule/0"]
    assert reviews["routes"][0]["backends"] == [
        {"backend": "default/reviews:8080", "weight": 90},
        {"backend": "default/reviews-v2:8080", "weight": 10},
        {"backend": "shop/details:8080", "weight": 0},
    ]
    assert [r["name"] for r in vhost(snapshot, "default/reviews-v2")["routes"]] == ["default/reviews-v2/default"]
    assert [r["name"] for r in vhost(snapshot, "shop/details")["routes"]] == ["shop/details/default"]
    assert {v["name"] for v in snapshot["vhosts"]} == {"default/reviews", "default/reviews-v2", "shop/details"}


GAMMA_ROUTES = (
    service("reviews") + service("reviews-v2") + service("reviews-v3")
    + """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: producer, namespace: default}
    spec:
      parentRefs: [{group: "", kind: Service, name: reviews}]
      rules: [{backendRefs: [{name: reviews-v2, port: 8080}]}]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: consumer, namespace: shop}
    spec:
      parentRefs: [{group: "", kind: Service, name: reviews, namespace: default}]
      rules: [{backendRefs: [{name: reviews-v3, namespace: default, port: 8080}]}]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: consumer, namespace: books}
    spec:
      parentRefs: [{group: "", kind: Service, name: reviews, namespace: default}]
      rules: [{backendRefs: [{name: reviews, namespace: default, port: 8080}]}]
    """.replace("\n    ", "\n")
)


@pytest.mark.parametrize(("namespace", "expected"), [
    (None, "default/producer/rule/0"),  # no Proxy document: the proxy is in `default`
    ("default", "default/producer/rule/0"),  # the Service's own namespace: producer routes
    ("shop", "shop/consumer/rule/0"),  # its consumer route replaces the producer route
    ("books", "books/consumer/rule/0"),
    ("elsewhere", "default/producer/rule/0"),  # no consumer route there: the producer route
])
def test_gamma_consumer_routes_apply_only_in_their_namespace(namespace: str | None, expected: str) -> None:
    snapshot = compile_snapshot(load_text(GAMMA_ROUTES, "mesh.yaml", namespace=namespace))
    assert [r["name"] for r in vhost(snapshot, "default/reviews")["routes"]] == [expected]


def test_the_proxy_documents_namespace_is_the_proxys_namespace() -> None:
    proxy = "apiVersion: fastmesh.io/v1alpha1\nkind: Proxy\nmetadata: {name: p, namespace: shop}\n---\n"
    snapshot = compile_snapshot(load_text(proxy + GAMMA_ROUTES, "mesh.yaml"))
    assert [r["name"] for r in vhost(snapshot, "default/reviews")["routes"]] == ["shop/consumer/rule/0"]
    snapshot = compile_snapshot(load_text(proxy + GAMMA_ROUTES, "mesh.yaml", namespace="default"))  # --namespace wins
    assert [r["name"] for r in vhost(snapshot, "default/reviews")["routes"]] == ["default/producer/rule/0"]


def test_a_bare_name_shared_by_two_namespaces_routes_only_qualified(load: Load) -> None:
    snapshot = compile_snapshot(load(service("web", ns="a") + service("web", ns="b") + service("api", ns="a")))
    assert vhost(snapshot, "a/web")["domains"] == ["web.a", "web.a.svc", "web.a.svc.cluster.local"]
    assert vhost(snapshot, "b/web")["domains"] == ["web.b", "web.b.svc", "web.b.svc.cluster.local"]
    assert vhost(snapshot, "a/api")["domains"][0] == "api"
    domains = [d for v in snapshot["vhosts"] for d in v["domains"]]
    assert len(domains) == len(set(domains))  # the engine refuses a domain claimed twice


LISTENER_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact}
spec:
  hostnames: [foo.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild}
spec:
  hostnames: ["*.example.com"]
  rules: [{matches: [{path: {type: PathPrefix, value: /api}}], backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: deep-wild}
spec:
  parentRefs: [{name: some-gateway}]
  hostnames: ["*.foo.example.com", bar.org]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: anyhost}
spec:
  rules: [{matches: [{path: {type: Exact, value: /healthz}}], backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-only}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  hostnames: [ignored.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"""


def test_listener_vhosts_and_wildcard_coverage(load: Load) -> None:
    snapshot = compile_snapshot(load(service("web") + LISTENER_ROUTES))
    names = {v["name"]: [r["name"] for r in v["routes"]] for v in snapshot["vhosts"]}
    assert names == {
        "default/web": ["default/mesh-only/rule/0"],
        "bar.org": ["default/deep-wild/rule/0", "default/anyhost/rule/0"],
        # exact host: its own route first, then the wildcard covering it, then the host-less route
        "foo.example.com": ["default/exact/rule/0", "default/wild/rule/0", "default/anyhost/rule/0"],
        # a longer wildcard before a shorter one
        "*.foo.example.com": ["default/deep-wild/rule/0", "default/wild/rule/0", "default/anyhost/rule/0"],
        "*.example.com": ["default/wild/rule/0", "default/anyhost/rule/0"],
        "*": ["default/anyhost/rule/0"],
    }
    assert [v["name"] for v in snapshot["vhosts"]] == [
        "default/web", "bar.org", "foo.example.com", "*.example.com", "*.foo.example.com", "*",
    ]
    for v in snapshot["vhosts"][1:]:
        assert v["domains"] == [v["name"]]


def test_no_catch_all_vhost_without_hostless_routes(load: Load) -> None:
    cfg = load(service("web") + LISTENER_ROUTES.split("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: anyhost}")[0])
    assert "*" not in {v["name"] for v in compile_snapshot(cfg)["vhosts"]}


# === route entries ===


def test_one_entry_per_match_with_filters_and_names(load: Load) -> None:
    cfg = load(
        service("web")
        + """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: shop}
        spec:
          hostnames: [shop.example.com]
          rules:
            - matches:
                - {path: {type: PathPrefix, value: /api}, method: GET, headers: [{name: X-Tenant, value: a}],
                   queryParams: [{name: Debug, value: "1"}, {type: RegularExpression, name: v, value: "[0-9]+"}]}
                - {path: {type: PathPrefix, value: /v1/api}}
              filters:
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: x-b, value: "2"}], remove: [X-C]}
                - type: ResponseHeaderModifier
                  responseHeaderModifier: {remove: [server]}
                - type: URLRewrite
                  urlRewrite: {hostname: internal.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
              backendRefs: [{name: web, port: 8080, weight: 0}]
            - matches: [{path: {type: Exact, value: /old}}]
              filters:
                - type: RequestRedirect
                  requestRedirect: {scheme: https, port: 8443, statusCode: 308,
                                    path: {type: ReplaceFullPath, replaceFullPath: /new}}
        """.replace("\n        ", "\n")
    )
    routes = vhost(compile_snapshot(cfg), "shop.example.com")["routes"]
    assert routes == [
        {
            "name": "default/shop/rule/1",
            "match": {"path": {"type": "Exact", "value": "/old"}, "method": None, "headers": [], "query": []},
            "filters": [{"type": "RequestRedirect", "scheme": "https", "hostname": None, "port": 8443,
                         "path": {"type": "ReplaceFullPath", "value": "/new"}, "status_code": 308}],
            "backends": [],
        },
        {
            "name": "default/shop/rule/0",
            "match": {"path": {"type": "PathPrefix", "value": "/v1/api"}, "method": None, "headers": [], "query": []},
            "filters": [
                {"type": "RequestHeaderModifier", "set": [["x-a", "1"]], "add": [["x-b", "2"]], "remove": ["x-c"]},
                {"type": "ResponseHeaderModifier", "set": [], "add": [], "remove": ["server"]},
                {"type": "URLRewrite", "hostname": "internal.example.com",
                 "path": {"type": "ReplacePrefixMatch", "value": "/"}},
            ],
            "backends": [{"backend": "default/web:8080", "weight": 0}],
        },
        {
            "name": "default/shop/rule/0",
            "match": {
                "path": {"type": "PathPrefix", "value": "/api"},
                "method": "GET",
                "headers": [{"type": "Exact", "name": "x-tenant", "value": "a"}],
                "query": [{"type": "Exact", "name": "Debug", "value": "1"},
                          {"type": "RegularExpression", "name": "v", "value": "[0-9]+"}],
            },
            "filters": routes[1]["filters"],
            "backends": [{"backend": "default/web:8080", "weight": 0}],
        },
    ]


def test_invalid_backends_compile_to_null_when_allowed() -> None:
    text = (
        service("web")
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n"
        "  rules: [{backendRefs: [{name: web, port: 8080, weight: 9}, {name: gone, port: 80},"
        " {name: web, port: 81}, {group: fastmesh.io, kind: ExternalService, name: nowhere}]}]\n"
    )
    cfg = load_text(text, "k8s", allow_invalid_backends=True)
    assert vhost(compile_snapshot(cfg), "*")["routes"][0]["backends"] == [
        {"backend": "default/web:8080", "weight": 9},
        {"backend": None, "weight": 1},
        {"backend": None, "weight": 1},
        {"backend": None, "weight": 1},
    ]


def test_a_rule_without_backends_compiles_with_none(load: Load) -> None:
    cfg = load(service("web") + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n")
    (route,) = vhost(compile_snapshot(cfg), "*")["routes"]
    assert route["backends"] == [] and route["name"] == "default/r/rule/0"


# === authorization ===

AUTHZ_PROXY = """
apiVersion: fastmesh.io/v1alpha1
kind: Proxy
metadata: {name: p}
spec:
  listeners:
    - {name: outbound, port: 15001}
    - {name: inbound, port: 15006, inboundService: web}
    - {name: admin-in, port: 15007, inboundService: prod/api}
  authorization: {defaultDeny: DENY_ALL}
---
"""


def policy_doc(name: str, spec: str, ns: str = "default") -> str:
    return (
        f"apiVersion: fastmesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec: {spec}\n---\n"
    )


def listener(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in snapshot["listeners"] if item["name"] == name)


def test_authorization_policies_compile_onto_inbound_listeners(load: Load) -> None:
    text = (
        AUTHZ_PROXY.replace("DENY_ALL", "true")
        + service("web")
        + service("other")
        + service("api", ns="prod")
        + policy_doc(
            "z-allow-reads",
            """
              targetRefs: [{kind: Service, name: web}]
              rules:
                - from: [{source: {principals: ["cluster.local/ns/default/sa/client", "spiffe://td/ns/x/sa/y", "*/sa/admin"],
                                   notNamespaces: [test]}}]
                  to: [{operation: {methods: [GET, HEAD], paths: ["/api/*"], ports: ["15006", 8080], notHosts: ["*.internal"]}}]""",
        )
        + policy_doc("a-deny", "{action: DENY, rules: [{from: [{source: {notPrincipals: ['*']}}]}]}")
        + policy_doc("only-other", "{targetRefs: [{kind: Service, name: other}], rules: [{}]}")
        + policy_doc("audit", "{action: AUDIT, rules: [{}]}", ns="prod")
        + policy_doc("nothing", "{}", ns="prod")
    )
    snapshot = compile_snapshot(load(text))
    assert "authorization" not in listener(snapshot, "outbound")
    web = listener(snapshot, "inbound")["authorization"]
    assert web["default_deny"] is True
    # Namespace-wide (no targetRefs) and targeted policies of the Service, sorted by name; not other's.
    assert web["policies"] == [
        {"name": "default/a-deny", "action": "DENY", "rules": [{"from": [{"not_principals": ["*"]}]}]},
        {
            "name": "default/z-allow-reads",
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {
                            "principals": [
                                "spiffe://cluster.local/ns/default/sa/client",
                                "spiffe://td/ns/x/sa/y",
                                "*/sa/admin",
                            ],
                            "not_namespaces": ["test"],
                        }
                    ],
                    "to": [
                        {"methods": ["GET", "HEAD"], "paths": ["/api/*"], "ports": [15006, 8080], "not_hosts": ["*.internal"]}
                    ],
                }
            ],
        },
    ]
    api = listener(snapshot, "admin-in")["authorization"]
    assert api["policies"] == [
        {"name": "prod/audit", "action": "AUDIT", "rules": [{}]},
        {"name": "prod/nothing", "action": "ALLOW", "rules": []},
    ]


def test_inbound_listener_without_policies_gets_default_deny_only(load: Load) -> None:
    text = AUTHZ_PROXY.replace("DENY_ALL", "false") + service("web") + service("api", ns="prod")
    snapshot = compile_snapshot(load(text))
    assert listener(snapshot, "inbound")["authorization"] == {"default_deny": False, "policies": []}
