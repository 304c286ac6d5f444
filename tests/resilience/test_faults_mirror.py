"""Fault injection and request mirroring end to end: FaultInjection (ExtensionRef) and RequestMirror in YAML ->
`fastmesh proxy` -> real hypercorn upstreams counting what they receive; h2load and httpx as clients."""

from __future__ import annotations

import time
from typing import Any

from tests.harness import backend, h2load, mesh_config, route, rule, service
from tests.resilience.test_retries import metric, resilience

N = 10_000


def fault_doc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "FaultInjection", "metadata": {"name": name}, "spec": spec}


def within(observed: int, share: float, n: int, sigmas: float = 5.0) -> bool:
    expected = share * n
    sd = (n * share * (1 - share)) ** 0.5
    return abs(observed - expected) <= sigmas * sd


def test_injected_aborts_and_delays_match_their_percentages(upstream_factory, proxy_factory, require_tools):
    require_tools("h2load")
    up = upstream_factory("web")
    spec = {"delay": {"percentage": {"value": 5}, "fixedDelay": "20ms"}, "abort": {"percentage": {"value": 10}, "httpStatus": 503}}
    filters = [{"type": "ExtensionRef", "extensionRef": {"group": "fastmesh.io", "kind": "FaultInjection", "name": "flaky"}}]
    config = mesh_config(
        services=[service("web", [up.address])],
        routes=[route("web", [rule(backend("web"), filters=filters)], parent="web")],
        extra=[fault_doc("flaky", spec)],
    )
    px = proxy_factory(config)

    result = h2load(px, "web", "-n", str(N), "-c", "4", "-m", "8")
    aborted = result["5xx"]
    assert result["2xx"] + aborted == N, result
    assert within(aborted, 0.10, N), f"{aborted} aborted of {N} (10 %)"
    assert up.stats()["requests"] == N - aborted, "an aborted request never reaches the upstream"
    stats = resilience(px, "default/web/rule/0")
    assert stats["faults"]["abort"] == aborted
    delayed = stats["faults"]["delay"]
    assert within(delayed, 0.05, N), f"{delayed} delayed of {N} (5 %)"
    assert metric(px, "fastmesh_faults_total", route="default/web/rule/0", kind="delay") == delayed


def test_the_mirror_gets_its_share_and_its_answers_are_ignored(upstream_factory, proxy_factory, require_tools):
    require_tools("h2load")
    web = upstream_factory("web")
    shadow = upstream_factory("shadow", fail_status=500, delay_ms=50)
    filters = [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 8080}, "percent": 20}}]
    config = mesh_config(
        services=[service("web", [web.address]), service("shadow", [shadow.address])],
        routes=[route("web", [rule(backend("web"), filters=filters)], parent="web")],
    )
    px = proxy_factory(config)

    result = h2load(px, "web", "-n", str(N), "-c", "4", "-m", "8")
    assert (result["2xx"], result["5xx"]) == (N, 0), "the mirror's 500s never reach the client"
    assert web.stats()["requests"] == N
    mirrored = resilience(px, "default/web/rule/0")["mirrored"]
    assert within(mirrored, 0.20, N), f"{mirrored} mirrored of {N} (20 %)"
    deadline = time.monotonic() + 30
    while shadow.stats()["requests"] < mirrored:
        assert time.monotonic() < deadline, f"{shadow.stats()['requests']} of {mirrored} copies arrived"
        time.sleep(0.1)
    assert shadow.stats()["requests"] == mirrored
    assert metric(px, "fastmesh_mirrored_total", route="default/web/rule/0") == mirrored

    # A POST with a body is copied with its body.
    with px.client() as client:
        for _ in range(50):
            assert client.post("/", headers={"host": "web"}, content=b"x" * 1000).status_code == 200
    time.sleep(0.5)
    assert shadow.stats()["methods"].get("POST", 0) == resilience(px, "default/web/rule/0")["mirrored"] - mirrored
