"""The runtime against a fake engine: start, reload (good, refused, engine-refused), drain."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from fastmesh.engine import Engine
from fastmesh.runtime import Overrides, Runtime
from tests.harness import backend, mesh_config, route, rule
from tests.runtime.fakes import FakeEngineCore

PORT_ZERO = Overrides(admin_address="127.0.0.1:0", listeners={"outbound": "127.0.0.1:0"})


def config(v1_weight: int = 90, v2_weight: int = 10) -> str:
    return mesh_config(
        services={"reviews": [], "reviews-v1": ["127.0.0.1:9001"], "reviews-v2": ["127.0.0.1:9002"]},
        routes=[route("reviews", [rule(backend("reviews-v1", v1_weight), backend("reviews-v2", v2_weight))],
                      parent="reviews")],
        proxy={"drainTimeout": "3s"},
    )


BAD_WEIGHT = config(v1_weight=2_000_000)


class Events:
    """The runtime's stdout: collects JSON event lines and lets a coroutine wait for them."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.append(json.loads(line))
        self._changed.set()
        return len(text)

    def flush(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.lines]

    async def wait(self, kind: str, count: int = 1) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while self.kinds().count(kind) < count:
                self._changed.clear()
                await self._changed.wait()
        return [e for e in self.lines if e["event"] == kind][count - 1]


def make_runtime(path: Path, core: FakeEngineCore, overrides: Overrides = PORT_ZERO) -> tuple[Runtime, Events]:
    events = Events()
    runtime = Runtime(path, overrides, engine_factory=lambda threads: Engine(core),
                      events=events, watch_interval_s=0.01, handle_signals=False)  # type: ignore[arg-type]
    return runtime, events


def close_admin(runtime: Runtime) -> None:
    assert runtime.admin is not None
    runtime.admin.close()


def run(scenario: Callable[[], Any]) -> Any:
    return uvloop.run(scenario())


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(config())
    return path


def test_start_applies_version_1_with_overrides_and_emits_ready(mesh: Path) -> None:
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = make_runtime(mesh, core)
        assert await runtime.start()
        ready = events.lines[-1]
        assert ready["event"] == "ready" and ready["version"] == 1
        assert ready["listeners"] == {"outbound": "127.0.0.1:0"}
        assert ready["admin"].startswith("127.0.0.1:") and not ready["admin"].endswith(":0")
        assert runtime.state.ready
        close_admin(runtime)

    run(scenario)
    (snapshot,) = core.snapshots
    assert snapshot["version"] == 1
    assert snapshot["listeners"] == [{"name": "outbound", "address": "127.0.0.1:0"}]
    assert {b["name"] for b in snapshot["backends"]} >= {"default/reviews-v1:8080", "default/reviews-v2:8080"}


def test_invalid_config_at_start_fails_without_ready(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(BAD_WEIGHT)
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = make_runtime(path, core)
        assert await runtime.run() == 1
        assert events.lines == []

    run(scenario)
    assert core.snapshots == []


def test_unknown_listener_override_is_an_error(mesh: Path) -> None:
    overrides = Overrides(admin_address="127.0.0.1:0", listeners={"inbound": "127.0.0.1:0"})

    async def scenario() -> bool:
        runtime, _ = make_runtime(mesh, FakeEngineCore(), overrides)
        return await runtime.start()

    assert run(scenario) is False


def test_bad_reload_is_refused_and_last_good_keeps_serving_until_a_good_one(mesh: Path) -> None:
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = make_runtime(mesh, core)
        assert await runtime.start()
        mesh.write_text(BAD_WEIGHT)
        assert await runtime.reload() is False
        failed = events.lines[-1]
        assert failed["event"] == "reload_failed"
        assert "weight" in failed["error"] and str(mesh) in failed["error"]
        assert runtime.state.version == 1
        assert runtime.state.reload_failures == 1
        assert runtime.state.last_reload_error is not None
        assert runtime.state.last_reload_error.error == failed["error"]
        view = runtime.state.config_view()
        assert view["version"] == 1 and view["last_reload_error"]["error"] == failed["error"]

        mesh.write_text(config(v1_weight=50, v2_weight=50))
        assert await runtime.reload() is True
        assert events.lines[-1] == {"event": "reloaded", "version": 2}
        assert runtime.state.last_reload_error is None
        close_admin(runtime)

    run(scenario)
    assert [s["version"] for s in core.snapshots] == [1, 2]
    weights = [b["weight"] for v in core.snapshots[1]["vhosts"] for r in v["routes"] for b in r["backends"]]
    assert 50 in weights and 90 not in weights


@pytest.mark.parametrize("error", [ValueError("listener: bad address"), OSError(98, "Address already in use")])
def test_reload_the_engine_refuses_is_refused(mesh: Path, error: Exception) -> None:
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = make_runtime(mesh, core)
        assert await runtime.start()
        core.refuse_with = error
        assert await runtime.reload() is False
        assert events.lines[-1]["event"] == "reload_failed"
        assert str(mesh) in events.lines[-1]["error"]
        assert runtime.state.version == 1
        core.refuse_with = None
        assert await runtime.reload() is True
        assert runtime.state.version == 2
        close_admin(runtime)

    run(scenario)


def test_file_change_reloads_and_touch_does_not(mesh: Path) -> None:
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = make_runtime(mesh, core)
        task = asyncio.create_task(runtime.run())
        await events.wait("ready")
        aside = mesh.with_suffix(".new")
        aside.write_text(config(v1_weight=10, v2_weight=90))
        aside.replace(mesh)
        assert (await events.wait("reloaded")) == {"event": "reloaded", "version": 2}
        mesh.touch()
        mesh.write_text(mesh.read_text())  # same content, new mtime
        await asyncio.sleep(0.1)  # several poll intervals: nothing may happen
        assert events.kinds().count("reloaded") == 1
        runtime.stop()
        assert await task == 0

    run(scenario)
    assert [s["version"] for s in core.snapshots] == [1, 2]


def test_drain_turns_ready_503_waits_for_the_engine_and_exits_0(mesh: Path) -> None:
    core = FakeEngineCore()
    core.drain_release.clear()  # in-flight requests are still running

    async def scenario() -> None:
        runtime, events = make_runtime(mesh, core)
        task = asyncio.create_task(runtime.run())
        ready = await events.wait("ready")
        url = f"http://{ready['admin']}/ready"
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200
            runtime.stop()
            await events.wait("draining")
            assert (await client.get(url)).status_code == 503  # admin still answers while draining
            assert not task.done()
            mesh.write_text(config(v1_weight=1, v2_weight=1))
            assert await runtime.reload() is False  # no reloads while draining
            threading.Timer(0.05, core.drain_release.set).start()
            assert await task == 0
        assert events.lines[-1] == {"event": "stopped", "drained": True}
        assert events.kinds() == ["ready", "draining", "stopped"]

    run(scenario)
    assert core.drain_calls == [3.0]  # spec.drainTimeout
