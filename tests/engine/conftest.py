"""Fixtures for driving `fastmesh._engine.Engine` in-process with hand-written snapshots.

Used where the file config cannot express the case (a backendRef the loader would reject)
or where the contract itself is under test (a refused snapshot keeps the old one serving).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def snap_route(
    name: str,
    backends: list[tuple[str | None, int]],
    *,
    path: str = "/",
    path_type: str = "PathPrefix",
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One snapshot route: a path match and weighted backends (None = invalid backendRef)."""
    return {
        "name": name,
        "match": {"path": {"type": path_type, "value": path}, "method": None, "headers": [], "query": []},
        "filters": filters or [],
        "backends": [{"backend": backend, "weight": weight} for backend, weight in backends],
    }


def snapshot(
    backends: dict[str, list[str]],
    routes: list[dict[str, Any]],
    *,
    version: int = 1,
    domains: list[str] | None = None,
    lb: str = "round_robin",
    idle_timeout_ms: int = 90_000,
) -> dict[str, Any]:
    """A whole snapshot with one listener on 127.0.0.1:0 and one vhost (default: every host)."""
    return {
        "version": version,
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0"}],
        "pool": {"idle_timeout_ms": idle_timeout_ms, "max_idle_per_endpoint": 64, "connect_timeout_ms": 2000},
        "backends": [
            {"name": name, "protocol": "http1", "lb": lb, "endpoints": endpoints}
            for name, endpoints in backends.items()
        ],
        "vhosts": [{"name": "all", "domains": domains or ["*"], "routes": routes}],
    }


class InProcessEngine:
    """An Engine with its listener URL; `apply` takes the snapshot as a dict."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def apply(self, snap: dict[str, Any]) -> int:
        version: int = self.core.apply(json.dumps(snap))
        return version

    @property
    def url(self) -> str:
        return "http://" + self.core.listeners()["outbound"]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self.core.stats_json())
        return stats


@pytest.fixture
def engine_factory() -> Iterator[Callable[[dict[str, Any]], InProcessEngine]]:
    """engine_factory(snapshot) -> InProcessEngine serving it; drained at teardown."""
    from fastmesh._engine import Engine

    engines: list[InProcessEngine] = []

    def start(snap: dict[str, Any]) -> InProcessEngine:
        engine = InProcessEngine(Engine(1))
        engine.apply(snap)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.core.drain(2.0)
