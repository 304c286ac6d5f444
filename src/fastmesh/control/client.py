"""The proxy's side of the control plane (`fastmesh proxy --control-plane URL`).

`ControlWatcher` keeps a `Replica` of the proxy's view from the stream and hands the documents to the
runtime as a file watcher hands a file's content (same loader, compiler and reload path: a bad object is
left out the same way, a refused reload keeps the last good snapshot). If the control plane goes away the
proxy keeps serving what it has and reconnects with backoff and jitter, saying which epoch and version it
has, so it gets only the deltas it missed (or a full state after the control plane restarted).
`issue` gets the workload certificate from the control plane: the key and CSR are made by the CA child
(`fastmesh.ca.worker csr`), so the proxy process still never imports cryptography.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastmesh.compiler import IdentitySettings
from fastmesh.control import DEFAULT_TOKEN_FILE
from fastmesh.control.h2conn import H2Connection, client_context, connect
from fastmesh.control.protocol import CERTIFICATE_PATH, CONFIG_PATH, ProtocolError, Replica
from fastmesh.identity import CAWorkerError, ca_worker
from fastmesh.issued import Issued
from fastmesh.kube.watch import Backoff
from fastmesh.reload import LastContent
from fastmesh.state import State

log = logging.getLogger("fastmesh.control")

KEEPALIVE_S, KEEPALIVE_TIMEOUT_S = 15.0, 10.0  # a control plane gone without a FIN is noticed within 25 s


class ControlPlaneError(Exception):
    """The control plane refused a request or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class ControlSource:
    url: str
    """https://host:port"""
    ca_bundle: str
    """PEM roots the control plane's serving certificate must chain to."""
    token_file: str = DEFAULT_TOKEN_FILE
    """The ServiceAccount token, read at each request (projected tokens are rotated on disk)."""

    @property
    def label(self) -> str:
        return f"control plane {self.url}"

    @property
    def host_port(self) -> tuple[str, int]:
        url = urllib.parse.urlsplit(self.url)
        return url.hostname or "", url.port or 443

    def token(self) -> str:
        try:
            return Path(self.token_file).read_text().strip()
        except OSError as e:
            raise ControlPlaneError(f"cannot read the token {self.token_file}: {e.strerror or e}") from None

    async def open(self) -> H2Connection:
        host, port = self.host_port
        try:
            return await connect(host, port, client_context(self.ca_bundle))
        except (OSError, TimeoutError) as e:
            raise ControlPlaneError(f"{self.url}: cannot connect: {e}") from None

    def headers(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token()}")]


def _refusal(source: ControlSource, what: str, status: int, body: bytes) -> ControlPlaneError:
    try:
        why = json.loads(body).get("error", "")
    except ValueError:
        why = body[:200].decode(errors="replace")
    return ControlPlaneError(f"{source.url}{what}: {status} {why}")


async def issue(source: ControlSource, settings: IdentitySettings) -> tuple[Issued, str]:
    """A workload certificate for `settings.spiffe_id` from the control plane, and its trust bundle."""
    try:
        made = await ca_worker("csr", settings.spiffe_id)
        conn = await source.open()
    except ControlPlaneError as e:
        raise CAWorkerError(str(e)) from None
    try:
        body = json.dumps({"csr": made["csr_pem"]}).encode()
        host, port = source.host_port
        stream = await conn.request("POST", f"{host}:{port}", CERTIFICATE_PATH,
                                    [*source.headers(), ("content-type", "application/json")], body)
        answer = await stream.read_all()
        if stream.status != 200:
            raise _refusal(source, CERTIFICATE_PATH, stream.status, answer)
        got = json.loads(answer)
    except (ControlPlaneError, ConnectionError, ValueError) as e:
        raise CAWorkerError(str(e)) from None
    finally:
        conn.close()
    issued = Issued(cert_chain_pem=got["cert_chain_pem"], key_pem=made["key_pem"], spiffe_id=got["spiffe_id"],
                    not_before=datetime.fromtimestamp(got["not_before"], UTC),
                    not_after=datetime.fromtimestamp(got["not_after"], UTC))
    return issued, str(got["bundle_pem"])


class ControlWatcher:
    """Calls `on_change(content)` when the documents of the proxy's view differ from the last content seen;
    or, with `on_update`, calls it (no argument) when the view changed: the caller takes what changed
    from `replica.take_changes()` when it compiles (fastmesh.runtime: an incremental compiler), so changes
    arriving while it compiles are taken together by the next compile, and none is lost before the start."""

    def __init__(self, source: ControlSource, on_change: Callable[[bytes], Awaitable[None]] | None, state: State,
                 backoff: Backoff | None = None, *, on_update: Callable[[], Awaitable[None]] | None = None) -> None:
        self.source = source
        self.on_change = on_change
        self.on_update = on_update
        self.replica = Replica()
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.ready = asyncio.Event()
        """Set once a full state is here: the runtime starts on it."""
        self.status: dict[str, Any] = {"url": source.url, "connected": False, "epoch": "", "version": 0,
                                       "connects": 0, "last_error": None, "last_message_at": None}
        state.control = self.status
        self._last = LastContent()

    def seen(self, content: bytes) -> None:
        self._last.seen(content)

    def content(self) -> bytes:
        return self.replica.content()

    async def run(self) -> None:
        while True:
            try:
                await self._stream()
                error = "the control plane ended the stream"
            except (ControlPlaneError, ProtocolError, ConnectionError) as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - whatever breaks a stream, the proxy serves on and retries
                log.exception("%s: the stream failed", self.source.label)
                error = f"{type(e).__name__}: {e}"
            self.status["connected"] = False
            self.status["last_error"] = error
            delay = self.backoff.next()
            log.warning("%s: %s; keeping version %s of the config, reconnecting in %.1fs",
                        self.source.label, error, self.replica.version or "none", delay)
            await asyncio.sleep(delay)

    async def _stream(self) -> None:
        conn = await self.source.open()
        keepalive = asyncio.ensure_future(conn.keepalive(KEEPALIVE_S, KEEPALIVE_TIMEOUT_S))
        try:
            host, port = self.source.host_port
            query = urllib.parse.urlencode({"epoch": self.replica.epoch, "version": self.replica.version}
                                           if self.replica.complete else {})
            stream = await conn.request("GET", f"{host}:{port}", f"{CONFIG_PATH}?{query}", self.source.headers())
            if stream.status != 200:
                raise _refusal(self.source, CONFIG_PATH, stream.status, await stream.read_all())
            self.status.update(connected=True, last_error=None, connects=self.status["connects"] + 1)
            self.backoff.reset()
            log.info("%s: connected (have epoch %s version %s)", self.source.label, self.replica.epoch or "-",
                     self.replica.version)
            buffered = b""
            while (chunk := await stream.data.get()) is not None:
                while not stream.data.empty():  # whatever else is here: one reload for the lot
                    more = stream.data.get_nowait()
                    if more is None:
                        stream.data.put_nowait(None)
                        break
                    chunk += more
                *lines, buffered = (buffered + chunk).split(b"\n")
                if any([self.replica.apply(line) for line in lines if line]):
                    await self._changed()
        finally:
            keepalive.cancel()
            conn.close()

    async def _changed(self) -> None:
        self.status.update(epoch=self.replica.epoch, version=self.replica.version, last_message_at=time.time())
        if not self.replica.complete:
            return
        self.ready.set()
        if self.on_update is not None:
            await self.on_update()
            return
        assert self.on_change is not None
        content = self.content()
        if self._last.is_new(content):
            await self.on_change(content)
