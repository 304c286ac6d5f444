"""A synthetic cluster for the scale bench and tests: Services, EndpointSlices, HTTPRoutes, TrafficPolicies.

The objects are dicts as the Kubernetes API serves them (`metadata.uid`, `creationTimestamp`,
`resourceVersion`), so they go through `fastmesh.kube.source.project` like watched objects do.
`cluster(services, endpoints)` spreads `endpoints` over the Services: most get the average, one in
a hundred gets ten times more and so spans several slices (at most `SLICE_MAX` endpoints each).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SLICE_MAX = 100
NAMESPACES = 20
BIG_EVERY = 100  # one Service in BIG_EVERY has BIG_FACTOR times the average endpoints
BIG_FACTOR = 20
PORT = 8080

Obj = dict[str, Any]


def _meta(name: str, namespace: str, n: int, **extra: Any) -> Obj:
    return {"name": name, "namespace": namespace, "uid": f"00000000-0000-0000-0000-{n:012d}",
            "resourceVersion": str(1000 + n), "creationTimestamp": "2026-11-01T00:00:00Z", **extra}


def service(i: int) -> Obj:
    ns = f"ns{i % NAMESPACES}"
    ports = [{"name": "http", "port": PORT, "protocol": "TCP", "targetPort": PORT}]
    if i % 10 == 0:
        ports.append({"name": "grpc", "port": 9090, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"})
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"svc-{i}", ns, i),
            "spec": {"type": "ClusterIP", "clusterIP": f"10.96.{i // 256 % 256}.{i % 256}", "ports": ports}}


def address(i: int, e: int) -> str:
    n = i * 1000 + e
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def endpoint_slice(i: int, s: int, first: int, count: int, *, ready_every: int = 0, generation: int = 0) -> Obj:
    """Slice `s` of Service `i`: endpoints first..first+count-1 (every `ready_every`-th not ready)."""
    ns = f"ns{i % NAMESPACES}"
    endpoints = [
        {"addresses": [address(i, e)], "conditions": {"ready": not (ready_every and e % ready_every == 0)},
         "nodeName": f"node-{e % 50}", "targetRef": {"kind": "Pod", "name": f"svc-{i}-{e}", "namespace": ns}}
        for e in range(first, first + count)
    ]
    ports = [{"name": "http", "port": PORT, "protocol": "TCP"}]
    if i % 10 == 0:
        ports.append({"name": "grpc", "port": 9090, "protocol": "TCP"})
    labels = {"kubernetes.io/service-name": f"svc-{i}", "endpointslice.kubernetes.io/managed-by": "bench"}
    meta = _meta(f"svc-{i}-{s:05x}", ns, 10_000_000 + i * 100 + s + generation * 1_000_000_000, labels=labels)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}


def slices_of(i: int, count: int) -> Iterator[Obj]:
    for s, first in enumerate(range(0, count, SLICE_MAX)):
        yield endpoint_slice(i, s, first, min(SLICE_MAX, count - first))


def route(j: int, services: int) -> Obj:
    """A GAMMA route on Service j: a header match to a canary split, and a default rule."""
    i, other = j, (j + 1) % services
    ns = f"ns{i % NAMESPACES}"
    other_ref = {"name": f"svc-{other}", "port": PORT, "weight": 10}
    if other % NAMESPACES != i % NAMESPACES:
        other_ref = {"name": f"svc-{i}", "port": PORT, "weight": 10}
    spec = {
        "parentRefs": [{"group": "", "kind": "Service", "name": f"svc-{i}", "port": PORT}],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                          "headers": [{"name": "x-canary", "value": "true"}]}],
             "filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "x-route", "value": f"r{j}"}]}}],
             "backendRefs": [{"name": f"svc-{i}", "port": PORT, "weight": 90}, other_ref]},
            {"backendRefs": [{"name": f"svc-{i}", "port": PORT}]},
        ],
    }
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": _meta(f"route-{j}", ns, 20_000_000 + j), "spec": spec}


def traffic_policy(i: int) -> Obj:
    ns = f"ns{i % NAMESPACES}"
    spec = {"targetRef": {"group": "", "kind": "Service", "name": f"svc-{i}"},
            "retry": {"attempts": 2, "retryOn": ["connect-failure", "5xx"]},
            "connectTimeout": "1s"}
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "TrafficPolicy",
            "metadata": _meta(f"policy-{i}", ns, 30_000_000 + i), "spec": spec}


def endpoint_counts(services: int, endpoints: int) -> list[int]:
    """Endpoints per Service, summing to `endpoints`."""
    big = services // BIG_EVERY
    weights = [BIG_FACTOR if i % BIG_EVERY == 0 and big else 1 for i in range(services)]
    total = sum(weights)
    counts = [endpoints * w // total for w in weights]
    for i in range(endpoints - sum(counts)):
        counts[i % services] += 1
    return counts


def cluster(services: int = 10_000, endpoints: int = 100_000, routes: int = 1_000,
            policies: int = 500) -> dict[str, list[Obj]]:
    """The objects by kind, as `KubeSource.listed` holds them."""
    counts = endpoint_counts(services, endpoints)
    return {
        "Service": [service(i) for i in range(services)],
        "EndpointSlice": [s for i in range(services) for s in slices_of(i, counts[i])],
        "HTTPRoute": [route(j * (services // max(routes, 1)), services) for j in range(routes)],
        "TrafficPolicy": [traffic_policy(i * (services // max(policies, 1)) + 1) for i in range(policies)],
    }


def changed_slice(listed: dict[str, list[Obj]], rng: random.Random, generation: int) -> Obj:
    """One existing EndpointSlice with a different set of ready endpoints (as a scale-up/down makes)."""
    old = rng.choice(listed["EndpointSlice"])
    _, i, s = old["metadata"]["name"].split("-")  # svc-<i>-<s>
    i, s = int(i), int(s, 16)
    count = len(old["endpoints"])
    return endpoint_slice(i, s, s * SLICE_MAX, min(SLICE_MAX, max(1, count + rng.choice((-1, 1)))),
                          ready_every=rng.choice((0, 3, 7)), generation=generation)
