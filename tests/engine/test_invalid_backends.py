"""A rule with no backend to send to answers 500, from the user's file through the real proxy.

The loader accepts both cases (the Gateway API allows them): a rule with no backendRefs and no
redirect, and a rule whose backendRefs all have weight 0. tests/engine/test_backends_inprocess.py
covers the same answers on hand-written snapshots; this is the whole path, file to client.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Proxy, Upstream, backend, mesh_config, route, rule, service


def path(value: str) -> list[dict[str, object]]:
    return [{"path": {"type": "PathPrefix", "value": value}}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("invalid-backends")
    up = Upstream.start("v1", log_dir=tmp)
    try:
        rules = [
            rule(matches=path("/none")),  # no backendRefs, no filters
            rule(backend("v1", 0), backend("v2", 0), matches=path("/zero")),
            rule(backend("v1"), matches=path("/")),
        ]
        config = mesh_config(
            services=[service("v1", [up.address]), service("v2", [up.address]), service("app")],
            routes=[route("app", rules, parent="app")],
        )
        px = Proxy.start(config, tmp)
        try:
            yield px
        finally:
            px.terminate()
    finally:
        up.stop()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("target", ["/none", "/none/deeper", "/zero", "/zero?x=1"])
def test_rule_without_a_backend_to_send_to_answers_500(mesh: Proxy, target: str, http2: bool) -> None:
    with mesh.client(http2=http2) as client:
        for _ in range(3):  # every time, not only the first pick
            r = client.get(target, headers={"host": "app"})
            assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert r.status_code == 500, r.text
            assert "x-upstream" not in r.headers
        ok = client.get("/ok", headers={"host": "app"})  # the same connection still serves
        assert (ok.status_code, ok.json()["upstream"]) == (200, "v1")


def test_the_500s_are_counted_on_their_route(mesh: Proxy) -> None:
    with mesh.client() as client:
        assert client.get("/zero", headers={"host": "app"}).status_code == 500
    text = httpx.get(mesh.admin_url + "/metrics", timeout=5).text
    lines = [line for line in text.splitlines()
             if line.startswith("fastmesh_requests_total{") and 'route="default/app/rule/1"' in line]
    assert lines and all('code_class="5xx"' in line for line in lines), lines
