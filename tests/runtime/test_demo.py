"""`make demo` (python -m fastmesh.demo): the demo services, the split check and its failure modes."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastmesh import demo
from tests.harness import REPO, Proxy

DEMO_YAML = REPO / "examples" / "demo.yaml"


def free_port() -> int:
    """A port free right now. Only for the demo, whose config names fixed ports by design."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(ports: dict[int, int], weights: tuple[int, int] | None = None) -> str:
    """examples/demo.yaml with its ports replaced (old -> new) and optionally other split weights."""
    docs = list(yaml.safe_load_all(DEMO_YAML.read_text()))
    for doc in docs:
        if doc["kind"] == "Proxy":
            spec = doc["spec"]
            spec["admin"]["address"] = f"127.0.0.1:{ports[15000]}"
            for listener in spec["listeners"]:
                listener["port"] = ports[listener["port"]]
        if doc["kind"] == "EndpointSlice":
            for port in doc["ports"]:
                port["port"] = ports[port["port"]]
        if doc["kind"] == "HTTPRoute" and weights is not None:
            split = doc["spec"]["rules"][-1]["backendRefs"]
            split[0]["weight"], split[1]["weight"] = weights
    return str(yaml.safe_dump_all(docs, sort_keys=False))


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", CI="")


@pytest.fixture
def demo_services() -> Iterator[Callable[[str], str]]:
    """Starts `python -m fastmesh.demo_service --name N` on port 0; returns its address."""
    children: list[subprocess.Popen[str]] = []

    def start(name: str) -> str:
        child = subprocess.Popen(
            [sys.executable, "-m", "fastmesh.demo_service", "--name", name, "--address", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True, env=env(),
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line[:2] == ["listening", name], line
        return line[2]

    yield start
    for child in children:
        child.terminate()
        child.wait(10)


def config_for(v1: str, v2: str, weights: tuple[int, int] | None = None) -> str:
    ports = {18081: int(v1.rsplit(":", 1)[1]), 18082: int(v2.rsplit(":", 1)[1]), 15001: 0, 15000: 0}
    return demo_config(ports, weights)


def test_demo_service_answers_with_its_name_on_keep_alive(demo_services: Callable[[str], str]) -> None:
    address = demo_services("reviews-v1")
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for _ in range(3):  # one connection, three requests
        conn.request("GET", "/anything")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello from reviews-v1\n")
    conn.close()


def test_check_passes_on_the_demo_split(
    demo_services: Callable[[str], str], proxy_factory: Callable[..., Proxy], capsys: Any
) -> None:
    px = proxy_factory(config_for(demo_services("reviews-v1"), demo_services("reviews-v2")))
    assert demo.check(px.address, 1000) is True
    out = capsys.readouterr().out
    assert "900  hello from reviews-v1" in out
    assert "100  hello from reviews-v2" in out
    assert "pin to reviews-v2: ok" in out


def test_check_fails_when_the_split_is_off(
    demo_services: Callable[[str], str], proxy_factory: Callable[..., Proxy], capsys: Any
) -> None:
    px = proxy_factory(config_for(demo_services("reviews-v1"), demo_services("reviews-v2"), (50, 50)))
    assert demo.check(px.address, 200) is False
    assert "NOT within 85..95 %" in capsys.readouterr().out


def test_demo_once_end_to_end(tmp_path: Path) -> None:
    """What `make demo` runs in CI, on a copy of examples/demo.yaml moved to free ports."""
    ports = {port: free_port() for port in (18081, 18082, 15001, 15000)}
    config = tmp_path / "demo.yaml"
    config.write_text(demo_config(ports))
    result = subprocess.run([sys.executable, "-m", "fastmesh.demo", "--once", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, env=env(), cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reviews-v1 got 90.0 % (ok within 85..95 %)" in result.stdout
    assert "pin to reviews-v2: ok" in result.stdout
    assert f"curl -s -H 'Host: reviews' -H 'x-version: v2' http://127.0.0.1:{ports[15001]}/" in result.stdout


def test_demo_names_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {18081: port, 18082: free_port(), 15001: free_port(), 15000: free_port()}
        config = tmp_path / "demo.yaml"
        config.write_text(demo_config(ports))
        result = subprocess.run([sys.executable, "-m", "fastmesh.demo", "--once", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, env=env(), cwd=REPO)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr
    assert "starting" not in result.stdout  # nothing was started
