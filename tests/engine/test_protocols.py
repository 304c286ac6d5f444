"""HTTP/1.1 and h2c on one listener; the upstream protocol follows the Service's appProtocol."""

from __future__ import annotations

import pytest

from tests.harness import backend, curl, mesh_config, route, rule, service


def test_http1_and_h2c_prior_knowledge_are_served_on_the_same_listener(upstream_factory, proxy_factory, require_tools):
    require_tools("curl")
    up = upstream_factory("v1")
    px = proxy_factory(mesh_config(services={"echo": [up.address]}))

    with px.client() as h1:
        r1 = h1.get("/one", headers={"host": "echo"})
    with px.client(http2=True) as h2:
        r2 = h2.get("/two", headers={"host": "echo"})
    assert (r1.status_code, r1.http_version, r1.json()["path"]) == (200, "HTTP/1.1", "/one")
    assert (r2.status_code, r2.http_version, r2.json()["path"]) == (200, "HTTP/2", "/two")

    for flag, version in (("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")):
        done = curl(flag, "-H", "host: echo", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"{px.url}/c")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"200 {version}"


@pytest.mark.parametrize("downstream_h2", [False, True], ids=["client-h1", "client-h2"])
def test_upstream_protocol_follows_the_service_app_protocol(upstream_factory, proxy_factory, downstream_h2):
    plain, h2c = upstream_factory("plain"), upstream_factory("h2c", http2=True)
    px = proxy_factory(
        mesh_config(services=[service("plain", [plain.address]), service("grpcish", [h2c.address], h2c=True)])
    )
    with px.client(http2=downstream_h2) as client:
        to_plain = client.get("/", headers={"host": "plain"}).json()
        to_h2c = client.get("/", headers={"host": "grpcish"}).json()
    assert (to_plain["upstream"], to_plain["http_version"]) == ("plain", "1.1")
    assert (to_h2c["upstream"], to_h2c["http_version"]) == ("h2c", "2")


@pytest.mark.parametrize(("protocol", "version"), [("HTTP", "1.1"), ("H2C", "2")])
def test_external_service_backends_use_their_declared_protocol(upstream_factory, proxy_factory, protocol, version):
    up = upstream_factory("outside", http2=protocol == "H2C")
    px = proxy_factory(
        mesh_config(
            routes=[
                route(
                    "to-outside",
                    [rule(backend("outside", group="fastmesh.io", kind="ExternalService"))],
                    hostnames=["outside.example"],
                )
            ],
            proxy={"externalServices": [{"name": "outside", "protocol": protocol, "endpoints": [up.address]}]},
        )
    )
    seen = px.get("/x", host="outside.example").json()
    assert (seen["upstream"], seen["http_version"], seen["path"]) == ("outside", version, "/x")
