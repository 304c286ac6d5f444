"""fastmesh.config.incremental: the same snapshot and reports as a full compile of the cluster's objects
(the path `fastmesh proxy --kubernetes` took before: render -> worker --cluster), after any change
sequence; and EndpointSlice changes compile only what they touch."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from bench.synthetic_cluster import address, changed_slice, cluster, endpoint_slice, route, service, traffic_policy
from fastmesh.config.incremental import IncrementalCompiler
from fastmesh.config.worker import compile_content
from fastmesh.kube.source import documents, render
from fastmesh.overrides import Overrides

SOURCE = "kubernetes https://127.0.0.1:6443"
Listed = dict[str, list[dict[str, Any]]]


def full(listed: Listed, proxy_namespace: str | None = None, namespace: str | None = None,
         overrides: Overrides | None = None) -> tuple[dict[str, Any], str | None]:
    """What the worker makes of the same objects: the reference."""
    content = render(documents(listed, proxy_namespace))
    return compile_content(content, SOURCE, overrides or Overrides(), cluster=True, namespace=namespace)


def everything(listed: Listed) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, obj) for kind, objs in listed.items() for obj in objs]


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def upsert(listed: Listed, kind: str, obj: dict[str, Any]) -> None:
    objs = listed.setdefault(kind, [])
    objs[:] = [o for o in objs if key(o) != key(obj)] + [obj]


def proxy(namespace: str, port: int = 15001) -> dict[str, Any]:
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "Proxy",
            "metadata": {"name": "proxy", "namespace": namespace},
            "spec": {"listeners": [{"name": "outbound", "port": port},
                                   {"name": "inbound", "port": port + 100, "inboundService": "ns1/svc-1"}]}}


def random_change(listed: Listed, rng: random.Random, generation: int) -> tuple[str, dict[str, Any] | None,
                                                                                 tuple[str, str, str] | None]:
    """One change as a watch would see it: (kind, new object or None, deleted key or None)."""
    services = len(listed["Service"]) or 1
    roll = rng.random()
    if roll < 0.45:
        return "EndpointSlice", changed_slice(listed, rng, generation), None
    if roll < 0.55 and listed["EndpointSlice"]:
        gone = rng.choice(listed["EndpointSlice"])
        return "EndpointSlice", None, ("EndpointSlice", *key(gone))
    if roll < 0.62:  # a slice that fails a check or the schema, or names a Service that is not there
        bad = endpoint_slice(rng.randrange(services + 3), 7, 0, 3, generation=generation)
        what = rng.choice(("address", "label", "schema", "port", "none"))
        if what == "address":
            bad["endpoints"][0]["addresses"] = ["010.0.0.1"]
        elif what == "label":
            del bad["metadata"]["labels"]["kubernetes.io/service-name"]
        elif what == "schema":
            bad["endpoints"][1]["addresses"] = []
        elif what == "port":
            bad["ports"][0]["name"] = "nope"
        return "EndpointSlice", bad, None
    if roll < 0.72:
        i = rng.randrange(services + 2)
        svc = service(i)
        if rng.random() < 0.3:
            svc["spec"]["ports"][0]["name"] = "Bad_Name"  # left out: its slices and routes go with it
        return "Service", svc, None
    if roll < 0.77 and listed["Service"]:
        gone = rng.choice(listed["Service"])
        return "Service", None, ("Service", *key(gone))
    if roll < 0.87:
        return "HTTPRoute", changed_route(listed, rng, services), None
    if roll < 0.89 and listed.get("HTTPRoute"):
        gone = rng.choice(listed["HTTPRoute"])
        return "HTTPRoute", None, ("HTTPRoute", *key(gone))
    if roll < 0.92:
        return "TrafficPolicy", traffic_policy(rng.randrange(services)), None
    if roll < 0.95:
        return "AuthorizationPolicy", authorization_policy(rng, services), None
    if roll < 0.96 and listed.get("AuthorizationPolicy"):
        gone = rng.choice(listed["AuthorizationPolicy"])
        return "AuthorizationPolicy", None, ("AuthorizationPolicy", *key(gone))
    return "Proxy", proxy(rng.choice(("mesh", "other")), rng.choice((15001, 15002))), None


def authorization_policy(rng: random.Random, services: int) -> dict[str, Any]:
    """An AuthorizationPolicy of ns1 (the proxy's listener serves ns1/svc-1): on a Service or the
    namespace, ALLOW or DENY; now and then one that fails a check (a bad method; a Service not there)."""
    spec: dict[str, Any] = {"action": rng.choice(("ALLOW", "DENY")), "rules": [
        {"from": [{"source": {"namespaces": [rng.choice(("ns1", "ns2"))]}}],
         "to": [{"operation": {"methods": [rng.choice(("GET", "POST", "get!"))]}}]}]}
    if rng.random() < 0.7:
        spec["targetRefs"] = [{"kind": "Service", "name": f"svc-{rng.choice((1, 21, services + 1))}"}]
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"authz-{rng.randrange(4)}", "namespace": "ns1"}, "spec": spec}


def changed_route(listed: Listed, rng: random.Random, services: int) -> dict[str, Any]:
    """A new or changed HTTPRoute: a weight, another parent (or a second one), a consumer route (another
    namespace's Service), one that fails a check (left out) or has a backend that is not there (kept,
    reported), one on the listeners (hostnames: the full compile)."""
    existing = listed.get("HTTPRoute") or []
    if existing and rng.random() < 0.6:
        obj = copy.deepcopy(rng.choice(existing))
        if "parentRefs" not in obj["spec"]:  # on the listeners: attach it to a Service again
            obj["spec"] = route(rng.randrange(services), services)["spec"]
    else:
        obj = route(rng.randrange(services + 2), services)
    spec = obj["spec"]
    what = rng.choice(("weight", "weight", "weight", "parent", "parents", "consumer", "regex", "backend",
                       "no-parent", "listener", "precedence"))
    if what == "weight":
        spec["rules"][0]["backendRefs"][0]["weight"] = rng.randrange(0, 100)
    elif what in ("parent", "parents"):
        other = rng.randrange(services + 1)  # one past the last: a parent that is not there
        ref = {"group": "", "kind": "Service", "name": f"svc-{other}", "namespace": f"ns{other % 20}"}
        spec["parentRefs"] = [ref] if what == "parent" else spec["parentRefs"] + [ref]
    elif what == "consumer":  # in the proxy's namespace (ns1), on another namespace's Service
        obj["metadata"]["namespace"] = "ns1"
        for ref in spec["parentRefs"]:
            ref.setdefault("namespace", f"ns{int(ref['name'].split('-')[1]) % 20}")
        for rule in spec["rules"]:
            for ref in rule.get("backendRefs", []):
                ref.setdefault("namespace", spec["parentRefs"][0]["namespace"])
    elif what == "regex":
        spec["rules"][0]["matches"][0]["path"] = {"type": "RegularExpression", "value": "/(a"}
    elif what == "backend":
        spec["rules"][1]["backendRefs"][0]["name"] = "svc-nope"
    elif what == "no-parent":
        spec["parentRefs"][0]["name"] = "svc-nope"
    elif what == "listener":
        spec.pop("parentRefs")
        spec["hostnames"] = [rng.choice(("a.example.com", "*.example.com"))]
    elif what == "precedence":  # the same match as the other routes of the Service: precedence decides
        spec["rules"][0]["matches"][0]["headers"] = []
        obj["metadata"]["creationTimestamp"] = rng.choice(("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"))
    return obj


@pytest.mark.parametrize("seed", range(4))
def test_incremental_matches_a_full_compile_over_random_changes(seed: int) -> None:
    rng = random.Random(seed)
    listed: Listed = {**cluster(services=40, endpoints=600, routes=10, policies=5), "Proxy": [proxy("mesh")]}
    listed["Service"].append(service(41) | {"metadata": {**service(41)["metadata"], "name": "svc-2"}})  # svc-2 in ns1 and ns2: no bare name
    listed["EndpointSlice"].append(endpoint_slice(3, 9, 0, 2))  # a second slice of a Service
    # a TrafficPolicy on an HTTPRoute of ns4: a route change there is a full compile
    listed["TrafficPolicy"].append({
        "apiVersion": "fastmesh.io/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "on-route", "namespace": "ns4"},
        "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "route-4"},
                 "retry": {"attempts": 1}}})
    overrides = Overrides(listeners={"outbound": "127.0.0.1:0", "inbound": "127.0.0.1:0"})
    compiler = IncrementalCompiler(SOURCE, proxy_namespace="mesh", namespace="ns1", overrides=overrides)
    first = compiler.apply(everything(copy.deepcopy(listed)))
    assert (first.header, first.snapshot_json) == full(listed, "mesh", "ns1", overrides)
    incremental = routes_incremental = policies_incremental = 0
    for generation in range(1, 150):
        kind, obj, deleted = random_change(listed, rng, generation)
        if obj is not None:
            upsert(listed, kind, obj)
        if deleted is not None:
            listed[kind] = [o for o in listed[kind] if key(o) != deleted[1:]]
        result = compiler.apply([(kind, copy.deepcopy(obj))] if obj else [], [deleted] if deleted else [])
        header, snapshot = full(listed, "mesh", "ns1", overrides)
        assert "problems" not in header
        assert result.header == header, f"step {generation}: {kind} {obj and key(obj)} {deleted}"
        assert result.snapshot_json == snapshot, f"step {generation}: {kind} {obj and key(obj)} {deleted}"
        incremental += result.incremental
        routes_incremental += result.incremental and kind == "HTTPRoute"
        policies_incremental += result.incremental and kind == "AuthorizationPolicy"
    assert incremental > 45  # most slice changes took the incremental path
    assert routes_incremental > 5  # and route changes (not after a Service was left out)
    assert policies_incremental > 1


def test_an_endpointslice_change_compiles_only_its_service() -> None:
    listed = cluster(services=50, endpoints=500, routes=5, policies=5)
    compiler = IncrementalCompiler(SOURCE)
    compiler.apply(everything(listed))
    assert compiler.full_compiles == 1
    changed = endpoint_slice(7, 0, 0, 4, ready_every=2)
    result = compiler.apply([("EndpointSlice", changed)])
    assert result.incremental and compiler.full_compiles == 1
    backends = {b["name"]: b["endpoints"] for b in json.loads(result.snapshot_json)["backends"]}
    assert backends["ns7/svc-7:8080"] == [f"{address(7, 1)}:8080", f"{address(7, 3)}:8080"]  # ready of 0..3
    # a Service change is a full compile (cached models: nothing is parsed again)
    result = compiler.apply([("Service", service(7))])
    assert not result.changed and compiler.full_compiles == 1  # the same content: nothing to do
    svc = service(7)
    svc["metadata"]["annotations"] = {"fastmesh.io/load-balancer": "round-robin"}
    result = compiler.apply([("Service", svc)])
    assert not result.incremental and compiler.full_compiles == 2


def test_a_status_only_change_is_no_change() -> None:
    """resourceVersion and status move on with every write (ours too): no new snapshot."""
    compiler = IncrementalCompiler(SOURCE)
    slice_ = endpoint_slice(1, 0, 0, 3)
    compiler.apply([("Service", service(1)), ("EndpointSlice", slice_)])
    moved = copy.deepcopy(slice_)
    moved["metadata"]["resourceVersion"] = "999999"
    moved["status"] = {"anything": True}
    result = compiler.apply([("EndpointSlice", moved)])
    assert not result.changed and result.version == 1


def test_a_refused_config_is_compiled_again_on_the_next_apply() -> None:
    compiler = IncrementalCompiler(SOURCE, overrides=Overrides(listeners={"nope": "127.0.0.1:0"}))
    with pytest.raises(Exception, match="no listener named 'nope'"):
        compiler.apply([("Service", service(1))])
    with pytest.raises(Exception, match="no listener named 'nope'"):
        compiler.apply([])  # nothing changed, but there is no good result to give back
    compiler.overrides = Overrides()
    assert compiler.apply([]).version == 1


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'Pod'"):
        IncrementalCompiler(SOURCE).apply([("Pod", {"metadata": {"name": "p"}})])


def test_replace_kinds_removes_what_a_relist_no_longer_has() -> None:
    listed = cluster(services=6, endpoints=30, routes=2, policies=1)
    compiler = IncrementalCompiler(SOURCE)
    compiler.apply(everything(listed))
    del listed["EndpointSlice"][2]
    listed["Service"].pop()
    result = compiler.apply(everything(listed), replace_kinds=["Service", "EndpointSlice"])
    assert (result.header, result.snapshot_json) == full(listed)


def test_an_httproute_change_compiles_only_the_vhosts_of_its_services() -> None:
    listed = cluster(services=50, endpoints=500, routes=5, policies=5)
    compiler = IncrementalCompiler(SOURCE)
    compiler.apply(everything(listed))
    moved = copy.deepcopy(listed["HTTPRoute"][1])  # route-10 on ns10/svc-10, moved to ns10/svc-30
    assert moved["spec"]["parentRefs"][0]["name"] == "svc-10"
    moved["spec"]["parentRefs"] = [{"group": "", "kind": "Service", "name": "svc-30", "port": 8080}]
    result = compiler.apply([("HTTPRoute", moved)])
    assert result.incremental and compiler.full_compiles == 1
    upsert(listed, "HTTPRoute", moved)
    assert (result.header, result.snapshot_json) == full(listed)
    vhosts = {v["name"]: v["routes"] for v in json.loads(result.snapshot_json)["vhosts"]}
    assert [r["name"] for r in vhosts["ns10/svc-10"]] == ["ns10/svc-10/default"]  # the route left it
    assert {r["name"].split("/rule")[0] for r in vhosts["ns10/svc-30"]} == {"ns10/route-10", "ns10/route-30"}
    # a route that fails a check is left out and reported, incrementally too
    bad = copy.deepcopy(moved)
    bad["spec"]["rules"][0]["matches"][0]["path"] = {"type": "RegularExpression", "value": "/(a"}
    result = compiler.apply([("HTTPRoute", bad)])
    assert result.incremental and compiler.full_compiles == 1
    upsert(listed, "HTTPRoute", bad)
    assert (result.header, result.snapshot_json) == full(listed)
    assert [o["name"] for o in result.header["objects"] if o["left_out"]] == ["route-10"]
