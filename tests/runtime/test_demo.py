"""`make demo` (python -m fastmesh.demo): the demo apps, the whole mesh run non-interactively
(split, caller identity over mTLS, pin, plaintext refused, AuthorizationPolicy), and its failure modes.

The end-to-end runs use copies of the three examples/demo*.yaml moved to free ports: the demo
starts real processes (two apps, three `fastmesh proxy`) and checks them with real requests.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastmesh import demo
from tests.harness import REPO, curl, wait_until

EXAMPLES = REPO / "examples"
FILES = (demo.CLIENT_FILE, *demo.SERVER_FILES)
FIXED_PORTS = (15000, 15001, 15006, 15007, 15016, 15017, 18081, 18082)
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"

Docs = list[dict[str, Any]]


def free_port() -> int:
    """A port free right now. Only for the demo, whose configs name fixed ports by design."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moved(docs: Docs, ports: dict[int, int]) -> Docs:
    """The documents with every fixed port (admin, listeners, endpoints) replaced (old -> new)."""
    for doc in docs:
        if doc["kind"] == "Proxy":
            spec = doc["spec"]
            host, port = spec["admin"]["address"].rsplit(":", 1)
            spec["admin"]["address"] = f"{host}:{ports[int(port)]}"
            for listener in spec["listeners"]:
                listener["port"] = ports[listener["port"]]
        if doc["kind"] == "EndpointSlice":
            for port in doc["ports"]:
                port["port"] = ports[port["port"]]
    return docs


def demo_dir(directory: Path, ports: dict[int, int], edit: Callable[[str, Docs], None] | None = None) -> Path:
    """The three demo configs moved to `ports`, optionally edited (edit(file name, documents)), in `directory`."""
    directory.mkdir()
    for name in FILES:
        docs = moved(list(yaml.safe_load_all((EXAMPLES / name).read_text())), ports)
        if edit:
            edit(name, docs)
        (directory / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return directory


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", CI="")


def run_demo(config_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastmesh.demo", "--once", "--config-dir", str(config_dir), *args],
                          capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)


@pytest.fixture
def demo_app() -> Iterator[Callable[[str], str]]:
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


def test_demo_app_answers_with_its_name_and_the_caller_from_xfcc(demo_app: Callable[[str], str]) -> None:
    host, port = demo_app("reviews-v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    xfcc = f"By=spiffe://cluster.local/ns/default/sa/reviews-v1;Hash=ab12;URI={PRODUCTPAGE}"
    answers = []
    for headers in ({}, {"x-forwarded-client-cert": xfcc}, {}):  # one keep-alive connection
        conn.request("GET", "/anything", headers=headers)
        response = conn.getresponse()
        answers.append((response.status, response.read()))
    conn.close()
    assert answers == [
        (200, b"hello from reviews-v1, caller none (no mTLS)\n"),
        (200, f"hello from reviews-v1, caller {PRODUCTPAGE}\n".encode()),
        (200, b"hello from reviews-v1, caller none (no mTLS)\n"),
    ]


def test_demo_once_end_to_end(tmp_path: Path) -> None:
    """What `make demo` runs in CI: CA, two apps, three sidecars, every check passing."""
    ports = {port: free_port() for port in FIXED_PORTS}
    result = run_demo(demo_dir(tmp_path / "examples", ports))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "==> CA for trust domain cluster.local in " in out
    for name in ("reviews-v1", "reviews-v2", "productpage"):
        assert f"  {name} sidecar ready: spiffe://cluster.local/ns/default/sa/{name}" in out
    # the split, and the identity the apps got in x-forwarded-client-cert from their sidecars
    assert f"  900  hello from reviews-v1, caller {PRODUCTPAGE}" in out
    assert f"  100  hello from reviews-v2, caller {PRODUCTPAGE}" in out
    assert "reviews-v1 got 90.0 % (ok within 85..95 %)" in out
    assert f"the apps saw the caller {PRODUCTPAGE}: ok" in out
    assert f"  100  hello from reviews-v2, caller {PRODUCTPAGE}\n  pin to reviews-v2: ok" in out
    for strict in (15006, 15007):
        assert f"127.0.0.1:{ports[strict]}: closed without an answer: ok" in out
    assert "HTTP 403 RBAC: access denied: no ALLOW policy matched: ok" in out
    assert "==> 4 of 4 checks passed" in out
    assert f"curl -s -H 'Host: reviews' -H 'x-version: v2' http://127.0.0.1:{ports[15001]}/" in out
    # the temporary directory (CA keys included) is gone once the demo stops
    state = re.search(r"configs and logs \(edit a config: its sidecar reloads it\): (\S+)", out)
    assert state is not None and "fastmesh-demo-" in state[1]
    assert not Path(state[1]).exists()


def test_demo_once_reports_each_broken_promise(tmp_path: Path) -> None:
    """The checks fail when the mesh does not do what the demo says: a 50/50 split, reviews-v2
    reached in plaintext (not meshed, its listener not STRICT, no policy) and a policy on reviews-v1
    allowing any identity."""

    def break_it(name: str, docs: Docs) -> None:
        if name == "demo-reviews-v2.yaml":
            docs[:] = [doc for doc in docs if doc["kind"] != "AuthorizationPolicy"]
        for doc in docs:
            if name == demo.CLIENT_FILE and doc["kind"] == "HTTPRoute":
                split = doc["spec"]["rules"][-1]["backendRefs"]
                split[0]["weight"], split[1]["weight"] = 50, 50
            if name == demo.CLIENT_FILE and doc["kind"] == "Service" and doc["metadata"]["name"] == "reviews-v2":
                del doc["metadata"]["annotations"]
            if name == "demo-reviews-v2.yaml" and doc["kind"] == "Proxy":
                doc["spec"]["listeners"][0]["mtls"] = "DISABLE"
            if name == "demo-reviews-v1.yaml" and doc["kind"] == "AuthorizationPolicy":
                doc["spec"]["rules"][0]["from"][0]["source"]["principals"] = ["*"]

    ports = {port: free_port() for port in FIXED_PORTS}
    result = run_demo(demo_dir(tmp_path / "examples", ports, break_it), "--requests", "200")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "reviews-v1 got 50.0 % (NOT within 85..95 %)" in out
    assert "hello from reviews-v2, caller none (no mTLS)" in out
    assert f"the apps saw the caller {PRODUCTPAGE}: NOT in every answer" in out
    assert "pin to reviews-v2: FAILED" in out
    assert f"127.0.0.1:{ports[15006]}: closed without an answer: ok" in out
    assert f"127.0.0.1:{ports[15007]}: NOT refused: HTTP 200" in out
    assert f"HTTP 200 hello from reviews-v1, caller spiffe://cluster.local/ns/default/sa/{demo.OTHER_ACCOUNT}: NOT" in out
    assert "==> 0 of 4 checks passed" in out


def test_demo_names_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {p: free_port() for p in FIXED_PORTS} | {18081: port}
        result = run_demo(demo_dir(tmp_path / "examples", ports), timeout=60)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr
    assert "starting" not in result.stdout and "CA" not in result.stdout  # nothing was made or started


def test_demo_names_a_missing_config(tmp_path: Path) -> None:
    directory = demo_dir(tmp_path / "examples", {p: free_port() for p in FIXED_PORTS})
    (directory / "demo-reviews-v2.yaml").unlink()
    result = run_demo(directory, timeout=60)
    assert result.returncode == 1
    assert f"{directory / 'demo-reviews-v2.yaml'}: cannot read: No such file or directory" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_demo_runs_until_stopped_then_stops_everything(tmp_path: Path, signum: int) -> None:
    """Without --once the mesh keeps serving after the checks; Ctrl-C (or SIGTERM) stops every
    process it started and removes its directory (the CA keys with it). Killed outright, the demo
    cannot clean up, but its processes still stop (they get SIGTERM when it dies)."""
    ports = {port: free_port() for port in FIXED_PORTS}
    config_dir = demo_dir(tmp_path / "examples", ports)
    child = subprocess.Popen([sys.executable, "-m", "fastmesh.demo", "--config-dir", str(config_dir),
                              "--requests", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env(), cwd=REPO,
                             # started as a shell's background job is: SIGINT ignored, which it must undo
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert child.stdout is not None
        lines = []
        for line in child.stdout:  # bounded: the demo gives up on a process after 30 s
            lines.append(line)
            if line.startswith("==> running"):
                break
        out = "".join(lines)
        assert "==> 4 of 4 checks passed" in out, out
        state = re.search(r"configs and logs \(edit a config: its sidecar reloads it\): (\S+)", out)
        assert state is not None
        answer = curl("-H", "Host: reviews", "-H", "x-version: v2", f"http://127.0.0.1:{ports[15001]}/", timeout=20)
        assert answer.stdout == f"hello from reviews-v2, caller {PRODUCTPAGE}\n", answer.stderr
        child.send_signal(signum)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if signum == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
        shutil.rmtree(state[1])
    else:
        assert child.returncode == 0, rest + err
        assert "==> stopping" in rest
        assert not Path(state[1]).exists()

    def all_free() -> bool:  # every app and sidecar is gone: its port is free again
        for port in FIXED_PORTS:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are fine
                try:
                    s.bind(("127.0.0.1", ports[port]))
                except OSError:
                    return False
        return True

    wait_until(all_free, timeout=30, what="the demo's processes to stop")


def test_demo_names_a_sidecar_that_fails_to_start_with_its_log(tmp_path: Path) -> None:
    """reviews-v2's admin port is reviews-v1's inbound port (each free alone, so the demo starts):
    the second sidecar cannot bind it; the demo says which one, shows its log and stops the rest."""
    ports = {port: free_port() for port in FIXED_PORTS} | {15017: 0}
    ports[15017] = ports[15006]
    result = run_demo(demo_dir(tmp_path / "examples", ports), timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reviews-v1 sidecar ready" in result.stdout and "reviews-v2 sidecar ready" not in result.stdout
    assert "demo: fastmesh proxy (reviews-v2 sidecar) exited with status 1; the end of its log:" in result.stderr
    assert f"127.0.0.1:{ports[15006]}" in result.stderr.split("the end of its log:")[1]
    assert "==> stopping" in result.stdout
    for port in (15006, 18081, 18082, 15016):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", ports[port]))


def test_demo_names_the_file_and_field_of_a_bad_config(tmp_path: Path) -> None:
    def bad_weight(name: str, docs: Docs) -> None:
        for doc in docs:
            if name == demo.CLIENT_FILE and doc["kind"] == "HTTPRoute":
                doc["spec"]["rules"][-1]["backendRefs"][0]["weight"] = -1

    directory = demo_dir(tmp_path / "examples", {p: free_port() for p in FIXED_PORTS}, bad_weight)
    result = run_demo(directory, timeout=60)
    assert result.returncode == 1
    assert (f"{directory / 'demo.yaml'}: document 7 (HTTPRoute default/reviews): "
            "spec.rules[1].backendRefs[0].weight: must be between 0 and 1000000 (got -1)") in result.stderr, result.stderr
    assert "starting" not in result.stdout and "CA" not in result.stdout
