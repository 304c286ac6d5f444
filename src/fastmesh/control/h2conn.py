"""HTTP/2 on asyncio with the `h2` library (sans-IO): one connection, its streams, flow control.

`H2Connection` is either side: the control plane serves requests on it (`handler`), the proxy sends
requests on it (`request`). Sends wait for the peer's flow-control window, so a proxy that stops reading
stalls only its own stream, and nothing is buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

WINDOW = 1 << 24  # the window we grant: a full state of 100k endpoints streams without stalling on us


@dataclass
class Stream:
    """One request/response exchange. `headers`: the peer's (request headers on the server, response
    headers on the client); `data`: the payloads of the peer's DATA frames, then None once it ended."""

    id: int
    headers: dict[str, str] = field(default_factory=dict)
    got_headers: asyncio.Event = field(default_factory=asyncio.Event)
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    window: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False

    def end(self) -> None:
        """Reset, or the connection went away: wake whoever waits on it."""
        self.reset = True
        self.got_headers.set()
        self.window.set()
        self.data.put_nowait(None)

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while (chunk := await self.data.get()) is not None:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"body larger than {limit} bytes")
        return b"".join(chunks)


Handler = Callable[["H2Connection", Stream], Awaitable[None]]


class H2Connection(asyncio.Protocol):
    def __init__(self, client_side: bool, handler: Handler | None = None) -> None:
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side,
                                                                        header_encoding="utf-8"))
        self.handler = handler
        self.streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.pong = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    # === asyncio.Protocol ===

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.h2.increment_flow_control_window(WINDOW)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed.set()
        for stream in self.streams.values():
            stream.end()
        for task in list(self.tasks):
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.close()
            return
        for event in events:
            self._event(event)
        self._flush()

    # === events ===

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived | h2.events.ResponseReceived):
            stream = self.streams.setdefault(event.stream_id, Stream(event.stream_id))
            stream.headers = {str(k): str(v) for k, v in event.headers or []}
            stream.got_headers.set()
            if isinstance(event, h2.events.RequestReceived) and self.handler is not None:
                self._spawn(self._serve(stream))
        elif isinstance(event, h2.events.DataReceived):
            if (receiving := self.streams.get(event.stream_id)) is not None:
                receiving.data.put_nowait(event.data or b"")
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if (ended := self.streams.get(event.stream_id)) is not None:
                ended.data.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            if (reset := self.streams.pop(event.stream_id, None)) is not None:
                reset.end()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window.set()
        elif isinstance(event, h2.events.PingAckReceived):
            self.pong.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    async def _serve(self, stream: Stream) -> None:
        assert self.handler is not None
        try:
            await self.handler(self, stream)
        finally:
            self.streams.pop(stream.id, None)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
                self._flush()
            self.transport.close()

    async def keepalive(self, interval_s: float, timeout_s: float) -> None:
        """PING every `interval_s`; no answer within `timeout_s` closes the connection (a peer gone without a
        FIN, e.g. behind a partition), which ends its streams."""
        while self.transport is not None:
            await asyncio.sleep(interval_s)
            self.pong.clear()
            self.h2.ping(b"fastmesh")
            self._flush()
            try:
                await asyncio.wait_for(self.pong.wait(), timeout_s)
            except TimeoutError:
                if self.transport is not None:
                    self.transport.abort()
                return

    # === sending ===

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool = False) -> None:
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self._flush()

    async def send_data(self, stream: Stream, data: bytes | bytearray, end: bool = False) -> None:
        """Send `data` within the peer's windows; ConnectionError if the stream or connection went away."""
        view = memoryview(data)
        while True:
            if stream.reset or self.transport is None:
                raise ConnectionError("the stream was reset or the connection closed")
            try:
                window = self.h2.local_flow_control_window(stream.id)
            except h2.exceptions.StreamClosedError:
                raise ConnectionError("the stream is closed") from None
            size = min(window, self.h2.max_outbound_frame_size, len(view))
            if size > 0 or not view:
                self.h2.send_data(stream.id, bytes(view[:size]), end_stream=end and size == len(view))
                self._flush()
                view = view[size:]
                if not view:
                    return
            else:
                stream.window.clear()
                await stream.window.wait()

    async def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> Stream:
        """Send a request; the stream, its response headers awaited (`stream.status`)."""
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = Stream(stream_id)
        self.send_headers(stream_id, [(":method", method), (":scheme", "https"), (":authority", authority),
                                      (":path", path), *headers], end=not body)
        if body:
            await self.send_data(stream, body, end=True)
        await stream.got_headers.wait()
        if stream.reset and not stream.headers:
            raise ConnectionError(f"{method} {path}: the stream was reset or the connection closed")
        return stream


def client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    return context


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context


async def connect(host: str, port: int, context: ssl.SSLContext, timeout_s: float = 10.0) -> H2Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: H2Connection(client_side=True), host, port, ssl=context,
                               server_hostname=host), timeout_s)
    return protocol
