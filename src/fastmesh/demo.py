"""`make demo`: two versions of a service, fastmesh in front splitting 90/10, a header pinning v2.

    python -m fastmesh.demo [--config examples/demo.yaml] [--once]

Starts one demo service per endpoint in the config, starts `fastmesh proxy`, checks the split
and the pin with 1,000 real requests, prints curl lines to try, and runs until Ctrl-C.
With --once (or CI=true) it exits after the check: 0 only if the split is 85..95 % and the pin works.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastmesh.http1 import join_hostport, split_hostport

HOST = "reviews"  # the Service the demo's HTTPRoute is attached to
MAJOR, MINOR = "reviews-v1", "reviews-v2"
PIN = ("x-version", "v2")
SPLIT_RANGE = (85.0, 95.0)  # percent of requests MAJOR must get
START_TIMEOUT_S = 30.0


class DemoError(Exception):
    """Something the user has to fix; printed without a traceback."""


@dataclass(frozen=True)
class Service:
    name: str  # what it answers with, e.g. reviews-v1
    address: str


def default_config() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "examples" / "demo.yaml"
        if candidate.exists():
            return candidate
    return Path("examples/demo.yaml")


def plan(config_path: Path) -> tuple[list[Service], str, str]:
    """The demo services to start (from the config's endpoints), the listener and the admin address."""
    from fastmesh import config

    try:
        cfg = config.load_file(config_path)
        snapshot = config.compile_snapshot(cfg)
    except config.ConfigError as e:
        raise DemoError(str(e)) from e
    services = []
    for backend in snapshot["backends"]:
        # "default/reviews-v1:8080" -> "reviews-v1"
        name = backend["name"].split("/", 1)[-1].rsplit(":", 1)[0]
        services += [Service(name, endpoint) for endpoint in backend["endpoints"]]
    listener = cfg.proxy.listeners[0]
    return services, join_hostport(listener.address, listener.port), cfg.proxy.admin_address


def check_free(addresses: Sequence[str]) -> None:
    for address in addresses:
        host, port = split_hostport(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                raise DemoError(
                    f"port {address} is already in use ({e.strerror}); the demo needs it.\n"
                    f"  find the owner with: ss -ltnp 'sport = :{port}'  (a previous demo still running?)"
                ) from e


class Processes:
    """Child processes, stopped in reverse order of start."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(self.children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def first_line(child: subprocess.Popen[str], what: str, accept: str) -> str:
    """Wait for the child's first stdout line containing `accept` (bounded); DemoError if it dies."""
    assert child.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if accept in line:
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not found:
        code = child.poll()
        state = f"exited with status {code}" if code is not None else "did not start in time"
        raise DemoError(f"{what} {state} (its errors are printed above)")
    return found[0]


def echo_events(stream: IO[str]) -> None:
    for line in stream:
        print(f"  proxy event: {line.strip()}", flush=True)


def get(conn: http.client.HTTPConnection, headers: dict[str, str]) -> str:
    conn.request("GET", "/", headers={"Host": HOST, **headers})
    response = conn.getresponse()
    body = response.read().decode(errors="replace").strip()
    return body if response.status == 200 else f"HTTP {response.status}"


def observe(listener: str, count: int, headers: dict[str, str]) -> Counter[str]:
    host, port = split_hostport(listener)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        return Counter(get(conn, headers) for _ in range(count))
    finally:
        conn.close()


def curl_lines(listener: str, admin: str) -> str:
    url = f"http://{listener}/"
    return "\n".join([
        f"  curl -s -H 'Host: {HOST}' {url}",
        f"  curl -s -H 'Host: {HOST}' -H '{PIN[0]}: {PIN[1]}' {url}",
        f"  for i in $(seq 100); do curl -s -H 'Host: {HOST}' {url}; done | sort | uniq -c",
        f"  curl -s http://{admin}/metrics | grep fastmesh_requests_total",
        f"  curl -s http://{admin}/config",
    ])


def check(listener: str, requests: int) -> bool:
    split = observe(listener, requests, {})
    major = split[f"hello from {MAJOR}"]
    share = 100.0 * major / requests
    print(f"==> {requests} requests to Host: {HOST}")
    for answer, n in split.most_common():
        print(f"  {n:5d}  {answer}")
    split_ok = SPLIT_RANGE[0] <= share <= SPLIT_RANGE[1]
    print(f"  {MAJOR} got {share:.1f} % ({'ok' if split_ok else 'NOT'} within "
          f"{SPLIT_RANGE[0]:.0f}..{SPLIT_RANGE[1]:.0f} %)")
    pinned = observe(listener, 100, {PIN[0]: PIN[1]})
    pin_ok = pinned == Counter({f"hello from {MINOR}": 100})
    print(f"==> 100 requests with {PIN[0]}: {PIN[1]}")
    for answer, n in pinned.most_common():
        print(f"  {n:5d}  {answer}")
    print(f"  pin to {MINOR}: {'ok' if pin_ok else 'FAILED'}")
    return split_ok and pin_ok


def run(config_path: Path, once: bool, requests: int) -> int:
    services, listener, admin = plan(config_path)
    check_free([s.address for s in services] + [listener, admin])
    procs = Processes()
    try:
        print(f"==> starting {len(services)} demo services")
        for service in services:
            child = procs.start([sys.executable, "-m", "fastmesh.demo_service",
                                 "--name", service.name, "--address", service.address])
            print("  " + first_line(child, f"demo service {service.name}", "listening").strip())
        print(f"==> starting fastmesh proxy --config {config_path}")
        proxy = procs.start([sys.executable, "-m", "fastmesh", "proxy", "--config", str(config_path)])
        ready = json.loads(first_line(proxy, "fastmesh proxy", '"event":"ready"'))
        assert proxy.stdout is not None
        threading.Thread(target=echo_events, args=(proxy.stdout,), daemon=True).start()
        listener = next(iter(ready["listeners"].values()), listener)
        admin = ready["admin"]
        print(f"  ready: config version {ready['version']}, listening on {listener}, admin {admin}")
        ok = check(listener, requests)
        print("==> try it yourself:")
        print(curl_lines(listener, admin))
        if once:
            return 0 if ok else 1
        print("==> running; Ctrl-C to stop (edit the config file: fastmesh reloads it)", flush=True)
        while proxy.poll() is None:
            time.sleep(0.5)
        raise DemoError(f"fastmesh proxy exited with status {proxy.returncode}")
    except KeyboardInterrupt:
        print("\n==> stopping")
        return 0
    finally:
        procs.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="fastmesh.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--config", type=Path, default=None, help="default: examples/demo.yaml")
    args.add_argument("--once", action="store_true",
                      help="exit after the check (default when CI=true)")
    args.add_argument("--requests", type=int, default=1000, help="requests for the split check")
    opts = args.parse_args(argv)
    once = opts.once or os.environ.get("CI", "").lower() == "true"
    try:
        return run(opts.config or default_config(), once, opts.requests)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
