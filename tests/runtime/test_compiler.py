"""Configs compiled in a child process: what comes back, and what the proxy process never loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from fastmesh import compiler
from fastmesh.compiler import ProxySettings, compile_config, with_version
from fastmesh.config import ConfigError, compile_snapshot, load_text
from fastmesh.overrides import OverrideError, Overrides
from tests.harness import Proxy, backend, mesh_config, route, rule

CONFIG = mesh_config(
    services={"reviews": [], "reviews-v1": ["127.0.0.1:9001"]},
    routes=[route("reviews", [rule(backend("reviews-v1", 1))], parent="reviews")],
    proxy={"workerThreads": 2, "drainTimeout": "2s", "admin": {"address": "127.0.0.1:15200"}},
)
PORT_ZERO = Overrides(listeners={"outbound": "127.0.0.1:0"})


def test_a_good_config_comes_back_as_settings_and_snapshot_json() -> None:
    compiled = uvloop.run(compile_config(CONFIG.encode(), "/etc/mesh.yaml", PORT_ZERO))
    assert compiled.settings == ProxySettings("127.0.0.1:15200", 2, 2.0)
    expected = compile_snapshot(load_text(CONFIG, "/etc/mesh.yaml"))
    PORT_ZERO.apply(expected)
    assert json.loads(compiled.snapshot_json) == expected


def test_a_bad_config_raises_the_error_loading_it_here_raises() -> None:
    bad = CONFIG.replace("weight: 1", "weight: 2000000")
    with pytest.raises(ConfigError) as here:
        load_text(bad, "/etc/mesh.yaml")
    with pytest.raises(ConfigError) as there:
        uvloop.run(compile_config(bad.encode(), "/etc/mesh.yaml", PORT_ZERO))
    assert str(there.value) == str(here.value)
    assert there.value.problems == here.value.problems


def test_an_override_of_a_missing_listener_is_an_override_error() -> None:
    with pytest.raises(OverrideError, match="the config has no listener named 'inbound'"):
        uvloop.run(compile_config(CONFIG.encode(), "mesh.yaml", Overrides(listeners={"inbound": "127.0.0.1:0"})))


def test_a_crashed_compiler_is_a_config_error_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "WORKER", "fastmesh.no_such_module")
    with pytest.raises(ConfigError) as info:
        uvloop.run(compile_config(CONFIG.encode(), "/etc/mesh.yaml", PORT_ZERO))
    message = str(info.value)
    assert message.startswith("/etc/mesh.yaml: the config compiler (fastmesh.no_such_module) failed with status 1:")
    assert "No module named fastmesh.no_such_module" in message


def test_with_version_puts_the_version_first() -> None:
    text = with_version('{"listeners":[],"vhosts":[]}', 7)
    assert text == '{"version":7,"listeners":[],"vhosts":[]}'
    assert json.loads(text) == {"version": 7, "listeners": [], "vhosts": []}
    with pytest.raises(ValueError):
        with_version("{}", 1)


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_proxy_process_never_loads_pydantic_or_yaml(
    proxy_factory: Callable[..., Proxy], tmp_path: Path
) -> None:
    px = proxy_factory(CONFIG)
    px.reload(CONFIG.replace("drainTimeout: 2s", "drainTimeout: 3s"))
    maps = _mapped(px.pid)
    assert "_engine" in maps  # the check would see an extension module if one were loaded
    assert "pydantic_core" not in maps
    assert "/yaml/_yaml" not in maps
