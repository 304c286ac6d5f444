"""A proxy fed by a control plane (real TLS on loopback, tests/control/test_stream.py's server) logs
nothing at info per change (a change reaches every proxy of the mesh), and warns of an object left out
once, not again with every change that follows."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest

from fastmesh.control.client import ControlSource
from fastmesh.control.protocol import canonical, key_of
from fastmesh.engine import Engine
from fastmesh.runtime import Overrides, Runtime
from tests.control.test_stream import service, serving, until
from tests.runtime.fakes import FakeEngineCore


def test_changes_from_a_control_plane_log_no_reload_at_info_and_warn_of_a_left_out_object_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "bad"},
           "spec": {"ports": [{"port": 80, "name": "Bad_Name"}]}}

    async def run() -> None:
        control, server, token = await serving(tmp_path)
        control.store.apply({key_of(bad): canonical(bad)}, [])
        source = ControlSource(f"https://{control.address}", str(tmp_path / "ca" / "bundle.pem"), str(token))
        core = FakeEngineCore()
        runtime = Runtime(None, Overrides(admin_address="127.0.0.1:0", listeners={"outbound": "127.0.0.1:0"}),
                          engine_factory=lambda threads: Engine(core),
                          events=io.StringIO(), handle_signals=False, control=source)
        task = asyncio.ensure_future(runtime.run())
        try:
            await until(lambda: len(core.snapshots) >= 1, "the start")
            for port in (81, 82):
                control.store.apply(service("web", port), [])
                await until(lambda: f"shop/web:{port}" in json.dumps(core.snapshots[-1]["backends"]),
                            f"port {port} to be applied")
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 20)
            control.drop_connections()
            server.close()

    with caplog.at_level(logging.DEBUG, logger="fastmesh"):
        asyncio.run(run())
    reloaded = [r for r in caplog.records if r.getMessage().startswith("reloaded ")]
    assert len(reloaded) == 2 and all(r.levelno == logging.DEBUG for r in reloaded)
    left_out = [r for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 1 and left_out[0].levelno == logging.WARNING, [r.getMessage() for r in left_out]
    assert "Service shop/bad left out" in left_out[0].getMessage()
