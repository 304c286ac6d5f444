"""HTTPRoute semantics through the real proxy: hostnames, matches, precedence, filters, weights.

One proxy serves every case (module scope); each case addresses its own parent Service or hostname.
Three upstreams v1, v2, v3 sit behind Services of the same names; a request's answer names the
upstream that served it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.harness import Proxy, Upstream, backend, mesh_config, route, rule, service


def path(kind: str, value: str) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}}


def headers(*pairs: tuple[str, str], kind: str = "Exact") -> dict[str, Any]:
    return {"headers": [{"type": kind, "name": name, "value": value} for name, value in pairs]}


def query(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"queryParams": [{"type": "Exact", "name": name, "value": value} for name, value in pairs]}


def header_modifier(kind: str, set_: dict[str, str], add: dict[str, str], remove: list[str]) -> dict[str, Any]:
    key = "requestHeaderModifier" if kind == "RequestHeaderModifier" else "responseHeaderModifier"
    return {
        "type": kind,
        key: {
            "set": [{"name": k, "value": v} for k, v in set_.items()],
            "add": [{"name": k, "value": v} for k, v in add.items()],
            "remove": remove,
        },
    }


def routes() -> list[dict[str, Any]]:
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    return [
        route("host-exact", [rule(v1)], hostnames=["api.example.com"]),
        route("host-wild", [rule(v2)], hostnames=["*.example.com"]),
        route(
            "paths",
            [
                rule(v1, matches=[path("Exact", "/exact")]),
                rule(v2, matches=[path("PathPrefix", "/prefix")]),
                rule(v3, matches=[path("RegularExpression", "/re/[0-9]+")]),
            ],
            parent="paths",
        ),
        route(
            "hdr",
            [
                rule(v2, matches=[headers(("X-Version", "v2"))]),
                rule(v3, matches=[headers(("x-canary", "yes|true"), kind="RegularExpression")]),
                rule(v1),
            ],
            parent="hdr",
        ),
        route("qry", [rule(v2, matches=[query(("debug", "1"))]), rule(v1)], parent="qry"),
        route("mth", [rule(v2, matches=[{"method": "POST"}]), rule(v1)], parent="mth"),
        # Two routes on one parent; "prec-b" comes first in the file, "prec-a" first by name.
        route(
            "prec-b",
            [
                rule(v2, matches=[path("PathPrefix", "/api")]),
                rule(v3, matches=[path("Exact", "/api/exact")]),
                rule(v3, matches=[{**path("PathPrefix", "/m"), **headers(("x-h", "1"))}]),
                rule(v3, matches=[{**path("PathPrefix", "/h"), **headers(("x-a", "1"), ("x-b", "1"))}]),
                rule(v3, matches=[{**path("PathPrefix", "/q"), **query(("a", "1"), ("b", "1"))}]),
                rule(v2, matches=[path("PathPrefix", "/tie")]),
            ],
            parent="prec",
        ),
        route(
            "prec-a",
            [
                rule(v1, matches=[path("PathPrefix", "/")]),
                rule(v2, matches=[{**path("PathPrefix", "/m"), "method": "GET"}]),
                rule(v2, matches=[{**path("PathPrefix", "/h"), **headers(("x-a", "1"))}]),
                rule(v2, matches=[{**path("PathPrefix", "/q"), **query(("a", "1"))}]),
                rule(v1, matches=[path("PathPrefix", "/tie")]),
            ],
            parent="prec",
        ),
        route(
            "flt",
            [
                rule(
                    v1,
                    matches=[path("PathPrefix", "/reqhdr")],
                    filters=[header_modifier("RequestHeaderModifier", {"x-set": "s"}, {"x-add": "a"}, ["x-remove"])],
                ),
                rule(
                    v1,
                    matches=[path("PathPrefix", "/resphdr")],
                    filters=[
                        header_modifier(
                            "ResponseHeaderModifier", {"x-resp-set": "s"}, {"x-resp-add": "a"}, ["x-upstream-method"]
                        )
                    ],
                ),
                rule(
                    matches=[path("PathPrefix", "/redirect")],
                    filters=[
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {"scheme": "https", "hostname": "example.org", "statusCode": 301},
                        }
                    ],
                ),
                rule(
                    matches=[path("PathPrefix", "/moved")],
                    filters=[
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new-home"}},
                        }
                    ],
                ),
                rule(
                    v1,
                    matches=[path("PathPrefix", "/old")],
                    filters=[
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "hostname": "rewritten.example",
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                            },
                        }
                    ],
                ),
                rule(
                    v1,
                    matches=[path("PathPrefix", "/full")],
                    filters=[
                        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/replaced"}}}
                    ],
                ),
            ],
            parent="flt",
        ),
        route("w0", [rule(backend("v1", 0), backend("v2", 1), backend("v3", 1))], parent="w0"),
    ]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("routing")
    ups = Upstream.start_many(["v1", "v2", "v3"], log_dir=tmp)
    try:
        services = [service(up.name, [up.address]) for up in ups]
        services += [service(parent) for parent in ("paths", "hdr", "qry", "mth", "prec", "flt", "w0")]
        px = Proxy.start(mesh_config(services=services, routes=routes()), tmp)
        try:
            yield px
        finally:
            px.terminate()
    finally:
        for up in ups:
            up.stop()


@pytest.fixture(scope="module", params=["http1", "http2"])
def client(mesh: Proxy, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """Every case twice: HTTP/1.1 (`Host`) and h2c with prior knowledge (`:authority`)."""
    with mesh.client(http2=request.param == "http2") as c:
        spoken = c.get("/", headers={"host": "v1"}).http_version  # one connection carries every case
        assert spoken == {"http1": "HTTP/1.1", "http2": "HTTP/2"}[request.param]
        yield c


def who(client: httpx.Client, target: str, host: str, method: str = "GET", **kwargs: Any) -> str | int:
    """The upstream that answered, or the status code when the proxy answered itself."""
    r = client.request(method, target, headers={"host": host, **kwargs.pop("headers", {})}, **kwargs)
    return r.headers["x-upstream"] if r.status_code == 200 and "x-upstream" in r.headers else r.status_code


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "v1"),
        ("API.Example.COM", "v1"),
        ("api.example.com:8080", "v1"),
        ("foo.example.com", "v2"),
        ("a.b.example.com", "v2"),
        ("example.com", 404),
        ("other.test", 404),
        ("v3", "v3"),  # a Service's own name: its default route
        ("v3.default.svc.cluster.local", "v3"),
    ],
)
def test_hostnames_exact_and_wildcard(client, host, expected):
    assert who(client, "/", host) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/exact", "v1"),
        ("/exact?x=1", "v1"),
        ("/exact/", 404),
        ("/prefix", "v2"),
        ("/prefix/", "v2"),
        ("/prefix/deeper/still", "v2"),
        ("/prefixed", 404),
        ("/re/123", "v3"),
        ("/re/12a", 404),
        ("/re/123/more", 404),
        ("/nothing", 404),
    ],
)
def test_path_exact_prefix_and_regex(client, target, expected):
    assert who(client, target, "paths") == expected


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ({"x-version": "v2"}, "v2"),
        ({"X-VERSION": "v2"}, "v2"),
        ({"x-version": "V2"}, "v1"),
        ({"x-canary": "true"}, "v3"),
        ({"x-canary": "yes"}, "v3"),
        ({"x-canary": "truely"}, "v1"),
        ({}, "v1"),
    ],
)
def test_header_exact_and_regex(client, sent, expected):
    assert who(client, "/", "hdr", headers=sent) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/?debug=1", "v2"), ("/?a=b&debug=1", "v2"), ("/?debug=2", "v1"), ("/?DEBUG=1", "v1"), ("/", "v1")],
)
def test_query_param_match(client, target, expected):
    assert who(client, target, "qry") == expected


def test_method_match(client):
    assert who(client, "/", "mth", method="POST") == "v2"
    assert who(client, "/", "mth", method="GET") == "v1"
    assert who(client, "/", "mth", method="DELETE") == "v1"


@pytest.mark.parametrize(
    ("method", "target", "sent", "expected", "why"),
    [
        ("GET", "/api/exact", {}, "v3", "Exact beats every prefix"),
        ("GET", "/api/x", {}, "v2", "the longer prefix /api beats /, whatever the route order"),
        ("GET", "/other", {}, "v1", "only / matches"),
        ("GET", "/m", {"x-h": "1"}, "v2", "a method match beats a header match"),
        ("POST", "/m", {"x-h": "1"}, "v3", "the header rule is the only one left"),
        ("GET", "/h", {"x-a": "1"}, "v2", "one header match"),
        ("GET", "/h", {"x-a": "1", "x-b": "1"}, "v3", "two header matches beat one"),
        ("GET", "/q?a=1", {}, "v2", "one query match"),
        ("GET", "/q?a=1&b=1", {}, "v3", "two query matches beat one"),
        ("GET", "/tie", {}, "v1", "a full tie goes to the route first by namespace/name"),
    ],
)
def test_precedence_across_two_routes(client, method, target, sent, expected, why):
    assert who(client, target, "prec", method=method, headers=sent) == expected, why


def test_request_header_modifier(client):
    r = client.get("/reqhdr", headers={"host": "flt", "x-set": "orig", "x-add": "orig", "x-remove": "1"})
    seen = r.json()["headers"]
    assert seen["x-set"] == "s"
    assert [v.strip() for v in seen["x-add"].split(",")] == ["orig", "a"]
    assert "x-remove" not in seen


def test_response_header_modifier(client):
    r = client.get("/resphdr?header=x-resp-set:orig", headers={"host": "flt"})
    assert r.status_code == 200
    assert r.headers.get_list("x-resp-set") == ["s"]
    assert r.headers["x-resp-add"] == "a"
    assert "x-upstream-method" not in r.headers
    assert r.headers["x-upstream"] == "v1"


def test_request_redirect(client):
    r = client.get("/redirect/x", headers={"host": "flt"})
    assert r.status_code == 301
    location = urlsplit(r.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "example.org", "/redirect/x")

    r = client.get("/moved/somewhere", headers={"host": "flt:8080"})
    assert r.status_code == 302
    assert r.headers["location"] == "http://flt:8080/new-home"
    assert "x-upstream" not in r.headers


@pytest.mark.parametrize(
    ("target", "expected_path", "expected_query"),
    [("/old/x", "/new/x", ""), ("/old", "/new", ""), ("/old/x?k=v", "/new/x", "k=v")],
)
def test_url_rewrite_prefix_and_hostname(client, target, expected_path, expected_query):
    seen = client.get(target, headers={"host": "flt"}).json()
    assert (seen["path"], seen["query"]) == (expected_path, expected_query)
    assert seen["headers"]["host"] == "rewritten.example"


def test_url_rewrite_full_path(client):
    seen = client.get("/full/anything?x=1", headers={"host": "flt"}).json()
    assert (seen["path"], seen["query"], seen["headers"]["host"]) == ("/replaced", "x=1", "flt")


def test_weight_zero_gets_nothing(client):
    counts = Counter(who(client, "/", "w0") for _ in range(60))
    assert counts["v1"] == 0
    assert counts == Counter({"v2": 30, "v3": 30})


def test_no_route_answers_404(client):
    r = client.get("/", headers={"host": "nobody.invalid"})
    assert r.status_code == 404
    assert "x-upstream" not in r.headers
    assert r.headers.get("content-length") == "0"
