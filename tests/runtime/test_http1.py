"""The admin API's HTTP/1.1 server: listening on IPv4, IPv6 and a host name."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from fastmesh import http1
from fastmesh.http1 import Request, Response


async def _hello(request: Request) -> Response:
    return Response(200, f"hello {request.path}\n".encode())


async def _get(address: str, path: str) -> bytes:
    host, port = http1.split_hostport(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


def _serve_and_get(address: str) -> tuple[str, bytes]:
    async def scenario() -> tuple[str, bytes]:
        server, bound = await http1.start_server(_hello, address)
        try:
            return bound, await _get(bound, "/x")
        finally:
            server.close()

    return uvloop.run(scenario())


def test_ipv4_port_0_binds_a_free_port() -> None:
    bound, answer = _serve_and_get("127.0.0.1:0")
    assert bound.startswith("127.0.0.1:") and not bound.endswith(":0")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello /x\n")


def test_ipv6() -> None:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    bound, answer = _serve_and_get("[::1]:0")
    assert bound.startswith("[::1]:")
    assert answer.endswith(b"hello /x\n")


def test_a_host_name_is_resolved() -> None:
    bound, answer = _serve_and_get("localhost:0")
    assert answer.endswith(b"hello /x\n")


def test_a_taken_port_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            _serve_and_get(f"127.0.0.1:{port}")
