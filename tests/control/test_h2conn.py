"""fastmesh.control.h2conn on real loopback sockets: a peer that stops answering is dropped by the keepalive."""

from __future__ import annotations

import asyncio
import socket
import time

from fastmesh.control.h2conn import H2Connection, Stream


def test_a_peer_that_never_answers_pings_is_closed_by_the_keepalive() -> None:
    async def run() -> float:
        with socket.socket() as silent:  # accepts (the kernel does), never reads nor answers: a hung peer
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: H2Connection(client_side=True), *silent.getsockname())
            stream = await asyncio.wait_for(_open_stream(conn), 5)
            started = time.monotonic()
            await asyncio.wait_for(conn.keepalive(0.2, 0.3), 5)
            await asyncio.wait_for(conn.closed.wait(), 5)
            assert await stream.data.get() is None and stream.reset  # its streams end: the proxy reconnects
            return time.monotonic() - started

    assert asyncio.run(run()) >= 0.5  # one interval and one timeout, not at once


async def _open_stream(conn: H2Connection) -> Stream:
    """A request whose response never comes (the peer is silent): the stream a config stream would be."""
    stream_id = conn.h2.get_next_available_stream_id()
    stream = conn.streams[stream_id] = Stream(stream_id)
    conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/")],
                      end=True)
    return stream
