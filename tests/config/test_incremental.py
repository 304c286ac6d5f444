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
            "spec": {"listeners": [{"name": "outbound", "port": port}]}}


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
        return "HTTPRoute", route(rng.randrange(services + 2), services), None
    if roll < 0.92:
        return "TrafficPolicy", traffic_policy(rng.randrange(services)), None
    return "Proxy", proxy(rng.choice(("mesh", "other")), rng.choice((15001, 15002))), None


@pytest.mark.parametrize("seed", range(4))
def test_incremental_matches_a_full_compile_over_random_changes(seed: int) -> None:
    rng = random.Random(seed)
    listed: Listed = {**cluster(services=40, endpoints=600, routes=10, policies=5), "Proxy": [proxy("mesh")]}
    listed["EndpointSlice"].append(endpoint_slice(3, 9, 0, 2))  # a second slice of a Service
    overrides = Overrides(listeners={"outbound": "127.0.0.1:0"})
    compiler = IncrementalCompiler(SOURCE, proxy_namespace="mesh", namespace="ns1", overrides=overrides)
    first = compiler.apply(everything(copy.deepcopy(listed)))
    assert (first.header, first.snapshot_json) == full(listed, "mesh", "ns1", overrides)
    incremental = 0
    for generation in range(1, 100):
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
    assert incremental > 30  # most slice changes took the incremental path


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
