"""Backend failure answers and the snapshot contract, driven in-process with hand-written snapshots.

The file loader refuses a backendRef to a missing Service, so the "all backends invalid" case is
written as the engine receives it: `"backend": null`.
"""

from __future__ import annotations

import json
import socket
from collections import Counter

import httpx
import pytest

from tests.engine.conftest import snap_route, snapshot


def closed_port_address() -> str:
    """An address nothing listens on: a port the kernel gave us, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


def test_invalid_backends_answer_500(upstream_factory, engine_factory):
    up = upstream_factory("v1")
    engine = engine_factory(
        snapshot(
            {"b1": [up.address]},
            [
                snap_route("all-invalid", [(None, 1)], path="/invalid"),
                snap_route("all-invalid-two", [(None, 3), (None, 1)], path="/invalid2"),
                snap_route("half-invalid", [("b1", 1), (None, 1)], path="/half"),
                snap_route("zero", [("b1", 0)], path="/zero"),
                snap_route("none", [], path="/none"),
                snap_route("ok", [("b1", 1)]),
            ],
        )
    )
    with httpx.Client(base_url=engine.url) as client:
        for target in ("/invalid", "/invalid2", "/zero", "/none"):
            for _ in range(3):
                r = client.get(target)
                assert r.status_code == 500, target
                assert "x-upstream" not in r.headers
        half = Counter(client.get("/half").status_code for _ in range(20))
        assert client.get("/").json()["upstream"] == "v1"
    assert half == Counter({200: 10, 500: 10})


def test_backend_without_endpoints_answers_503_and_unreachable_endpoint_502(engine_factory):
    engine = engine_factory(
        snapshot(
            {"empty": [], "down": [closed_port_address()]},
            [snap_route("empty", [("empty", 1)], path="/empty"), snap_route("down", [("down", 1)], path="/down")],
        )
    )
    with httpx.Client(base_url=engine.url) as client:
        assert client.get("/empty").status_code == 503
        assert client.get("/down").status_code == 502


def test_bad_snapshot_is_refused_and_the_old_one_keeps_serving(upstream_factory, engine_factory):
    v1, v2 = upstream_factory.many(["v1", "v2"])
    engine = engine_factory(snapshot({"b1": [v1.address]}, [snap_route("r", [("b1", 1)])], version=1))
    url = engine.url
    assert httpx.get(url).json()["upstream"] == "v1"

    bad = snapshot({"b1": [v2.address]}, [snap_route("r", [("missing-backend", 1)])], version=2)
    with pytest.raises(ValueError):
        engine.apply(bad)
    with pytest.raises(ValueError):
        engine.core.apply("{not json")
    assert engine.core.version() == 1
    assert httpx.get(url).json()["upstream"] == "v1"

    assert engine.apply(snapshot({"b1": [v2.address]}, [snap_route("r", [("b1", 1)])], version=2)) == 2
    assert engine.url == url, "an unchanged listener address must keep its socket"
    assert httpx.get(url).json()["upstream"] == "v2"
    stats = json.loads(engine.core.stats_json())
    assert stats["version"] == 2
