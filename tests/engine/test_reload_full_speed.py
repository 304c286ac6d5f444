"""Hot reload at full speed: nginx upstreams (not the Python echo server) so the proxy itself is the
bottleneck, 20 s of wrk (HTTP/1.1) and h2load (h2c) at once, the weights rewritten every 2.5 s.
Not one request may fail, and afterwards the last weights hold exactly (smooth weighted round robin).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Loads, parse_h2load, parse_wrk, split_config

DURATION_S = 20
WEIGHTS = [(90, 10), (10, 90), (0, 100), (100, 0), (50, 50), (30, 70)]
NGINX_CONF = """\
daemon off; master_process off; worker_processes 1;
pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout {keepalive};
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "{name}\\n"; }} }}
}}
"""


class Nginx:
    """One nginx worker answering `<name>\\n`. nginx cannot bind port 0 and report it, so a free port
    is taken from the kernel and nginx is started on it; if another process grabbed it meanwhile,
    nginx exits and the next free port is tried."""

    def __init__(self, name: str, workdir: Path, keepalive: str = "60s") -> None:
        self.dir = workdir / f"nginx-{name}"
        self.dir.mkdir()
        for _attempt in range(5):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            conf = self.dir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, name=name, keepalive=keepalive))
            self.proc = subprocess.Popen(
                ["nginx", "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._serving():
                return
            self.proc.kill()
            self.proc.wait()
        raise AssertionError(f"nginx {name} did not start: {(self.dir / 'error.log').read_text()}")

    def _serving(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:  # nginx prints nothing when it listens: connecting is the readiness check
                time.sleep(0.02)
        return False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def nginx_pair(tmp_path: Path) -> Iterator[tuple[Nginx, Nginx]]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is missing: run `make system-deps`")
    v1 = Nginx("v1", tmp_path)
    try:
        v2 = Nginx("v2", tmp_path)
    except BaseException:
        v1.stop()
        raise
    yield v1, v2
    v1.stop()
    v2.stop()


@pytest.mark.slow
def test_hot_reload_at_full_speed_with_nginx_upstreams(nginx_pair, proxy_factory, require_tools):
    require_tools("wrk", "h2load")
    v1, v2 = nginx_pair
    addresses = {"v1": v1.address, "v2": v2.address}
    px = proxy_factory(split_config(addresses, {"v1": 50, "v2": 50}))

    t0 = time.monotonic()
    loads = Loads(px, "reviews", DURATION_S, wrk_conns=32, h2_conns=4, h2_streams=16)
    events: list[dict] = []
    landed: list[float] = []

    def rewrite() -> None:
        for i, (w1, w2) in enumerate(WEIGHTS):
            time.sleep(max(0.0, t0 + 2.0 + 2.5 * i - time.monotonic()))  # the schedule, not readiness
            events.append(px.reload(split_config(addresses, {"v1": w1, "v2": w2})))
            landed.append(time.monotonic() - t0)

    wrk_out, h2_out = loads.finish(during=rewrite)
    print(wrk_out, h2_out, f"reloads landed at t0+{[round(t, 2) for t in landed]} s", sep="\n")

    assert [e["event"] for e in events] == ["reloaded"] * len(WEIGHTS)
    assert landed[-1] < DURATION_S, landed  # every reload happened under load
    wrk_stats = parse_wrk(wrk_out)
    assert (wrk_stats["non_2xx_3xx"], wrk_stats["socket_errors"]) == (0, 0), wrk_out
    h2_stats = parse_h2load(h2_out)
    assert (h2_stats["failed"], h2_stats["errored"], h2_stats["timeout"]) == (0, 0, 0), h2_out
    assert h2_stats["succeeded"] == h2_stats["done"] == h2_stats["2xx"], h2_out
    # Full speed: far beyond what the Python echo upstream allows (~1-2k/s), so reloads raced real load.
    assert wrk_stats["requests"] + h2_stats["succeeded"] > 20 * DURATION_S * 1000 // 10, (wrk_out, h2_out)

    # The last weights (30/70) hold exactly over whole periods of the weighted round robin.
    with px.client() as client:
        seen = Counter(client.get(f"{px.url}/", headers={"host": "reviews"}).text.strip() for _ in range(1000))
    assert seen == {"v1": 300, "v2": 700}, seen
