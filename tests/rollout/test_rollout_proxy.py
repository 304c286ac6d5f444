"""Rollouts in a real `fastmesh proxy` with real hypercorn upstreams under a bounded httpx load.

The engine splits by weight (no Python per request); the orchestrator judges each step from the
engine's per-backend counters and applies new weights as a new snapshot. Intervals are short (1 s)
and `minRequests` small, so a slow shared machine holds steps longer but never judges too early.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import Proxy, Upstream, _Process, backend, fastmesh_cli, mesh_config, route, rule, service

LOAD_MAX_S = 90.0  # a load stops by itself after this, whatever the test does
TICK_SLACK_S = 0.5  # the controller ticks every 50 ms; a shared, busy machine may delay a tick this much


def rollout_config(v1: Upstream, v2: Upstream, *, steps: list[int], interval: str = "1s",
                   gates: dict[str, Any] | None = None, paused: bool = False,
                   proxy: dict[str, Any] | None = None) -> str:
    doc = {
        "apiVersion": "fastmesh.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "reviews"},
        "spec": {
            "targetRef": {"kind": "HTTPRoute", "name": "reviews"},
            "stable": {"name": "reviews-v1", "port": 8080}, "canary": {"name": "reviews-v2", "port": 8080},
            "steps": steps, "interval": interval,
            "gates": gates or {"minSuccessRate": 99, "minRequests": 10},
            **({"paused": True} if paused else {}),
        },
    }
    services = [service("reviews-v1", [v1.address]), service("reviews-v2", [v2.address]), service("reviews")]
    # the file says 100/0: the rollout's weights replace these
    split = rule(backend("reviews-v1", 100), backend("reviews-v2", 0))
    return mesh_config(services=services, routes=[route("reviews", [split], parent="reviews")], extra=[doc],
                       proxy=proxy)


class Load:
    """Closed-loop HTTP/1.1 keep-alive clients through the proxy; records (time, upstream, status)."""

    def __init__(self, px: Proxy, clients: int = 4) -> None:
        self.results: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(px.url,), daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, url: str) -> None:
        deadline = time.monotonic() + LOAD_MAX_S
        with httpx.Client(base_url=url, headers={"host": "reviews"}, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    r = client.get("/")
                    who = r.json().get("upstream", "") if r.headers.get("content-type", "").startswith(
                        "application/json") else ""
                except httpx.HTTPError:
                    who, r = "error", None
                with self._lock:
                    self.results.append((time.monotonic(), who, r.status_code if r is not None else 0))

    def since(self, t: float) -> list[tuple[str, int]]:
        with self._lock:
            return [(who, status) for at, who, status in self.results if at >= t]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


@contextmanager
def load(px: Proxy, clients: int = 4) -> Iterator[Load]:
    running = Load(px, clients)
    try:
        yield running
    finally:
        running.stop()


def wait_decision(px: Proxy | _Process, *decisions: str, timeout: float = 60.0) -> dict[str, Any]:
    """The next `rollout` event of a proxy (or a rollout controller) whose decision is one of `decisions`
    (others are skipped, kept in events)."""
    deadline = time.monotonic() + timeout
    while True:
        event = px.wait_event("rollout", timeout=max(0.1, deadline - time.monotonic()))
        if event["decision"] in decisions:
            return event


def decisions(px: Proxy) -> list[tuple[str, int]]:
    return [(e["decision"], e["step"]) for e in px.events if e.get("event") == "rollout"]


def rollouts(px: Proxy) -> list[dict[str, Any]]:
    return httpx.get(f"{px.admin_url}/rollouts", timeout=5).json()["rollouts"]


def served_weights(px: Proxy) -> list[tuple[str, int]]:
    snapshot = httpx.get(f"{px.admin_url}/config", timeout=5).json()["snapshot"]
    routes = [r for v in snapshot["vhosts"] for r in v["routes"] if r["name"] == "default/reviews/rule/0"]
    assert routes
    return [(b["backend"], b["weight"]) for b in routes[0]["backends"]]


def state(px: Proxy) -> dict[str, Any]:
    path = px.config_path.with_name(px.config_path.name + ".rollout-state.json")
    doc: dict[str, Any] = json.loads(path.read_text())["rollouts"]["default/reviews"]
    return doc


V1, V2 = "default/reviews-v1:8080", "default/reviews-v2:8080"


def test_a_healthy_canary_is_promoted_through_every_step(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    px = proxy_factory(rollout_config(v1, v2, steps=[5, 10, 25, 50, 100]))
    assert served_weights(px) == [(V1, 95), (V2, 5)]
    with load(px) as running:
        promoted = wait_decision(px, "promoted", "rolled_back", timeout=80)
        after = time.monotonic() + 0.5
        time.sleep(1.5)
        tail = running.since(after)
        everything = running.since(0.0)
    assert promoted["decision"] == "promoted", px.events
    # four snapshot swaps under load, and not one request lost or failed
    assert everything and {status for _, status in everything} == {200}
    moves = [d for d in decisions(px) if d[0] not in ("hold",)]
    assert moves == [("started", 0), ("advanced", 0), ("advanced", 1), ("advanced", 2), ("promoted", 3)]
    for event in px.events:  # every judged step had enough canary responses and passed
        if event.get("event") == "rollout" and event["decision"] in ("advanced", "promoted"):
            assert event["canary_requests"] >= 10 and event["canary_success_rate"] == 100.0
    assert served_weights(px) == [(V1, 0), (V2, 100)]
    assert tail and {who for who, _ in tail} == {"v2"}, tail[:20]
    [view] = rollouts(px)
    assert (view["phase"], view["canary_weight"], view["steps"]) == ("Succeeded", 100, [5, 10, 25, 50, 100])
    assert state(px)["phase"] == "Succeeded"


def test_a_canary_answering_5_percent_503_is_rolled_back_at_the_step_that_exposed_it(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1 = upstream_factory("v1")
    v2 = upstream_factory("v2", fail_status=503, fail_every=20)  # every 20th request: 5 %
    px = proxy_factory(rollout_config(v1, v2, steps=[10, 50, 100], gates={"minSuccessRate": 99, "minRequests": 20}))
    with load(px) as running:
        failed = wait_decision(px, "rolled_back", "advanced", "promoted", timeout=60)
        after = time.monotonic() + 0.5
        time.sleep(1.5)
        tail = running.since(after)
    assert failed["decision"] == "rolled_back", json.dumps(failed)
    assert failed["step"] == 0 and failed["canary_weight"] == 10
    assert failed["canary_requests"] >= 20 and failed["canary_success_rate"] < 99
    assert "minSuccessRate 99" in failed["reason"] and failed["reason"].startswith("step 0 (10%): ")
    assert served_weights(px) == [(V1, 100), (V2, 0)]
    assert tail and {who for who, _ in tail} == {"v1"} and {s for _, s in tail} == {200}
    [view] = rollouts(px)
    assert (view["phase"], view["canary_weight"]) == ("Failed", 0)
    assert view["reason"] == failed["reason"]
    shown = fastmesh_cli("rollout", "status", "--admin", px.admin_address)
    assert "  step 0  10% [....................] FAILED" in shown.stdout.splitlines()
    # rolled back at the first judgement of the step that first sent the canary traffic: no hold before
    # it, over a window of one interval plus at most a tick of the controller's loop
    judged = [e for e in px.events if e.get("event") == "rollout" and "window_s" in e]
    assert judged == [failed], judged
    first_503 = min(at for at, _, status in running.results if status == 503)  # only v2 fails
    print(f"\n5 % 503 canary at step 0 (10 %): judged over a {failed['window_s']:.3f} s window (interval 1 s),"
          f" {failed['canary_requests']} canary responses, {failed['canary_success_rate']:.2f} % success;"
          f" rolled back {failed['at'] - (first_503 - time.monotonic() + time.time()):.3f} s after the first 503"
          f" a client saw")
    assert 1.0 <= failed["window_s"] <= 1.0 + TICK_SLACK_S
    assert f"  reason: {failed['reason']}" in shown.stdout.splitlines()
    assert state(px)["phase"] == "Failed" and state(px)["reason"] == failed["reason"]


def test_too_little_traffic_holds_the_step(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy]
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    px = proxy_factory(rollout_config(v1, v2, steps=[50, 100], interval="500ms",
                                      gates={"minSuccessRate": 99, "minRequests": 30}))
    with httpx.Client(base_url=px.url, headers={"host": "reviews"}, timeout=10) as client:
        for _ in range(10):  # 5 to the canary: too few to judge
            assert client.get("/").status_code == 200
    first = wait_decision(px, "hold", "advanced", "rolled_back")
    second = wait_decision(px, "hold", "advanced", "rolled_back")
    assert (first["decision"], second["decision"]) == ("hold", "hold"), px.events
    assert second["canary_requests"] == 5 and second["reason"].endswith("the step needs 30")
    [view] = rollouts(px)
    assert (view["phase"], view["step"], view["canary_weight"], view["last"]["decision"]) == ("Progressing", 0, 50, "hold")
    assert served_weights(px) == [(V1, 50), (V2, 50)]
    shown = fastmesh_cli("rollout", "status", "--admin", px.admin_address)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"default/reviews  Progressing  weights: stable 50% canary 50%  ({V2} vs stable {V1})"
    assert lines[1].startswith("  step 0  50% [") and "s/0.5s, " in lines[1] and lines[1].endswith("s left")
    assert lines[2] == "  step 1 100% [....................]"
    assert lines[3] == "  gates: minSuccessRate 99.0, minRequests 30"
    assert lines[4].startswith("  last window: hold (") and "the step needs 30" in lines[4]
    assert lines[5].startswith("    canary ") and lines[5].startswith("    canary 5 responses, success 100.00%, p99 ")
    # the window keeps what it held: with traffic, the same step is judged and passes
    with load(px, clients=2):
        moved = wait_decision(px, "promoted", "rolled_back", timeout=60)
    assert moved["decision"] == "promoted" and moved["step"] == 0, px.events


def test_a_restart_resumes_the_rollout_at_the_step_it_was_on(
    upstream_factory: Callable[..., Any], tmp_path: Path
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    config = tmp_path / "mesh.yaml"
    config.write_text(rollout_config(v1, v2, steps=[5, 10, 25, 50, 100], interval="1s"))
    px = Proxy.start_file(config, tmp_path)
    try:
        with load(px):
            while True:
                moved = wait_decision(px, "advanced", "rolled_back", "promoted", timeout=60)
                assert moved["decision"] == "advanced", px.events
                if moved["next_step"] == 2:
                    break
        assert px.terminate() == 0
    finally:
        px.kill()
    assert state(px) == {**state(px), "phase": "Progressing", "step": 2}
    again = Proxy.start_file(config, tmp_path)
    try:
        resumed = next(e for e in again.events if e.get("event") == "rollout")  # before "ready"
        assert (resumed["decision"], resumed["step"], resumed["canary_weight"]) == ("restored", 2, 25)
        assert served_weights(again) == [(V1, 75), (V2, 25)]
        [view] = rollouts(again)
        assert (view["phase"], view["step"]) == ("Progressing", 2)
        with load(again):  # and it goes on from there
            moved = wait_decision(again, "advanced", "promoted", "rolled_back", timeout=60)
        assert (moved["decision"], moved["step"], moved["next_step"]) == ("advanced", 2, 3), again.events
    finally:
        again.terminate()
    assert yaml.safe_load_all(config.read_text())  # the config file itself is left as it was


@pytest.mark.parametrize("stable_ms", [30, 11])
def test_a_canary_whose_p99_doubles_is_rolled_back(
    upstream_factory: Callable[..., Any], proxy_factory: Callable[..., Proxy], stable_ms: int
) -> None:
    # The doubled latency lands two buckets up in the engine's histogram: 30 -> 60 ms (30..40,
    # 60..80) and 11 -> 22 ms (10..15, 20..30; both were in 10..25 before issue 7's finer
    # bounds), docs/engine-snapshot.md latency_bounds_ms.
    v1 = upstream_factory("v1", delay_ms=stable_ms)
    v2 = upstream_factory("v2", delay_ms=2 * stable_ms)
    stable_bucket_top = {30: 40, 11: 15}[stable_ms]
    # A shared machine can stall the upstreams for longer than the stable's bucket allows in more
    # than 1 % of a window: the stable's p99 then leaves its bucket and says nothing about the
    # canary. Such a window is run again (a fresh proxy); a window whose stable p99 stayed in its
    # bucket must end in the rollback. With the old bounds (10..25 ms for 11 and 22) every
    # window advances, so this fails whatever the retries.
    for _ in range(3):
        px = proxy_factory(rollout_config(v1, v2, steps=[20, 50, 100],
                                          gates={"maxP99Ratio": 1.5, "minRequests": 40}))
        # Two closed-loop clients: little queueing in the upstreams, so the tails are the machine's.
        with load(px, clients=2):
            failed = wait_decision(px, "rolled_back", "advanced", "promoted", timeout=60)
        if failed["decision"] == "rolled_back" or failed["stable_p99_ms"] <= stable_bucket_top:
            break
        px.terminate()
    assert failed["decision"] == "rolled_back", json.dumps(failed)
    assert failed["step"] == 0 and "(maxP99Ratio)" in failed["reason"]
    assert failed["canary_p99_ms"] > 1.5 * failed["stable_p99_ms"]
    assert served_weights(px) == [(V1, 100), (V2, 0)]
