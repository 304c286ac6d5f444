"""Fixtures shared by every test: upstream servers and fastmesh proxies that are always stopped."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Proxy, Upstream


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running (GiB streams, load under reload); in the default run")


@pytest.fixture
def upstream_factory(tmp_path: Path) -> Iterator[Callable[..., Upstream]]:
    """upstream_factory("v1", http2=False, delay_ms=0) -> Upstream; all are stopped at teardown.

    upstream_factory.many(["v1", "v2"], http2=...) starts several in parallel.
    """
    started: list[Upstream] = []

    def start(name: str = "v1", http2: bool = False, **kwargs: Any) -> Upstream:
        up = Upstream.start(name, http2=http2, log_dir=tmp_path, **kwargs)
        started.append(up)
        return up

    def many(names: list[str], http2: bool = False, **kwargs: Any) -> list[Upstream]:
        ups = Upstream.start_many(names, http2=http2, log_dir=tmp_path, **kwargs)
        started.extend(ups)
        return ups

    start.many = many  # type: ignore[attr-defined]
    yield start
    for up in started:
        up.stop()


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """proxy_factory(config_text_or_path, **Proxy.start kwargs) -> Proxy; all are stopped at teardown."""
    started: list[Proxy] = []

    def start(config: str | Path, **kwargs: Any) -> Proxy:
        px = Proxy.start(config, tmp_path, **kwargs)
        started.append(px)
        return px

    yield start
    for px in started:
        px.terminate(timeout=15)


@pytest.fixture
def require_tools() -> Callable[..., None]:
    """require_tools("wrk", "h2load"): fails (does not skip) when a real peer is missing."""

    def check(*names: str) -> None:
        missing = [name for name in names if shutil.which(name) is None]
        if missing:
            pytest.fail(f"missing {missing}: run `make system-deps` (apt: curl wrk nghttp2-client)")

    return check
