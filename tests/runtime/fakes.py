"""A small in-memory stand-in for fastmesh._engine.Engine, for unit tests of the orchestrator."""

from __future__ import annotations

import json
import threading
from typing import Any

BOUNDS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


def engine_stats(**overrides: Any) -> dict[str, Any]:
    """A stats document shaped like docs/engine-snapshot.md describes."""
    stats: dict[str, Any] = {
        "version": 1,
        "connections": {"active": 2, "total": 10},
        "requests_active": 1,
        "latency_bounds_ms": BOUNDS_MS,
        "routes": [],
        "upstream": [],
    }
    stats.update(overrides)
    return stats


class FakeEngineCore:
    """Accepts snapshots like the engine does (JSON in, version out) and records what it was given."""

    def __init__(self, stats: dict[str, Any] | None = None) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.stats = stats or engine_stats()
        self.refuse_with: Exception | None = None  # raised by the next apply calls
        self.drain_calls: list[float] = []
        self.drain_release = threading.Event()  # drain() blocks until set
        self.drain_release.set()
        self.drain_started = threading.Event()

    def apply(self, snapshot_json: str) -> int:
        snapshot = json.loads(snapshot_json)
        if self.refuse_with is not None:
            raise self.refuse_with
        self.snapshots.append(snapshot)
        return int(snapshot["version"])

    def listeners(self) -> dict[str, str]:
        current = self.snapshots[-1] if self.snapshots else {"listeners": []}
        return {entry["name"]: entry["address"] for entry in current["listeners"]}

    def stats_json(self) -> str:
        return json.dumps(self.stats)

    def drain(self, timeout_s: float) -> bool:
        self.drain_calls.append(timeout_s)
        self.drain_started.set()
        return self.drain_release.wait(timeout_s)

    def version(self) -> int:
        return int(self.snapshots[-1]["version"]) if self.snapshots else 0

    def active_requests(self) -> int:
        return int(self.stats["requests_active"])
