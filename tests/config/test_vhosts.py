"""The host index of compile_vhosts: lookups that find exactly the routes `covers` says serve a host."""

from __future__ import annotations

import json
import random

from fastmesh.config import load_text
from fastmesh.config.snapshot.precedence import covers
from fastmesh.config.snapshot.vhosts import _HostIndex

LABELS = ["a", "b", "foo", "example", "com"]


def _hostname(rng: random.Random) -> str:
    name = ".".join(rng.choice(LABELS) for _ in range(rng.randint(1, 4)))
    return f"*.{name}" if rng.random() < 0.4 else name


def _routes_yaml(rng: random.Random) -> str:
    docs = []
    for i in range(rng.randint(1, 12)):
        hostnames = sorted({_hostname(rng) for _ in range(rng.randint(0, 3))})
        docs.append(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: r{i}}}\nspec: {{hostnames: {json.dumps(hostnames)}}}\n"
        )
    return "---\n".join(docs)


def test_serving_is_every_route_whose_hostnames_cover_the_host_in_file_order() -> None:
    rng = random.Random(7)
    for _ in range(300):
        routes = load_text(_routes_yaml(rng)).routes
        index = _HostIndex(routes)
        hosts = {h for r in routes for h in r.spec.hostnames} | {"*", "x.y", "a.b.foo.example.com"}
        for host in hosts:
            expected = [r for r in routes if not r.spec.hostnames or any(covers(h, host) for h in r.spec.hostnames)]
            assert [r.name for r in index.serving(host)] == [r.name for r in expected], host


def test_a_route_with_two_covering_hostnames_is_listed_once() -> None:
    (route,) = load_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec: {hostnames: ['*.example.com', '*.b.example.com', a.b.example.com]}\n"
    ).routes
    assert [r.name for r in _HostIndex([route]).serving("a.b.example.com")] == ["r"]
