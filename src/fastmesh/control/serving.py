"""The control plane's serving certificate: issued by the CA of `--ca-dir` at start and renewed while it runs.

The TLS server keeps one `ssl.SSLContext`; a renewal loads the new certificate and key into it
(`load_cert_chain`), which OpenSSL applies to the connections accepted from then on. A connection
already made keeps the session it negotiated: the proxies' streams are never dropped by a renewal
(tests/kube/test_control_serving.py). The renewal is due at two thirds of the lifetime
(`--serving-cert-ttl`, default 30 days), as for the workload certificates; the CA directory is read again
each time, so a rotated CA signs the next one. A renewal that fails is retried with backoff (the
certificate in use stays until it expires).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from fastmesh.ca import CA, CAError
from fastmesh.issued import Issued
from fastmesh.ca.files import CERT_MODE, KEY_MODE, write_atomic
from fastmesh.control.h2conn import server_context
from fastmesh.kube.watch import Backoff

log = logging.getLogger("fastmesh.control")


class ServingCertificate:
    """The serving certificate for `hosts`, written to `directory`; `context` is the server's."""

    def __init__(self, ca_dir: Path, hosts: tuple[str, ...], directory: Path, ttl_s: float,
                 emit: Callable[..., None]) -> None:
        self.ca_dir, self.hosts, self.directory, self.ttl_s = ca_dir, hosts, directory, ttl_s
        self.emit = emit
        self.renewals = 0
        self.serial = 0
        self.not_after = datetime.now(UTC)
        self.context: ssl.SSLContext | None = None

    def issue(self) -> ssl.SSLContext:
        """Issue a certificate now and load it (into the existing context, else a new one)."""
        return self._load(self._write())

    def _write(self) -> Issued:
        """Sign and write a new certificate (blocking: run it in a thread)."""
        issued = CA.load(self.ca_dir).issue_server(list(self.hosts), ttl=timedelta(seconds=self.ttl_s))
        write_atomic(self.directory / "cert.pem", issued.cert_chain_pem.encode(), CERT_MODE)
        write_atomic(self.directory / "key.pem", issued.key_pem.encode(), KEY_MODE)
        return issued

    def _load(self, issued: Issued) -> ssl.SSLContext:
        """On the event loop's thread: no handshake is made while the context changes."""
        cert, key = str(self.directory / "cert.pem"), str(self.directory / "key.pem")
        if self.context is None:
            self.context = server_context(cert, key)
        else:
            self.context.load_cert_chain(cert, key)  # new handshakes only; sessions made stay as they are
            self.renewals += 1
        self.serial = x509.load_pem_x509_certificate(issued.cert_chain_pem.encode()).serial_number
        self.not_after = issued.not_after
        log.info("serving certificate %x, valid until %s", self.serial, self.not_after)
        self.emit("serving_certificate", serial=f"{self.serial:x}", not_after=self.not_after.timestamp(),
                  renewals=self.renewals)
        return self.context

    def _due_in(self) -> float:
        lifetime = self.ttl_s
        left = (self.not_after - datetime.now(UTC)).total_seconds()
        return max(0.0, left - lifetime / 3)

    async def renew_forever(self) -> None:
        backoff = Backoff(1.0, 60.0)
        while True:
            await asyncio.sleep(self._due_in())
            try:
                self._load(await asyncio.to_thread(self._write))
                backoff.reset()
            except (CAError, OSError, ssl.SSLError) as e:
                delay = backoff.next()
                log.error("renewing the serving certificate failed (%s): again in %.1fs", e, delay)
                await asyncio.sleep(delay)

    def stats(self) -> dict[str, Any]:
        return {"serial": f"{self.serial:x}", "not_after": self.not_after.timestamp(), "renewals": self.renewals}
