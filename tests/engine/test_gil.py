"""The engine runs on its own threads: no Python code per request, and `workerThreads` threads.

The GIL test holds the GIL in the test's own thread (a busy loop that never releases it) while
curl, a separate process, sends requests through an in-process Engine to a hypercorn upstream
(also its own process). If serving a request needed the GIL even once, curl could not finish
before the busy loop ends.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.conftest import snap_route, snapshot
from tests.harness import Proxy, Upstream, mesh_config, parse_h2load

HOLD_S = 2.0
SLOW_MS = 150
REQUESTS = 6  # sequential, each waits SLOW_MS at the upstream: curl cannot finish before the loop starts


def hold_the_gil(seconds: float) -> tuple[float, float]:
    """Spins for `seconds` without releasing the GIL; returns (start, end) in time.monotonic().

    time.monotonic() does not release the GIL, and with a 30 s switch interval no other thread
    is handed it by the interpreter meanwhile.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            pass
        return start, time.monotonic()
    finally:
        sys.setswitchinterval(previous)


class Ticker:
    """A Python thread noting the time every 10 ms: the gap in its ticks shows the GIL was held."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.ticks.append(time.monotonic())

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        return self.ticks


def test_requests_are_served_while_python_holds_the_gil(upstream_factory, engine_factory, require_tools):
    require_tools("curl", "h2load")
    up = upstream_factory("v1")
    engine = engine_factory(snapshot({"b1": [up.address]}, [snap_route("all", [("b1", 1)])]))
    urls = [f"{engine.url}/slow/{SLOW_MS}?n={i}" for i in range(REQUESTS)]
    ticker = Ticker()

    launched = time.monotonic()
    # HTTP/1.1: curl, one keep-alive connection. HTTP/2: h2load, one connection, one stream at a
    # time (curl 7.88 cannot reuse an h2c prior-knowledge connection for a second URL).
    each = [arg for url in urls for arg in ("-o", "/dev/null", url)]
    h1 = subprocess.Popen(["curl", "-sS", "-w", "%{http_code} %{http_version}\n", *each],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    h2 = subprocess.Popen(["h2load", "-n", str(REQUESTS), "-c", "1", "-m", "1", urls[0]],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start, end = hold_the_gil(HOLD_S)
    # Right after the loop, before anything else can run: had either curl needed a Python
    # thread of this process, it would still be waiting for its next answer.
    finished = {"h1": h1.poll(), "h2": h2.poll()}
    h1_out, h1_err = h1.communicate(timeout=30)
    h2_out, h2_err = h2.communicate(timeout=30)
    ticks = ticker.stop()

    assert start - launched < REQUESTS * SLOW_MS / 1000, "curl may have finished before the GIL was taken"
    assert not [t for t in ticks if start + 0.05 < t < end - 0.05], "the busy loop let other Python threads run"
    assert finished == {"h1": 0, "h2": 0}, (finished, h1_err, h2_err)
    assert h1_out.splitlines() == ["200 1.1"] * REQUESTS, h1_err
    h2_stats = parse_h2load(h2_out)
    assert (h2_stats["succeeded"], h2_stats["2xx"]) == (REQUESTS, REQUESTS), h2_out + h2_err
    assert up.stats()["requests"] == 2 * REQUESTS


def engine_threads(pid: int) -> list[str]:
    """Names (comm) of the process's threads that belong to the engine's tokio runtime."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread exited meanwhile
            continue
    return [name for name in names if name == "fastmesh-engine"]


@pytest.mark.parametrize("threads", [1, 2])
def test_worker_threads_sets_the_engine_thread_count(
    threads: int, upstream_factory: Callable[..., Upstream], proxy_factory: Callable[..., Proxy]
) -> None:
    up = upstream_factory("v1")
    px = proxy_factory(mesh_config(services={"echo": [up.address]}, proxy={"workerThreads": threads}))
    assert len(engine_threads(px.pid)) == threads
    # they serve: both protocols, a few connections
    for http2 in (False, True):
        for _ in range(3):
            with px.client(http2=http2) as client:
                assert client.get("/", headers={"host": "echo"}).json()["upstream"] == "v1"
    assert len(engine_threads(px.pid)) == threads
