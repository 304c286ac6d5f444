"""`fastmesh proxy --kubernetes` against the test apiserver: live traffic follows the cluster's changes,
GAMMA consumer routes apply only in their namespace, and an invalid HTTPRoute is left out and told so
in its status while the rest keeps serving. Real proxy processes, real upstreams, a real apiserver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from deploy.testcluster import cluster as testcluster
from fastmesh.kube.status import CONTROLLER
from tests.harness import Proxy, Upstream, backend, route, rule, service, traffic_policy
from tests.kube.conftest import create_object, custom, served_by

GATEWAY = ("gateway.networking.k8s.io", "v1")


def _patch_route(kube_api: client.ApiClient, namespace: str, name: str, body: dict[str, Any]) -> None:
    custom(kube_api).patch_namespaced_custom_object(*GATEWAY, namespace, "httproutes", name, body)


def _weights(v1: int, v2: int) -> dict[str, Any]:
    """A merge patch of the reviews route of `mesh`: the same rules, the split v1:v2."""
    return {"spec": {"rules": [
        rule(backend("reviews-v2"), matches=[{"headers": [{"name": "x-version", "value": "v2"}]}]),
        rule(backend("reviews-v1", v1), backend("reviews-v2", v2)),
    ]}}


def _until_only(px: Proxy, who: str, deadline_s: float, host: str = "reviews") -> float:
    """Request until `who` has answered 10 in a row; the time the first of those was sent."""
    streak_start, streak = 0.0, 0
    end = time.monotonic() + deadline_s
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < end:
            sent = time.monotonic()
            response = http.get(f"{px.url}/", headers={"host": host})
            if response.status_code == 200 and response.json()["upstream"] == who:
                streak_start, streak = (streak_start, streak + 1) if streak else (sent, 1)
                if streak == 10:
                    return streak_start
            else:
                streak = 0
    raise AssertionError(f"{who} did not take all the traffic within {deadline_s}s")


def test_a_weight_change_shifts_live_traffic(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], tmp_path: Path,
) -> None:
    reviews_mesh()
    px = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
    kube_proxies.append(px)
    assert served_by(px, 10) == {"v1": 10}

    patched = time.monotonic()
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))
    shifted = _until_only(px, "v2", deadline_s=20) - patched
    print(f"\nweights 100/0 -> 0/100: all traffic on v2 {shifted * 1000:.0f} ms after the patch was sent")

    _patch_route(kube_api, namespace, "reviews", _weights(50, 50))
    px.wait_event("reloaded", timeout=20)
    deadline = time.monotonic() + 20
    while (counts := served_by(px, 40)) and set(counts) != {"v1", "v2"} and time.monotonic() < deadline:
        pass  # the 0/100 snapshot may still be the one serving: the next sample sees the new split
    assert set(counts) == {"v1", "v2"}, counts  # 40 requests 50/50 all on one side: p = 2^-39


def test_removing_an_endpoint_stops_traffic_to_it(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    upstream_factory: Callable[..., Upstream], kube_proxies: list[Proxy], tmp_path: Path, loopback_fqdn: str,
) -> None:
    a, b = upstream_factory.many(["a", "b"])  # type: ignore[attr-defined]
    docs = service("web", [f"{loopback_fqdn}:{a.port}", f"{loopback_fqdn}:{b.port}"], namespace=namespace,
                   address_type="FQDN", lb="round-robin")
    for doc in docs:
        create_object(kube_api, namespace, doc)
    px = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
    kube_proxies.append(px)
    assert served_by(px, 20, host="web") == {"a": 10, "b": 10}

    slice_of_b = next(d["metadata"]["name"] for d in docs
                      if d["kind"] == "EndpointSlice" and d["ports"][0]["port"] == b.port)
    patched = time.monotonic()
    client.DiscoveryV1Api(kube_api).patch_namespaced_endpoint_slice(slice_of_b, namespace, {"endpoints": []})
    gone = _until_only(px, "a", deadline_s=20, host="web") - patched
    print(f"\nendpoint removed: all traffic on the other one {gone * 1000:.0f} ms after the patch was sent")
    assert served_by(px, 30, host="web") == {"a": 30}


def test_a_consumer_route_applies_only_in_its_namespace(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str, other_namespace: str,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], tmp_path: Path,
) -> None:
    producer_ns, consumer_ns = namespace, other_namespace
    reviews_mesh()  # the producer route: all to v1
    consumer = route("reviews-canary", [rule(backend("reviews-v2", namespace=producer_ns))],
                     parent="reviews", namespace=consumer_ns)
    consumer["spec"]["parentRefs"][0]["namespace"] = producer_ns
    create_object(kube_api, consumer_ns, consumer)

    # Both read every namespace (the consumer route and the Service are in two); one status writer at most.
    def proxy_in(ns: str) -> Proxy:
        px = Proxy.start_kubernetes(kube_cluster.kubeconfig, None, tmp_path,
                                    extra_args=["--namespace", ns, "--no-kube-status"])
        kube_proxies.append(px)
        return px

    in_consumer_ns, in_producer_ns = proxy_in(consumer_ns), proxy_in(producer_ns)
    host = f"reviews.{producer_ns}"
    assert served_by(in_consumer_ns, 10, host=host) == {"v2": 10}  # its consumer route replaces the producer's
    assert served_by(in_producer_ns, 10, host=host) == {"v1": 10}  # not its namespace's route: the producer's

    custom(kube_api).delete_namespaced_custom_object(*GATEWAY, consumer_ns, "httproutes", "reviews-canary")
    _until_only(in_consumer_ns, "v1", deadline_s=20, host=host)  # without it, the producer route again


def _route_status(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """Our conditions of the route's first parent for its current generation, by type."""
    obj = custom(kube_api).get_namespaced_custom_object_status(*GATEWAY, namespace, "httproutes", name)
    parents = [p for p in (obj.get("status") or {}).get("parents") or [] if p["controllerName"] == CONTROLLER]
    if not parents:
        return {}
    generation = obj["metadata"]["generation"]
    return {c["type"]: c for c in parents[0]["conditions"] if c["observedGeneration"] == generation}


def _conditions(kube_api: client.ApiClient, plural: str, namespace: str, name: str) -> tuple[str, str] | None:
    """(status, reason) of the Accepted condition of a fastmesh.io object, for its current generation."""
    obj = custom(kube_api).get_namespaced_custom_object_status("fastmesh.io", "v1alpha1", namespace, plural, name)
    found = [c for c in (obj.get("status") or {}).get("conditions") or []
             if c["type"] == "Accepted" and c["observedGeneration"] == obj["metadata"]["generation"]]
    return (found[0]["status"], found[0]["reason"]) if found else None


def _wait_status(kube_api: client.ApiClient, namespace: str, name: str,
                 want: dict[str, tuple[str, str]], timeout: float = 20) -> dict[str, dict[str, Any]]:
    """Poll until the conditions are `want` ({type: (status, reason)})."""
    end = time.monotonic() + timeout
    while True:
        found = _route_status(kube_api, namespace, name)
        if {t: (c["status"], c["reason"]) for t, c in found.items()} == want:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"{namespace}/{name}: conditions {found}, wanted {want}")
        time.sleep(0.1)


ACCEPTED = {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}


def test_an_invalid_httproute_is_left_out_and_told_why(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], tmp_path: Path,
) -> None:
    reviews_mesh()
    for doc in service("ratings", namespace=namespace):
        create_object(kube_api, namespace, doc)
    px = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
    kube_proxies.append(px)
    _wait_status(kube_api, namespace, "reviews", ACCEPTED)

    # A bad regex: the route is left out (Accepted=False), the config is not refused.
    bad_regex = route("reviews-regex", [rule(backend("reviews-v2"), matches=[
        {"path": {"type": "RegularExpression", "value": "/(unclosed"}}])], parent="reviews", namespace=namespace)
    create_object(kube_api, namespace, bad_regex)
    # A backendRef to no Service: accepted, its requests answer 500 (Gateway API), ResolvedRefs=False.
    create_object(kube_api, namespace, route("ratings", [rule(backend("nowhere"))], parent="ratings",
                                             namespace=namespace))
    conditions = _wait_status(kube_api, namespace, "reviews-regex",
                              {"Accepted": ("False", "UnsupportedValue"), "ResolvedRefs": ("True", "ResolvedRefs")})
    assert "spec.rules[0].matches[0].path.value" in conditions["Accepted"]["message"]
    assert "invalid regular expression" in conditions["Accepted"]["message"]
    conditions = _wait_status(kube_api, namespace, "ratings",
                              {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")})
    assert f"Service {namespace}/nowhere not found" in conditions["ResolvedRefs"]["message"]
    _wait_status(kube_api, namespace, "reviews", ACCEPTED)

    # The running config is undisturbed, and changes to the valid routes still apply.
    assert not [e for e in px.events if e["event"] == "reload_failed"], px.events
    assert served_by(px, 10) == {"v1": 10}  # the bad route's /(unclosed rule is not there
    assert httpx.get(f"{px.url}/", headers={"host": "ratings"}, timeout=5).status_code == 500
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))
    _until_only(px, "v2", deadline_s=20)

    # fastmesh.io objects get an Accepted condition too.
    create_object(kube_api, namespace, {**traffic_policy("nowhere", retry={"attempts": 2}),
                                        "metadata": {"name": "to-nowhere"}})
    create_object(kube_api, namespace, traffic_policy("reviews-v1", retry={"attempts": 2}))
    for name, want in (("to-nowhere", ("False", "Invalid")), ("reviews-v1-policy", ("True", "Accepted"))):
        end = time.monotonic() + 20
        while (got := _conditions(kube_api, "trafficpolicies", namespace, name)) != want:
            assert time.monotonic() < end, (name, got)
            time.sleep(0.1)

    # Fixed, the route is taken and its status says so.
    _patch_route(kube_api, namespace, "reviews-regex", {"spec": {"rules": [rule(backend("reviews-v1"), matches=[
        {"path": {"type": "PathPrefix", "value": "/v1"}}])]}})
    _wait_status(kube_api, namespace, "reviews-regex", ACCEPTED)
    response = httpx.get(f"{px.url}/v1/x", headers={"host": "reviews"}, timeout=5)
    assert response.json()["upstream"] == "v1"


def test_without_rbac_for_status_the_proxy_serves_and_writes_none(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], tmp_path: Path,
) -> None:
    reviews_mesh()
    # A ServiceAccount that may read the mesh's kinds, not write status.
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "proxy"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "mesh-reader"}, "rules": [
        {"apiGroups": ["", "discovery.k8s.io", "gateway.networking.k8s.io", "fastmesh.io"], "resources": ["*"],
         "verbs": ["get", "list", "watch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "proxy-reads-mesh"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mesh-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "proxy", "namespace": namespace}]})
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    config = json.loads(Path(kube_cluster.kubeconfig).read_text())
    config["users"][0]["user"]["token"] = core.create_namespaced_service_account_token("proxy", namespace, request).status.token
    kubeconfig = tmp_path / "proxy.kubeconfig"
    kubeconfig.write_text(json.dumps(config))

    px = Proxy.start_kubernetes(kubeconfig, namespace, tmp_path)
    kube_proxies.append(px)
    assert served_by(px, 10) == {"v1": 10}
    deadline = time.monotonic() + 20
    while "no RBAC to write status" not in px.stderr_tail(200):
        assert time.monotonic() < deadline, px.stderr_tail()
        time.sleep(0.1)
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))  # it still follows the cluster
    _until_only(px, "v2", deadline_s=20)
    obj = custom(kube_api).get_namespaced_custom_object_status(*GATEWAY, namespace, "httproutes", "reviews")
    assert not (obj.get("status") or {}).get("parents"), obj["status"]
    assert px.stderr_tail(200).count("no RBAC to write status") == 1  # said once, not per load
