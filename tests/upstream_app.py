"""The upstream server the integration tests put behind fastmesh: an ASGI echo app run by hypercorn.

Run as its own process (``python -m tests.upstream_app --name v1 [--http2]``) so the test's
GIL never slows it down. It binds 127.0.0.1:0 itself, hands the socket to hypercorn and prints
one JSON line ``{"event": "ready", "address": "127.0.0.1:P"}`` on stdout once it serves.
Hypercorn speaks HTTP/1.1 and h2c with prior knowledge on the same port; every response says
which one the request arrived on (``http_version``), so a test sees what the proxy chose.

Endpoints (any method):
  /_upstream/stats  counters of this process: requests, distinct client ports (= connections),
                    peak concurrency. Meant to be called directly, not through the proxy.
  /status/<code>    answers <code>; no body for 1xx/204/304.
  /bytes/<n>        streams n bytes in 1 MiB chunks (content-length set; ?chunked=1 omits it).
  /upload           reads the whole body and answers {"body_bytes": n}.
  /trailers         body then HTTP/2 trailers x-trailer-one and x-checksum (needs te: trailers).
  /slow/<ms>        waits <ms> then echoes.
With --fail-status N every request (but /_upstream/stats) answers N (with --fail-every K, every Kth); stats count requests by method.
  anything else     200 JSON echo: upstream, method, path, query, headers, body_bytes,
                    body_sha256, http_version, client_port.
Any request may add response headers with ?header=name:value (repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol.events import Event as HypercornEvent
from hypercorn.protocol.events import Trailers
from hypercorn.protocol.h2 import H2Protocol

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MIB = 1024 * 1024
_CHUNK = b"\0" * MIB


@dataclass
class Counters:
    """What this upstream has seen; the tests read it through /_upstream/stats."""

    requests: int = 0
    client_ports: set[int] = field(default_factory=set)
    active: int = 0
    max_active: int = 0
    methods: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "connections": len(self.client_ports),
            "client_ports": sorted(self.client_ports),
            "active": self.active,
            "max_active": self.max_active,
            "methods": self.methods,
        }


class EchoApp:
    """ASGI app; one instance per upstream process."""

    def __init__(self, name: str, delay_ms: int, on_ready: Callable[[], None], fail_status: int = 0,
                 fail_every: int = 1) -> None:
        self.name = name
        self.delay_s = delay_ms / 1000
        self.fail_status = fail_status
        self.fail_every = fail_every
        self.counters = Counters()
        self._on_ready = on_ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] == "/_upstream/stats":
                await _drain(receive)
                await self._json(send, scope, 200, self.counters.as_json())
                return
            self.counters.requests += 1
            self.counters.methods[scope["method"]] = self.counters.methods.get(scope["method"], 0) + 1
            self.counters.client_ports.add(scope["client"][1])
            self.counters.active += 1
            self.counters.max_active = max(self.counters.max_active, self.counters.active)
            try:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.fail_status and self.counters.requests % self.fail_every == 0:
                    await _drain(receive)
                    await self._json(send, scope, self.fail_status, {"upstream": self.name})
                    return
                await self._http(scope, receive, send)
            finally:
                self.counters.active -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self._on_ready()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].strip("/").split("/")
        head, arg = parts[0], parts[1] if len(parts) > 1 else ""
        if head == "bytes" and arg.isdigit():
            await _drain(receive)
            chunked = ("chunked", "1") in _query(scope)
            await self._stream_bytes(send, scope, int(arg), chunked)
        elif head == "upload":
            size, _ = await _drain(receive, digest=False)
            await self._json(send, scope, 200, {"upstream": self.name, "body_bytes": size})
        elif head == "trailers":
            await _drain(receive)
            await self._trailers(send, scope)
        elif head == "status" and arg.isdigit():
            await self._echo(scope, receive, send, int(arg))
        elif head == "slow" and arg.isdigit():
            await asyncio.sleep(int(arg) / 1000)
            await self._echo(scope, receive, send, 200)
        else:
            await self._echo(scope, receive, send, 200)

    async def _echo(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        size, sha = await _drain(receive)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = {
            "upstream": self.name,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "body_bytes": size,
            "body_sha256": sha,
            "http_version": scope["http_version"],
            "client_port": scope["client"][1],
        }
        if status < 200 or status in (204, 304):
            await self._start(send, scope, status, [])
            await send({"type": "http.response.body", "body": b""})
        else:
            await self._json(send, scope, status, body)

    async def _stream_bytes(self, send: Send, scope: Scope, total: int, chunked: bool) -> None:
        extra = [] if chunked else [(b"content-length", str(total).encode())]
        await self._start(send, scope, 200, [(b"content-type", b"application/octet-stream"), *extra])
        left = total
        while left > 0:
            piece = _CHUNK if left >= MIB else _CHUNK[:left]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        if total == 0:
            await send({"type": "http.response.body", "body": b""})

    async def _trailers(self, send: Send, scope: Scope) -> None:
        body = b"trailers follow"
        await self._start(send, scope, 200, [(b"content-type", b"text/plain")], trailers=True)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        digest = hashlib.sha256(body).hexdigest().encode()
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-trailer-one", b"1"), (b"x-checksum", digest)],
                "more_trailers": False,
            }
        )

    async def _json(self, send: Send, scope: Scope, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await self._start(send, scope, status, headers)
        await send({"type": "http.response.body", "body": data})

    async def _start(
        self,
        send: Send,
        scope: Scope,
        status: int,
        headers: list[tuple[bytes, bytes]],
        trailers: bool = False,
    ) -> None:
        extra = [
            (b"x-upstream", self.name.encode()),
            (b"x-upstream-method", scope["method"].encode()),
            (b"x-upstream-http-version", scope["http_version"].encode()),
            (b"x-upstream-host", dict(scope["headers"]).get(b"host", b"")),
        ]
        for key, value in _query(scope):
            if key == "header" and ":" in value:
                name, _, val = value.partition(":")
                extra.append((name.strip().lower().encode(), val.strip().encode()))
        message: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers + extra}
        if trailers:
            message["trailers"] = True
        await send(message)


def _query(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


async def _drain(receive: Receive, digest: bool = True) -> tuple[int, str]:
    """Reads the request body to its end; returns its size and sha256 (hex)."""
    size = 0
    sha = hashlib.sha256()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if digest:
            sha.update(chunk)
        if not message.get("more_body", False):
            break
    return size, sha.hexdigest()


_h2_stream_send = H2Protocol.stream_send


async def _h2_stream_send_with_trailers(self: H2Protocol, event: HypercornEvent) -> None:
    """hypercorn 0.17.3 sends HTTP/2 trailers without END_STREAM (and before the buffered body),
    which h2 4.x refuses, so no trailers ever leave it. Send them after the body, ending the stream;
    the EndBody that follows then finds the stream closed, which hypercorn already tolerates."""
    if not isinstance(event, Trailers):
        return await _h2_stream_send(self, event)
    await self.stream_buffers[event.stream_id].drain()
    self.connection.send_headers(event.stream_id, event.headers, end_stream=True)
    await self._flush()


H2Protocol.stream_send = _h2_stream_send_with_trailers  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--http2", action="store_true", help="h2c is expected (informational: both are served)")
    parser.add_argument("--delay-ms", type=int, default=0, help="added to every request")
    parser.add_argument("--fail-status", type=int, default=0, help="answer every request with this status")
    parser.add_argument("--fail-every", type=int, default=1, help="with --fail-status: only every Nth request")
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    host, port = sock.getsockname()

    def ready() -> None:
        print(json.dumps({"event": "ready", "address": f"{host}:{port}", "name": args.name}), flush=True)

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    # Upstream connections stay open until the proxy closes them, so tests of the proxy's pool
    # (reuse, idle timeout) observe the proxy and not hypercorn's own limits.
    config.keep_alive_timeout = 3600
    config.keep_alive_max_requests = 1 << 30
    config.graceful_timeout = 1
    config.h2_max_concurrent_streams = 256

    app = EchoApp(args.name, args.delay_ms, ready, args.fail_status, args.fail_every)
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency of fastmesh
        asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
