"""Integration harness: real upstream servers and a real `python -m fastmesh proxy` on loopback.

    up = Upstream.start(name="v1", http2=True)          # hypercorn in its own process, port 0
    px = Proxy.start(mesh_config(services=[service("reviews-v1", [up.address])]), tmp_path)
    httpx.get(px.url + "/", headers={"host": "reviews-v1"}).json()["upstream"] == "v1"

Every server binds port 0 and reports the address it got; readiness is a line the process
prints, never a sleep. The config builders write the user's YAML (Service, EndpointSlice,
HTTPRoute, Proxy) with the upstream addresses filled in.
"""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class HarnessError(AssertionError):
    """A process of the harness did not do what it should (failed to start, died, timed out)."""


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Polls `condition` until it returns something truthy; raises after `timeout` seconds.

    For conditions with no event to wait on (a pool closing idle connections); not for readiness.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# === impl _Process ===


class _Process:
    """A child process that prints JSON event lines on stdout; stderr goes to a log file."""

    def __init__(self, argv: list[str], log_path: Path, label: str) -> None:
        self.label = label
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO / "src") + os.pathsep + str(REPO))
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name=f"{label}-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "stdout", "line": line}
            if not isinstance(event, dict):
                event = {"event": "stdout", "line": line}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_event(self, *kinds: str, timeout: float = 15.0) -> dict[str, Any]:
        """Returns the next not-yet-returned event whose "event" is one of `kinds`.

        Events of other kinds that come before it are skipped (they stay in `events`).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(self._cursor, len(self.events)):
                    if self.events[index].get("event") in kinds:
                        self._cursor = index + 1
                        return self.events[index]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"timed out after {timeout}s"
        raise HarnessError(
            f"{self.label} {why} waiting for event {kinds}; events so far: {self.events}; "
            f"exit code {self.popen.poll()}; stderr tail:\n{self.stderr_tail()}"
        )

    def stderr_tail(self, lines: int = 40) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signals the process and waits; kills it (its whole session) if it does not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._reader.join(5)
        self._log.close()
        return self.popen.returncode


# === impl Upstream ===


@dataclass
class Upstream:
    """A hypercorn echo server (tests/upstream_app.py) in its own process on 127.0.0.1:0."""

    name: str
    http2: bool
    address: str
    process: _Process = field(repr=False)

    @classmethod
    def start(
        cls,
        name: str = "v1",
        http2: bool = False,
        *,
        delay_ms: int = 0,
        fail_status: int = 0,
        fail_every: int = 1,
        log_dir: Path | None = None,
    ) -> Upstream:
        return cls.start_many([name], http2=http2, delay_ms=delay_ms, fail_status=fail_status,
                              fail_every=fail_every, log_dir=log_dir)[0]

    @classmethod
    def start_many(
        cls,
        names: Sequence[str],
        http2: bool = False,
        *,
        delay_ms: int = 0,
        fail_status: int = 0,
        fail_every: int = 1,
        log_dir: Path | None = None,
    ) -> list[Upstream]:
        """Starts several upstreams at once (they boot in parallel) and waits for all."""
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        procs = []
        for name in names:
            argv = [PYTHON, "-m", "tests.upstream_app", "--name", name]
            if http2:
                argv.append("--http2")
            if delay_ms:
                argv += ["--delay-ms", str(delay_ms)]
            if fail_status:
                argv += ["--fail-status", str(fail_status), "--fail-every", str(fail_every)]
            log = log_dir / f"upstream-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
            procs.append(_Process(argv, log, f"upstream {name}"))
        ups = []
        try:
            for name, proc in zip(names, procs, strict=True):
                ready = proc.wait_event("ready", timeout=30)
                ups.append(cls(name=name, http2=http2, address=ready["address"], process=proc))
        except BaseException:
            for proc in procs:
                proc.stop(signal.SIGKILL)
            raise
        return ups

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stats(self) -> dict[str, Any]:
        """This upstream's own counters (requests, connections = distinct client ports, ...)."""
        return httpx.get(f"{self.url}/_upstream/stats", timeout=5).json()

    def established_connections(self) -> int:
        """TCP connections currently established to this upstream's port, read from /proc/net/tcp."""
        return count_established(self.port)

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM, timeout=5)


def count_established(local_port: int) -> int:
    """Established TCP sockets (IPv4 loopback) whose local port is `local_port`: server side."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            cols = row.split()
            port = int(cols[1].rsplit(":", 1)[1], 16)
            if port == local_port and cols[3] == "01":  # 01 = TCP_ESTABLISHED
                count += 1
    return count


# === impl Proxy ===


class Proxy:
    """`python -m fastmesh proxy` on a config file, its listener and admin server on port 0."""

    _seq = 0

    def __init__(self, process: _Process, config_path: Path, ready: dict[str, Any]) -> None:
        self.process = process
        self.config_path = config_path
        self.ready = ready
        self.admin_address: str = ready["admin"]
        self.listeners: dict[str, str] = dict(ready["listeners"])
        self.address = self.listeners["outbound"]
        self.url = f"http://{self.address}"
        self.admin_url = f"http://{self.admin_address}"

    @classmethod
    def start(
        cls,
        config: str | Path,
        tmp_path: Path,
        *,
        listeners: Iterable[str] = ("outbound",),
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> Proxy:
        """Starts the proxy on `config` (YAML text, or a path that is copied) and waits for "ready"."""
        cls._seq += 1
        config_path = tmp_path / f"mesh-{cls._seq}.yaml"
        text = Path(config).read_text() if isinstance(config, Path) else config
        config_path.write_text(text)
        return cls._launch(["--config", str(config_path)], config_path, tmp_path,
                           listeners=listeners, extra_args=extra_args, ready_timeout=ready_timeout)

    @classmethod
    def start_file(cls, config_path: Path, tmp_path: Path, **options: Any) -> Proxy:
        """The proxy on `config_path` itself (not a copy): a restart on the same file sees what the last
        one left beside it (e.g. `<config>.rollout-state.json`)."""
        cls._seq += 1
        return cls._launch(["--config", str(config_path)], config_path, tmp_path, **options)

    @classmethod
    def start_kubernetes(cls, kubeconfig: str | Path, namespace: str | None, tmp_path: Path, **options: Any) -> Proxy:
        """`fastmesh proxy --kubernetes` on one namespace of a cluster (None: all of them; options as for
        `start`), once "ready"."""
        cls._seq += 1
        source = ["--kubernetes", "--kubeconfig", str(kubeconfig)]
        source += ["--kube-namespace", namespace] if namespace else []
        return cls._launch(source, Path(kubeconfig), tmp_path, **options)

    @classmethod
    def start_control_plane(cls, url: str, ca_bundle: str | Path, token_file: str | Path, tmp_path: Path,
                            **options: Any) -> Proxy:
        """`fastmesh proxy --control-plane URL` (options as for `start`), once "ready"."""
        cls._seq += 1
        source = ["--control-plane", url, "--ca-bundle", str(ca_bundle), "--token-file", str(token_file)]
        return cls._launch(source, Path(token_file), tmp_path, **options)

    @classmethod
    def _launch(
        cls,
        source: list[str],
        config_path: Path,
        tmp_path: Path,
        *,
        listeners: Iterable[str] = ("outbound",),
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> Proxy:
        argv = [PYTHON, "-m", "fastmesh", "proxy", *source, "--admin-address", "127.0.0.1:0"]
        for name in listeners:
            argv += ["--listener", f"{name}=127.0.0.1:0"]
        argv += list(extra_args)
        process = _Process(argv, tmp_path / f"proxy-{cls._seq}.stderr.log", "fastmesh proxy")
        try:
            ready = process.wait_event("ready", timeout=ready_timeout)
        except BaseException:
            process.stop(signal.SIGKILL)
            raise
        return cls(process, config_path, ready)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.process.events

    def wait_event(self, *kinds: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.process.wait_event(*kinds, timeout=timeout)

    def write_config(self, text: str) -> None:
        """Replaces the config file atomically (write aside, rename), as a config map update does."""
        aside = self.config_path.with_name(self.config_path.name + ".new")
        aside.write_text(text)
        os.replace(aside, self.config_path)

    def reload(self, text: str, timeout: float = 15.0) -> dict[str, Any]:
        """Rewrites the config file and waits for the proxy to apply it; fails on reload_failed."""
        self.write_config(text)
        event = self.wait_event("reloaded", "reload_failed", timeout=timeout)
        if event["event"] != "reloaded":
            raise HarnessError(f"reload refused: {event}")
        return event

    def sighup(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def stats(self) -> dict[str, Any]:
        """The engine counters from the admin API (/stats)."""
        response = httpx.get(f"{self.admin_url}/stats", timeout=5)
        response.raise_for_status()
        return response.json()

    def upstream_connections_open(self, endpoint: str) -> int:
        """connections_open of `endpoint` summed over backends, from /stats."""
        return sum(
            entry.get("connections_open", 0)
            for entry in self.stats().get("upstream", [])
            if entry.get("endpoint") == endpoint
        )

    def client(self, http2: bool = False, **kwargs: Any) -> httpx.Client:
        """An httpx client on the outbound listener; http2=True speaks h2c with prior knowledge."""
        kwargs.setdefault("timeout", 30)
        if http2:
            return httpx.Client(base_url=self.url, http1=False, http2=True, **kwargs)
        return httpx.Client(base_url=self.url, **kwargs)

    def get(self, path: str, host: str, **kwargs: Any) -> httpx.Response:
        """One HTTP/1.1 request with Host `host` on a fresh connection."""
        headers = {"host": host, **kwargs.pop("headers", {})}
        with self.client() as client:
            return client.get(path, headers=headers, **kwargs)

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the proxy process in KiB, from /proc/PID/status."""
        return read_memory_kib(self.pid)

    def stderr_tail(self, lines: int = 40) -> str:
        return self.process.stderr_tail(lines)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain, then exit); returns the exit code."""
        return self.process.stop(signal.SIGTERM, timeout=timeout)

    def kill(self) -> None:
        self.process.stop(signal.SIGKILL, timeout=5)


def read_memory_kib(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class MemorySampler:
    """Samples a process's VmRSS in a thread; `peak_kib` is the largest sample, `hwm_kib` the
    kernel's own high-water mark read at the end (it catches peaks between samples)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        _, self.hwm_kib = read_memory_kib(self.pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, _ = read_memory_kib(self.pid)
            self.peak_kib = max(self.peak_kib, rss)
            self._stop.wait(self.interval)


# === impl config builders ===

H2C = "kubernetes.io/h2c"


def service(
    name: str,
    endpoints: Iterable[str] = (),
    *,
    port: int = 8080,
    h2c: bool = False,
    lb: str | None = None,
    namespace: str = "default",
    ready: bool = True,
    service_account: str | None = None,
    address_type: str = "IPv4",
) -> list[dict[str, Any]]:
    """A Service with one port ("http") plus one EndpointSlice per endpoint "ip:port".

    Endpoints on loopback differ by port, and a slice has one port list, hence one slice each.
    `address_type="FQDN"` with "localhost:port" endpoints: an apiserver refuses loopback IPs in slices.
    """
    port_spec: dict[str, Any] = {"name": "http", "port": port}
    if h2c:
        port_spec["appProtocol"] = H2C
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    annotations: dict[str, str] = {}
    if lb:
        annotations["fastmesh.io/load-balancer"] = lb
    if service_account:  # meshed: its endpoints are proxies serving mTLS as this account
        annotations["fastmesh.io/service-account"] = service_account
    if annotations:
        metadata["annotations"] = annotations
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {"ports": [port_spec]}}]
    for index, endpoint in enumerate(endpoints):
        ip, ep_port = endpoint.rsplit(":", 1)
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{index}",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": address_type,
                "ports": [{"name": "http", "port": int(ep_port), "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}],
            }
        )
    return docs


def backend(name: str, weight: int | None = None, *, port: int = 8080, **extra: Any) -> dict[str, Any]:
    """A backendRef to Service `name` (or, with group/kind in `extra`, to something else)."""
    ref: dict[str, Any] = {"name": name, **extra}
    if port is not None and "kind" not in extra:
        ref["port"] = port
    if weight is not None:
        ref["weight"] = weight
    return ref


def rule(
    *backends: dict[str, Any],
    matches: list[dict[str, Any]] | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if matches is not None:
        out["matches"] = matches
    if filters is not None:
        out["filters"] = filters
    if backends:
        out["backendRefs"] = list(backends)
    return out


def route(
    name: str,
    rules: list[dict[str, Any]],
    *,
    parent: str | None = None,
    parent_port: int | None = None,
    hostnames: list[str] | None = None,
    namespace: str = "default",
    creation_timestamp: str | None = None,
) -> dict[str, Any]:
    """An HTTPRoute. `parent` names a Service (GAMMA: traffic addressed to it); without a parent
    the route applies on every listener to `hostnames`."""
    spec: dict[str, Any] = {"rules": rules}
    if parent is not None:
        ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent}
        if parent_port is not None:
            ref["port"] = parent_port
        spec["parentRefs"] = [ref]
    if hostnames is not None:
        spec["hostnames"] = hostnames
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if creation_timestamp:
        metadata["creationTimestamp"] = creation_timestamp
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": metadata, "spec": spec}


def proxy_spec(**spec: Any) -> dict[str, Any]:
    """The fastmesh Proxy document, e.g. proxy_spec(pool={"idleTimeout": "1s"})."""
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "Proxy", "metadata": {"name": "proxy"}, "spec": spec}


def traffic_policy(target: str, **spec: Any) -> dict[str, Any]:
    """A TrafficPolicy for Service `target`, e.g. traffic_policy("web", retry={"attempts": 2})."""
    return {
        "apiVersion": "fastmesh.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": f"{target}-policy"},
        "spec": {"targetRef": {"kind": "Service", "name": target}, **spec},
    }


def mesh_config(
    services: Mapping[str, Iterable[str]] | Iterable[list[dict[str, Any]]] = (),
    routes: Iterable[dict[str, Any]] = (),
    proxy: dict[str, Any] | None = None,
    extra: Iterable[dict[str, Any]] = (),
) -> str:
    """The multi-document YAML file.

    services: {"reviews-v1": ["127.0.0.1:P"]} (HTTP/1.1, default balancer) or a list of
    `service(...)` results for anything else; proxy: the Proxy spec as a dict.
    """
    docs: list[dict[str, Any]] = []
    if proxy is not None:
        docs.append(proxy_spec(**proxy))
    if isinstance(services, Mapping):
        for name, endpoints in services.items():
            docs += service(name, endpoints)
    else:
        for group in services:
            docs += group
    docs += list(routes)
    docs += list(extra)
    return yaml.safe_dump_all(docs, sort_keys=False)


# === impl clients ===


def modules_imported(modules: str, packages: Sequence[str]) -> list[str]:
    """What of `packages` (each the package and its submodules) a fresh interpreter has loaded after importing
    `modules` ("a, b.c") and building the CLI parser: what the proxy process would keep resident."""
    code = (f"import sys, fastmesh.cli, {modules}; fastmesh.cli.parser(); "
            f"print([m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in {list(packages)!r})])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 0, result.stderr
    return list(ast.literal_eval(result.stdout.strip()))


def fastmesh_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m fastmesh ARGS...` as users run it, in a subprocess; the finished process."""
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    return subprocess.run([PYTHON, "-m", "fastmesh", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def curl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Runs curl (silent, fail on no error codes) and returns the finished process."""
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=timeout, check=False)


def raw_http1(address: str, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to `address` ("ip:port"), for requests written byte by byte."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_head(sock: socket.socket, buffered: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Reads one HTTP/1.1 response head. Returns (status, lower-cased headers, the raw head);
    bytes read past the head stay in `buffered`."""
    while b"\r\n\r\n" not in buffered:
        data = sock.recv(65536)
        if not data:
            raise HarnessError(f"connection closed before a full response head; got {bytes(buffered)!r}")
        buffered += data
    end = buffered.index(b"\r\n\r\n") + 4
    head = bytes(buffered[:end])
    del buffered[:end]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers, head


def read_exact(sock: socket.socket, buffered: bytearray, size: int) -> bytes:
    while len(buffered) < size:
        data = sock.recv(65536)
        if not data:
            raise HarnessError(f"connection closed after {len(buffered)} of {size} body bytes")
        buffered += data
    body = bytes(buffered[:size])
    del buffered[:size]
    return body


@dataclass
class H2Response:
    status: int
    headers: dict[str, str]
    body: bytes
    trailers: dict[str, str]


def h2_request(
    address: str,
    path: str,
    authority: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 10.0,
) -> H2Response:
    """One request over h2c with prior knowledge, written with the `h2` library so that
    everything on the wire (trailers included) is visible."""
    import h2.config
    import h2.connection
    import h2.events

    sock = raw_http1(address, timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    request_headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", authority)]
    request_headers += list(headers)
    conn.send_headers(1, request_headers, end_stream=not body)
    if body:
        conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    response = H2Response(0, {}, b"", {})
    chunks: list[bytes] = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                raise HarnessError("h2 connection closed before the stream ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    response.headers = {str(k): str(v) for k, v in event.headers}
                    response.status = int(response.headers[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    chunks.append(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    response.trailers = {str(k): str(v) for k, v in event.headers}
                elif isinstance(event, h2.events.StreamReset):
                    raise HarnessError(f"stream reset by the server: error code {event.error_code}")
                elif isinstance(event, h2.events.StreamEnded):
                    response.body = b"".join(chunks)
                    return response
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


def parallel_get(address: str, host: str, target: str, n: int, timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """`n` GETs started at the same instant, each on its own HTTP/1.1 connection to `address`.

    Connections are opened first and the requests released together by a barrier, so they
    really overlap (client set-up cost does not stagger them). Returns (status, body) in order.
    """
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(address, timeout=timeout)
        conn.connect()
        barrier.wait(timeout)
        conn.request("GET", target, headers={"host": host})
        response = conn.getresponse()
        result = response.status, response.read()
        conn.close()
        return result

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# === impl load tools ===


def split_config(addresses: dict[str, str], weights: dict[str, int]) -> str:
    """Service `reviews` (the frontend) split over Services reviews-v1/-v2 by `weights`."""
    services = [service(f"reviews-{name}", [address]) for name, address in addresses.items()]
    services.append(service("reviews"))
    backends = [backend(f"reviews-{name}", weight) for name, weight in weights.items()]
    return mesh_config(services=services, routes=[route("reviews", [rule(*backends)], parent="reviews")])


class Loads:
    """wrk (HTTP/1.1) and h2load (h2c) running at once against the proxy for `duration_s`, closed loop."""

    def __init__(self, px: Proxy, authority: str, duration_s: int, wrk_conns: int, h2_conns: int, h2_streams: int) -> None:
        self.duration_s = duration_s
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        self.wrk = subprocess.Popen(
            ["wrk", "-t1", f"-c{wrk_conns}", f"-d{duration_s}s", "--timeout", "5s", "-H", f"Host: {authority}", f"{px.url}/"],
            **pipe,  # type: ignore[call-overload]
        )
        self.h2 = subprocess.Popen(
            ["h2load", f"-c{h2_conns}", f"-m{h2_streams}", "-D", str(duration_s), "-H", f":authority: {authority}", f"{px.url}/"],
            **pipe,  # type: ignore[call-overload]
        )

    def finish(self, during: Callable[[], None] | None = None) -> tuple[str, str]:
        """Runs `during` (e.g. reloads on a schedule) in a thread while the loads run, waits for both
        loads and for it; returns (wrk output, h2load output). An exception in `during` is re-raised."""
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                if during is not None:
                    during()
            except BaseException as e:  # noqa: BLE001 - re-raised in the test thread below
                errors.append(e)

        worker = threading.Thread(target=guarded)
        worker.start()
        wrk_out, _ = self.wrk.communicate(timeout=self.duration_s + 30)
        h2_out, _ = self.h2.communicate(timeout=self.duration_s + 30)
        worker.join()
        if errors:
            raise errors[0]
        return wrk_out, h2_out


def h2load(px: Proxy, authority: str, *args: str, timeout: float = 120) -> dict[str, int]:
    """Runs h2load (h2c) against the proxy; returns its request and status counters."""
    done = subprocess.run(
        ["h2load", "-H", f":authority: {authority}", *args, f"{px.url}/"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return parse_h2load(done.stdout)


def parse_h2load(out: str) -> dict[str, int]:
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert requests and codes, out
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    result = dict(zip(keys, map(int, requests.groups()), strict=True))
    result.update(zip(["2xx", "3xx", "4xx", "5xx"], map(int, codes.groups()), strict=True))
    return result


def parse_wrk(out: str) -> dict[str, int]:
    """wrk's request count and error counters (wrk prints the error lines only when non-zero)."""
    requests = re.search(r"(\d+) requests in", out)
    assert requests, out
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result = {"requests": int(requests.group(1)), "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0}
    result["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
    return result
