"""The control plane's HTTP/2 server and the proxy's ControlWatcher over real TLS on loopback, with the
TokenReview replaced by a small fake (tests/kube/test_control_plane.py has the real one): a proxy that
reconnects to the same control plane gets only the deltas it missed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastmesh.ca import CA
from fastmesh.control.auth import AuthError, Workload
from fastmesh.control.client import ControlSource, ControlWatcher
from fastmesh.control.protocol import canonical, key_of
from fastmesh.control.server import ControlPlane, Settings
from fastmesh.kube.kubeconfig import Connection
from fastmesh.kube.source import KubeSource
from fastmesh.kube.watch import Backoff
from fastmesh.state import State


class FakeReviewer:
    reviews = 0

    async def workload(self, authorization: str | None) -> Workload:
        if authorization != "Bearer good":
            raise AuthError(401, "the token is not valid")
        return Workload("shop", "cart", "spiffe://cluster.local/ns/shop/sa/cart")


def service(name: str, port: int) -> dict[tuple[str, str, str], str]:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": name},
           "spec": {"ports": [{"port": port}]}}
    return {key_of(doc): canonical(doc)}


async def until(condition: Callable[[], Any], what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def serving(tmp_path: Path) -> tuple[ControlPlane, Any, Path]:
    """A control plane on loopback with Service shop/web (port 80), and a token file it accepts."""
    CA.init(tmp_path / "ca", "cluster.local")
    control = ControlPlane(KubeSource(Connection("https://127.0.0.1:1")),
                           Settings(tmp_path / "ca", "127.0.0.1:0", ("127.0.0.1",)))
    control.reviewer = FakeReviewer()  # type: ignore[assignment]
    control.store.apply(service("web", 80), [])
    control.synced.set()
    server = await control.serve(tmp_path)
    token = tmp_path / "token"
    token.write_text("good")
    return control, server, token


def test_a_proxy_that_reconnects_gets_only_the_deltas_it_missed(tmp_path: Path) -> None:
    async def run() -> None:
        control, server, token = await serving(tmp_path)
        contents: list[bytes] = []

        async def on_change(content: bytes) -> None:
            contents.append(content)

        state = State(source="test")
        watcher = ControlWatcher(ControlSource(f"https://{control.address}", str(tmp_path / "ca" / "bundle.pem"),
                                               str(token)), on_change, state, backoff=Backoff(0.05, 0.1))
        received: list[str] = []
        apply = watcher.replica.apply

        def spy(line: bytes | str) -> bool:
            received.append(json.loads(line)["type"])
            return apply(line)

        watcher.replica.apply = spy  # type: ignore[method-assign]
        task = asyncio.ensure_future(watcher.run())
        try:
            await until(watcher.ready.is_set, "the first full state")
            assert received == ["hello", "full"] and state.control is not None
            assert state.control["connected"] and state.control["version"] == 1
            control.store.apply(service("web", 81), [])  # streamed as it happens
            await until(lambda: watcher.replica.version == 2, "the first delta")
            assert received[2:] == ["delta"] and b'"port":81' in contents[-1]

            token.unlink()  # the proxy cannot authenticate for a while: it stays away
            control.drop_connections()
            await until(lambda: "cannot read the token" in str(state.control["last_error"]), "the proxy to fail")
            assert not state.control["connected"]
            control.store.apply(service("db", 5432), [])
            control.store.apply({}, [("Service", "shop", "web")])
            del received[:]
            token.write_text("good")
            await until(lambda: watcher.replica.version == 4, "the proxy to catch up")
            assert received == ["hello", "delta", "delta"]  # same epoch, a recent version: no full state
            assert watcher.replica.epoch == control.store.epoch and state.control["connects"] == 2
            assert b'"name":"db"' in contents[-1] and b'"name":"web"' not in contents[-1]

            token.write_text("bad")  # refused tokens: the proxy keeps what it has and retries
            control.drop_connections()
            await until(lambda: "401 the token is not valid" in str(state.control["last_error"]), "a refusal")
            assert watcher.replica.version == 4 and not state.control["connected"]
        finally:
            task.cancel()
            control.drop_connections()
            server.close()

    asyncio.run(run())


def test_a_delta_that_comes_while_the_proxy_starts_is_applied_after_the_start(tmp_path: Path) -> None:
    """The runtime compiles the replica's changes incrementally; a delta received while the first snapshot
    is being applied (a reload then is refused: the start is not done) is taken by a reload right after."""
    import io
    import threading

    from fastmesh.engine import Engine
    from fastmesh.runtime import Overrides, Runtime
    from tests.runtime.fakes import FakeEngineCore

    async def run() -> None:
        control, server, token = await serving(tmp_path)
        source = ControlSource(f"https://{control.address}", str(tmp_path / "ca" / "bundle.pem"), str(token))
        loop = asyncio.get_running_loop()

        class SlowFirstApply(FakeEngineCore):
            def apply(self, snapshot_json: str) -> int:
                if not self.snapshots:  # the first snapshot: the delta comes and is refused meanwhile
                    loop.call_soon_threadsafe(control.store.apply, service("web", 81), [])
                    replica, end = runtime.control_watcher.replica, time.monotonic() + 10  # type: ignore[union-attr]
                    while replica.version < 2 and time.monotonic() < end:
                        threading.Event().wait(0.01)
                return super().apply(snapshot_json)

        core = SlowFirstApply()
        runtime = Runtime(None, Overrides(admin_address="127.0.0.1:0", listeners={"outbound": "127.0.0.1:0"}),
                          engine_factory=lambda threads: Engine(core),  # type: ignore[arg-type]
                          events=io.StringIO(), handle_signals=False, control=source)
        task = asyncio.ensure_future(runtime.run())
        try:
            await until(lambda: len(core.snapshots) >= 2, "the delta to be applied after the start")
            first, second = (json.dumps(s["backends"]) for s in core.snapshots[:2])
            assert "shop/web:80" in first and "shop/web:81" in second and "shop/web:80" not in second
            assert runtime.cluster is not None and runtime.cluster.started == 1  # one incremental compiler
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 20)
            control.drop_connections()
            server.close()

    asyncio.run(run())
