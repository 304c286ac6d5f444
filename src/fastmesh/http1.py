"""Just enough server-side HTTP/1.1 for the admin API and the demo service (keep-alive, small bodies).

Not on the request path: the data plane is the engine. This serves a handful of local requests.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("fastmesh.http1")

MAX_BODY = 1 << 20  # admin and demo requests carry no real bodies; refuse anything large


class BadRequest(Exception):
    """The peer sent something that is not an HTTP/1.1 request we accept; answer 400 and close."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def split_hostport(address: str) -> tuple[str, int]:
    """'127.0.0.1:15000' or '[::1]:15000' -> (host, port); ValueError with the address otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not an ip:port address")
    return host.strip("[]"), int(port)


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; None when the peer closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest("connection closed inside the request head") from e
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:100]!r}")
        headers[name.lower()] = value.strip()
    body = await _read_body(reader, headers)
    return Request(method=parts[0], target=parts[1], version=parts[2], headers=headers, body=body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader)
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            raise BadRequest(f"content-length {length[:30]!r} not accepted")
        return await reader.readexactly(int(length))
    except asyncio.IncompleteReadError as e:
        raise BadRequest("connection closed inside the request body") from e


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as e:
            raise BadRequest("bad chunk size") from e
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise BadRequest("request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def render(response: Response, *, keep_alive: bool, head: bool = False) -> bytes:
    phrase = http.HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers]
    if not keep_alive:
        lines.append("connection: close")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head else out + response.body


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Answer requests on one connection until the peer closes or asks to."""
    try:
        while True:
            try:
                request = await read_request(reader)
            except BadRequest as e:
                writer.write(render(Response(400, f"{e}\n".encode()), keep_alive=False))
                break
            if request is None:
                break
            try:
                response = await handler(request)
            except Exception:  # a bug in a handler must not kill the server
                log.exception("handler failed for %s %s", request.method, request.target)
                response = Response(500, b"internal error\n")
            keep_alive = request.keep_alive
            writer.write(render(response, keep_alive=keep_alive, head=request.method == "HEAD"))
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _bound_socket(host: str, port: int) -> socket.socket | None:
    """A socket bound to `host` if it is an IP address (SO_REUSEADDR set, not yet listening).

    Bound here rather than by `start_server(host, port)`: that resolves even an IP address with
    getaddrinfo, which costs the idle proxy the `idna` codec (~0.4 MiB) and four resolver threads.
    None for a host name, which start_server resolves (and may bind on several addresses).
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def start_server(handler: Handler, address: str) -> tuple[asyncio.Server, str]:
    """Listen on `address` (ip:port, port 0 = any); returns the server and the bound ip:port."""
    host, port = split_hostport(address)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, handler)
        except asyncio.CancelledError:
            pass  # the loop is shutting down with this keep-alive connection idle: nothing to report

    sock = _bound_socket(host, port)
    if sock is None:
        server = await asyncio.start_server(on_connection, host, port, reuse_address=True)
    else:
        server = await asyncio.start_server(on_connection, sock=sock)
    bound = server.sockets[0].getsockname()
    return server, join_hostport(bound[0], bound[1])


class Served:
    """An HTTP/1.1 server answering with `self.handle`: `start(address)` listens, `close()` stops."""

    _server: asyncio.Server | None = None

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    async def start(self, address: str) -> str:
        """Listen on `address`; returns the bound ip:port. OSError if it cannot bind."""
        self._server, bound = await start_server(self.handle, address)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
