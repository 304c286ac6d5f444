"""`make demo`: a local mesh with a traffic split and mTLS that you can curl.

    python -m fastmesh.demo [--config-dir examples] [--once]

Copies the three sidecar configs (demo.yaml: productpage's, demo-reviews-v1.yaml and
demo-reviews-v2.yaml) into a temporary directory, creates a CA there, and starts:

    you --plain--> productpage's sidecar :15001 --mTLS--> reviews-v1's sidecar :15006 (STRICT) --> app :18081
                   (90/10 split, x-version: v2 pin)  \\-mTLS--> reviews-v2's sidecar :15007 (STRICT) --> app :18082

Then checks, with real requests, the split, the caller identity the apps received, the pin, that
plaintext to the STRICT ports is refused and that another identity is refused by the
AuthorizationPolicy; prints curl lines to try and runs until Ctrl-C.
With --once (or CI=true) it exits after the checks: 0 only if they all pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastmesh import demo_checks
from fastmesh.http1 import join_hostport, split_hostport

CLIENT_FILE = "demo.yaml"  # productpage's sidecar: the one you curl
SERVER_FILES = ("demo-reviews-v1.yaml", "demo-reviews-v2.yaml")  # one sidecar per version, STRICT mTLS
OTHER_ACCOUNT = "ratings"  # an identity the AuthorizationPolicy does not allow
START_TIMEOUT_S = 30.0


class DemoError(Exception):
    """Something the user has to fix; printed without a traceback."""


@dataclass(frozen=True)
class Sidecar:
    name: str  # the Proxy document's name: productpage, reviews-v1, ...
    config: Path
    listener: str  # its first listener, ip:port
    admin: str
    spiffe_id: str
    trust_domain: str
    ca_dir: Path


@dataclass(frozen=True)
class App:
    name: str  # what it answers with, e.g. reviews-v1
    address: str


@dataclass(frozen=True)
class Plan:
    client: Sidecar
    servers: list[Sidecar]
    apps: list[App]

    @property
    def addresses(self) -> list[str]:
        sidecars = [self.client, *self.servers]
        return [a.address for a in self.apps] + [s.listener for s in sidecars] + [s.admin for s in sidecars]


def default_config_dir() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "examples"
        if (candidate / CLIENT_FILE).exists():
            return candidate
    return Path("examples")


def sidecar(path: Path, state: Path) -> tuple[Sidecar, list[str]]:
    """The sidecar a config file describes (run from its copy in `state`, where its relative CA
    directory is made), and the endpoints of its backends. Problems name the original file."""
    from fastmesh import config, spiffe
    from fastmesh.config.model import Proxy

    try:
        cfg = config.load_file(path)
        snapshot = config.compile_snapshot(cfg)
    except config.ConfigError as e:
        raise DemoError(str(e)) from e
    spec, proxy = cfg.proxy, next(cfg.objects(Proxy), None)
    if proxy is None or spec.identity is None:
        raise DemoError(f"{path}: the demo needs a Proxy document with spec.identity (mTLS)")
    identity = spec.identity
    listener = spec.listeners[0]
    endpoints = [e for backend in snapshot["backends"] for e in backend["endpoints"]]
    shutil.copyfile(path, state / path.name)
    return Sidecar(
        name=proxy.name, config=state / path.name, listener=join_hostport(listener.address, listener.port),
        admin=spec.admin_address,
        spiffe_id=spiffe.workload_id(identity.trust_domain, identity.namespace, identity.service_account),
        trust_domain=identity.trust_domain, ca_dir=(state / identity.ca.directory).resolve(),
    ), endpoints


def plan(source: Path, state: Path) -> Plan:
    """From the config files in `source`: the sidecars and the apps behind the server sidecars (one each)."""
    client, _ = sidecar(source / CLIENT_FILE, state)
    servers, apps = [], []
    for name in SERVER_FILES:
        server, endpoints = sidecar(source / name, state)
        if len(endpoints) != 1:
            raise DemoError(f"{source / name}: the demo expects one endpoint (the local app), found {endpoints}")
        servers.append(server)
        apps.append(App(server.name, endpoints[0]))
    if len({(s.trust_domain, s.ca_dir) for s in [client, *servers]}) != 1:
        raise DemoError("the demo's configs must share one trust domain and one CA directory")
    return Plan(client, servers, apps)


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


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the demo dies, even by SIGKILL (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Processes:
    """Child processes, their stderr in log files; stopped in reverse order of start."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[subprocess.Popen[str]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log(name), "w") as stderr:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                                     preexec_fn=_die_with_parent)
        self.children.append(child)
        return child

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def first_line(self, name: str, child: subprocess.Popen[str], what: str, accept: str) -> str:
        """The child's first stdout line containing `accept` (bounded wait); DemoError with the end
        of its log if it exits or does not print it in time."""
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
        if found:
            return found[0]
        if not reader.is_alive():  # its stdout is closed: it is exiting
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        code = child.poll()
        state = f"exited with status {code}" if code is not None else f"did not start in {START_TIMEOUT_S:.0f} s"
        tail = "".join(f"\n  | {line}" for line in self.log(name).read_text(errors="replace").splitlines()[-15:])
        raise DemoError(f"{what} {state}; the end of its log:{tail}")

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


def echo_events(name: str, stream: IO[str]) -> None:
    for line in stream:
        print(f"  {name} sidecar event: {line.strip()}", flush=True)


def start_sidecar(procs: Processes, side: Sidecar) -> subprocess.Popen[str]:
    name = f"{side.name}-sidecar"
    proxy = procs.start(name, [sys.executable, "-m", "fastmesh", "proxy", "--config", str(side.config)])
    ready = json.loads(procs.first_line(name, proxy, f"fastmesh proxy ({side.name} sidecar)", '"event":"ready"'))
    assert proxy.stdout is not None
    threading.Thread(target=echo_events, args=(side.name, proxy.stdout), daemon=True).start()
    listeners = ", ".join(f"{name} {address}" for name, address in ready["listeners"].items())
    print(f"  {side.name} sidecar ready: {side.spiffe_id}, listening on {listeners}, admin {ready['admin']}")
    return proxy


def init_ca(p: Plan) -> None:
    from fastmesh.ca import CA

    CA.init(p.client.ca_dir, p.client.trust_domain)
    print(f"==> CA for trust domain {p.client.trust_domain} in {p.client.ca_dir}")


def other_identity(p: Plan, state: Path) -> tuple[str, Path, Path]:
    """A certificate of the mesh's CA for OTHER_ACCOUNT, written to the state directory."""
    from fastmesh import spiffe
    from fastmesh.ca import CA

    spiffe_id = spiffe.workload_id(p.client.trust_domain, "default", OTHER_ACCOUNT)
    issued = CA.load(p.client.ca_dir).issue(spiffe_id)
    chain, key = state / f"{OTHER_ACCOUNT}.pem", state / f"{OTHER_ACCOUNT}-key.pem"
    chain.write_text(issued.cert_chain_pem)
    key.touch(mode=0o600)
    key.write_text(issued.key_pem)
    return spiffe_id, chain, key


def check(p: Plan, state: Path, requests: int) -> bool:
    """Every check runs (and prints) even when one before it failed."""
    caller, listener = p.client.spiffe_id, p.client.listener
    other, chain, key = other_identity(p, state)
    results = [
        demo_checks.check_split(listener, requests, caller),
        demo_checks.check_pin(listener, caller),
        demo_checks.check_plaintext_refused([s.listener for s in p.servers]),
        demo_checks.check_authorization(p.servers[0].listener, other, chain, key, p.client.ca_dir / "bundle.pem"),
    ]
    print(f"==> {sum(results)} of {len(results)} checks passed")
    return all(results)


def curl_lines(p: Plan, state: Path) -> str:
    url, host = f"http://{p.client.listener}/", f"-H 'Host: {demo_checks.HOST}'"
    pin = f"-H '{demo_checks.PIN[0]}: {demo_checks.PIN[1]}'"
    strict = p.servers[0].listener
    other = f"--cert {state}/{OTHER_ACCOUNT}.pem --key {state}/{OTHER_ACCOUNT}-key.pem"
    commands = [
        (f"curl -s {host} {url}", "v1 9 times in 10; the caller is productpage's identity"),
        (f"curl -s {host} {pin} {url}", "always v2"),
        (f"for i in $(seq 100); do curl -s {host} {url}; done | sort | uniq -c", ""),
        (f"curl -s {host} http://{strict}/", "fails: plaintext to a STRICT port"),
        (f"curl -sk {other} {host} https://{strict}/", f"403: {OTHER_ACCOUNT} is not productpage"),
        (f"curl -s http://{p.client.admin}/metrics | grep fastmesh_requests_total", ""),
    ]
    width = max(len(c) for c, note in commands if note and len(c) < 80)
    lines = [f"  {c:{width}}  # {note}" if note else f"  {c}" for c, note in commands]
    admins = ", ".join(f"{s.name} http://{s.admin}" for s in [p.client, *p.servers])
    return "\n".join([
        *lines,
        f"  admin APIs (/config /stats /metrics): {admins}",
        f"  configs and logs (edit a config: its sidecar reloads it): {state}",
    ])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(config_dir: Path, once: bool, requests: int) -> int:
    state = Path(tempfile.mkdtemp(prefix="fastmesh-demo-"))
    procs = Processes(state)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job inherits it ignored
        signal.signal(signum, _interrupt)  # stop the children and clean up
    try:
        p = plan(config_dir, state)
        check_free(p.addresses)
        init_ca(p)
        print(f"==> starting {len(p.apps)} demo apps")
        for app in p.apps:
            child = procs.start(app.name, [sys.executable, "-m", "fastmesh.demo_service",
                                           "--name", app.name, "--address", app.address])
            print("  " + procs.first_line(app.name, child, f"demo app {app.name}", "listening").strip())
        print(f"==> starting {len(p.servers) + 1} sidecars (fastmesh proxy --config {state}/...)")
        proxies = {s.name: start_sidecar(procs, s) for s in [*p.servers, p.client]}
        ok = check(p, state, requests)
        print("==> try it yourself:")
        print(curl_lines(p, state))
        if once:
            return 0 if ok else 1
        print("==> running; Ctrl-C to stop", flush=True)
        while all(proxy.poll() is None for proxy in proxies.values()):
            time.sleep(0.5)
        name, proxy = next((n, x) for n, x in proxies.items() if x.poll() is not None)
        raise DemoError(f"fastmesh proxy ({name} sidecar) exited with status {proxy.returncode}")
    except KeyboardInterrupt:
        print()
        return 0
    finally:
        if procs.children:
            print("==> stopping", flush=True)
        procs.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="fastmesh.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--config-dir", type=Path, default=None,
                      help=f"directory holding {CLIENT_FILE} and {' '.join(SERVER_FILES)} (default: examples/)")
    args.add_argument("--once", action="store_true",
                      help="exit after the checks (default when CI=true)")
    args.add_argument("--requests", type=int, default=1000, help="requests for the split check")
    opts = args.parse_args(argv)
    if opts.requests < 1:
        args.error(f"--requests must be at least 1 (got {opts.requests})")
    once = opts.once or os.environ.get("CI", "").lower() == "true"
    try:
        return run(opts.config_dir or default_config_dir(), once, opts.requests)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
