"""What the proxy does to headers: hop-by-hop removed both ways, Host kept, x-forwarded-*, x-request-id."""

from __future__ import annotations

import http.client
import json
import re

import pytest

from tests.harness import mesh_config, service

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HOP_BY_HOP_RESPONSE = {"connection": "x-bar", "x-bar": "1", "keep-alive": "timeout=9", "proxy-connection": "keep-alive"}


@pytest.fixture
def echo(upstream_factory, proxy_factory):
    up = upstream_factory("v1")
    return proxy_factory(mesh_config(services={"echo": [up.address]}))


def test_hop_by_hop_request_headers_are_removed(echo):
    conn = http.client.HTTPConnection(echo.address, timeout=10)
    conn.putrequest("GET", "/", skip_host=True, skip_accept_encoding=True)
    for name, value in [
        ("Host", "echo"),
        ("Connection", "keep-alive, X-Foo"),
        ("X-Foo", "listed in Connection"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "gzip"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("X-Kept", "1"),
    ]:
        conn.putheader(name, value)
    conn.endheaders()
    seen = json.loads(conn.getresponse().read())["headers"]
    conn.close()

    assert seen["x-kept"] == "1"
    for name in ("x-foo", "keep-alive", "proxy-connection", "te", "proxy-authorization"):
        assert name not in seen, f"{name} reached the upstream: {seen}"
    assert "x-foo" not in seen.get("connection", "").lower()


def test_te_trailers_is_the_one_te_forwarded(upstream_factory, proxy_factory):
    up = upstream_factory("v1", http2=True)
    px = proxy_factory(mesh_config(services=[service("grpcish", [up.address], h2c=True)]))
    with px.client(http2=True) as client:
        seen = client.get("/", headers={"host": "grpcish", "te": "trailers"}).json()["headers"]
    assert seen.get("te") == "trailers"


@pytest.mark.parametrize("http2", [False, True], ids=["client-h1", "client-h2"])
def test_hop_by_hop_response_headers_are_removed(echo, http2):
    query = "&".join(f"header={name}:{value}" for name, value in HOP_BY_HOP_RESPONSE.items())
    # An HTTP/2 client (h2 in httpx) refuses connection-specific headers: forwarding them would fail here.
    with echo.client(http2=http2) as client:
        r = client.get(f"/?{query}&header=x-kept:1", headers={"host": "echo"})
    assert r.status_code == 200
    assert r.headers["x-kept"] == "1"
    for name in ("x-bar", "keep-alive", "proxy-connection"):
        assert name not in r.headers, f"{name} reached the client: {dict(r.headers)}"
    assert "x-bar" not in r.headers.get("connection", "")


@pytest.mark.parametrize(
    ("http2", "h2c", "host"),
    [(False, False, "echo:8080"), (True, False, "echo"), (False, True, "echo:8080"), (True, True, "echo")],
    ids=["h1-to-h1", "h2-to-h1", "h1-to-h2c", "h2-to-h2c"],
)
def test_host_and_authority_are_preserved(upstream_factory, proxy_factory, http2, h2c, host):
    up = upstream_factory("v1", http2=h2c)
    px = proxy_factory(mesh_config(services=[service("echo", [up.address], h2c=h2c)]))
    with px.client(http2=http2) as client:
        seen = client.get("/", headers={"host": host}).json()
    assert seen["http_version"] == ("2" if h2c else "1.1")
    assert seen["headers"]["host"] == host


def test_x_forwarded_for_and_proto_are_set(echo):
    with echo.client() as client:
        fresh = client.get("/", headers={"host": "echo"}).json()["headers"]
        chained = client.get("/", headers={"host": "echo", "x-forwarded-for": "10.1.2.3"}).json()["headers"]
    assert fresh["x-forwarded-for"] == "127.0.0.1"
    assert fresh["x-forwarded-proto"] == "http"
    assert re.fullmatch(r"10\.1\.2\.3,\s*127\.0\.0\.1", chained["x-forwarded-for"]), chained["x-forwarded-for"]


def test_x_request_id_is_generated_when_absent_and_kept_when_present(echo):
    with echo.client() as client:
        first = client.get("/", headers={"host": "echo"}).json()["headers"]["x-request-id"]
        second = client.get("/", headers={"host": "echo"}).json()["headers"]["x-request-id"]
        kept = client.get("/", headers={"host": "echo", "x-request-id": "abc-123"}).json()["headers"]
    assert UUID4.match(first), first
    assert UUID4.match(second), second
    assert first != second
    assert kept["x-request-id"] == "abc-123"
