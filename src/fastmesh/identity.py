"""The proxy's workload identity: issue its certificate from the CA directory, hand it to the
engine, renew it at two thirds of its lifetime and whenever the CA changes (root rotation).

A root rotation (`fastmesh ca rotate-root`) is taken in two steps, bundle first: when the CA's
files change, the engine gets the new trust bundle with the certificate it already has (every
local proxy sees the new files within one poll); only `propagation_s` later is a certificate
issued under the new intermediate. A peer that has not yet read the new bundle would otherwise
refuse the new certificate for that moment, and new connections would fail.

Key material goes from the CA straight to `Engine.set_identity`; the copy kept here (to put the
previous certificate back if a reload fails) is never logged, shown or written anywhere. The CA
code (and `cryptography`) runs in a short-lived child (`fastmesh.ca.worker`): the proxy itself
never loads it, which keeps ~15 MiB out of its resident memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastmesh.compiler import IdentitySettings, child_env
from fastmesh.engine import Engine
from fastmesh.issued import Issued
from fastmesh.reload import Fingerprint, fingerprint
from fastmesh.state import rfc3339

log = logging.getLogger("fastmesh.identity")

RENEW_FRACTION = 2 / 3
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after failed renewals, in turn (the last repeats)
WATCHED = ("bundle.pem", "intermediate.pem")  # a change means a rotation: renew at once

Emit = Callable[..., None]
Issuer = Callable[[IdentitySettings], Awaitable[tuple[Issued, str]]]


class IdentityError(Exception):
    """The certificate could not be issued or the engine refused it; the message says why."""


class CAWorkerError(Exception):
    """The CA child (`fastmesh.ca.worker`) refused or failed; the message says why."""


async def ca_worker(*args: str, stdin: str = "") -> dict[str, Any]:
    """Run one `fastmesh.ca.worker` command; its JSON answer, or CAWorkerError."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastmesh.ca.worker", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await child.communicate(stdin.encode())
    try:
        answer = json.loads(out)
    except ValueError:
        lines = err.decode(errors="replace").strip().splitlines()
        raise CAWorkerError(f"the CA worker failed with status {child.returncode}: "
                            f"{lines[-1] if lines else 'no output'}") from None
    if child.returncode != 0 or "error" in answer:
        raise CAWorkerError(str(answer.get("error", answer)))
    return dict(answer)


@dataclass(frozen=True)
class Material:
    """What the engine was given. `issued.key_pem` is the private key: never shown."""

    issued: Issued
    bundle_pem: str = field(repr=False)
    generation: int
    reason: str

    @property
    def not_before(self) -> float:
        return self.issued.not_before.timestamp()

    @property
    def not_after(self) -> float:
        return self.issued.not_after.timestamp()

    @property
    def renew_at(self) -> float:
        return self.not_before + RENEW_FRACTION * (self.not_after - self.not_before)


class Identity:
    """One configured identity. `renew()` issues and installs now; `start()` keeps it fresh."""

    def __init__(self, settings: IdentitySettings, engine: Engine, emit: Emit,
                 watch_interval_s: float = 0.5, clock: Callable[[], float] = time.time,
                 propagation_s: float | None = None, issuer: Issuer | None = None) -> None:
        """`issuer`: where certificates come from instead of the CA directory (the control plane)."""
        self.settings = settings
        self.issuer = issuer
        self.engine = engine
        self.emit = emit
        self.watch_interval_s = watch_interval_s
        self.propagation_s = 4 * watch_interval_s if propagation_s is None else propagation_s
        self.clock = clock
        self.current: Material | None = None
        self.renewals = 0  # successful issues, the first one included
        self.failures = 0
        self.last_error: str | None = None
        self._ca_seen: tuple[Fingerprint | None, ...] | None = None
        self._retry_at: float | None = None
        self._switch_at: float | None = None  # issue under the new intermediate (rotation step 2)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # === issuing ===

    def _ca_fingerprint(self) -> tuple[Fingerprint | None, ...]:
        directory = Path(self.settings.ca_directory)
        return tuple(fingerprint(directory / name) for name in WATCHED)

    async def _issue(self) -> tuple[Issued, str]:
        """Load the CA as it is on disk now and issue (in the CA child)."""
        s = self.settings
        if self.issuer is not None:
            return await self.issuer(s)
        answer = await ca_worker("issue", s.ca_directory, s.spiffe_id, repr(s.cert_ttl_s))
        bundle = answer.pop("bundle_pem")
        for when in ("not_before", "not_after"):
            answer[when] = datetime.fromtimestamp(answer[when], UTC)
        return Issued(**answer), bundle

    async def renew(self, reason: str) -> Material:
        """Issue a new certificate and hand it to the engine; IdentityError if that fails (the
        engine keeps what it has)."""
        async with self._lock:
            seen = self._ca_fingerprint()  # before reading: a rotation landing meanwhile is seen
            try:
                issued, bundle = await self._issue()
                generation = self.engine.set_identity(issued.cert_chain_pem, issued.key_pem, bundle)
            except (CAWorkerError, ValueError, OSError, RuntimeError) as e:
                raise self._failed(reason, e) from None
            self.current = Material(issued, bundle, generation, reason)
            self._ca_seen = seen
            self.renewals += 1
            self._switch_at = None
            self._succeeded()
            return self.current

    async def refresh_bundle(self) -> None:
        """The CA's files changed: step 1 of a rotation (see the module doc), or a plain renewal
        when the current certificate is not trusted by the new bundle."""
        async with self._lock:
            seen = self._ca_fingerprint()
            material = self.current
            if material is not None:
                try:
                    answer = await ca_worker("standing", self.settings.ca_directory,
                                             stdin=material.issued.cert_chain_pem)
                    standing, bundle = answer["standing"], answer["bundle_pem"]
                    if standing != "untrusted":
                        issued = material.issued
                        generation = self.engine.set_identity(issued.cert_chain_pem, issued.key_pem, bundle)
                except (CAWorkerError, ValueError, OSError, RuntimeError) as e:
                    raise self._failed("bundle changed", e) from None
                if standing != "untrusted":
                    self.current = Material(material.issued, bundle, generation, "bundle changed")
                    self._ca_seen = seen
                    if standing == "trusted":
                        self._switch_at = self.clock() + self.propagation_s
                    self._succeeded()
                    return
        await self.renew("ca changed")

    def _failed(self, reason: str, error: Exception) -> IdentityError:
        self.failures += 1
        self.last_error = f"identity {self.settings.spiffe_id}: {error}"
        self._retry_at = self.clock() + RETRY_S[min(self.failures, len(RETRY_S)) - 1]
        self._wake.set()
        log.error("cannot renew the workload certificate (%s): %s", reason, self.last_error)
        self.emit("identity_failed", spiffe_id=self.settings.spiffe_id, reason=reason,
                  error=self.last_error)
        return IdentityError(self.last_error)

    def _succeeded(self) -> None:
        assert self.current is not None
        self.failures = 0
        self.last_error = None
        self._retry_at = None
        self._wake.set()  # the loop picks up the new renewal time
        self._announce(self.current)

    def _announce(self, material: Material) -> None:
        not_after = rfc3339(material.not_after)
        log.info("workload certificate %s (%s): valid until %s, generation %d, renewal at %s",
                 material.issued.spiffe_id, material.reason, not_after, material.generation,
                 rfc3339(material.renew_at))
        self.emit("identity", spiffe_id=material.issued.spiffe_id, not_after=not_after,
                  generation=material.generation, reason=material.reason)

    async def reinstall(self) -> None:
        """Hand the current material to the engine again (a reload that installed another
        identity failed) and start renewing again."""
        async with self._lock:
            material = self.current
            if material is not None:
                issued = material.issued
                generation = self.engine.set_identity(issued.cert_chain_pem, issued.key_pem,
                                                      material.bundle_pem)
                self.current = Material(issued, material.bundle_pem, generation, "restored")
                self._announce(self.current)
        self.start()

    # === keeping it fresh ===

    def _due(self) -> str | None:
        """Why a renewal is due now, or None."""
        now = self.clock()
        if self._retry_at is not None and now < self._retry_at:
            return None
        if self._ca_fingerprint() != self._ca_seen:
            return "bundle changed"
        if self._switch_at is not None:  # a rotation's step 2 is pending: it is the renewal
            return "ca changed" if now >= self._switch_at else None
        if self._retry_at is not None:
            return "retry"
        if self.current is not None and now >= self.current.renew_at:
            return "renewal"
        return None

    def _wait_s(self) -> float:
        if self._retry_at is not None:
            until = self._retry_at
        elif self.current is not None:
            until = min(self.current.renew_at, self._switch_at or self.current.renew_at)
        else:
            until = self.clock()
        return max(0.0, min(self.watch_interval_s, until - self.clock()))

    async def run(self) -> None:
        while True:
            self._wake.clear()
            reason = self._due()
            if reason is not None:
                try:
                    if reason == "bundle changed":
                        await self.refresh_bundle()
                    else:
                        await self.renew(reason)
                except IdentityError:
                    pass  # logged, retried after RETRY_S
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._wait_s())
            except TimeoutError:
                pass

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Stop renewing; waits until the loop is out (an issue in flight is not installed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        async with self._lock:  # an admin-triggered renewal in flight finishes first
            pass

    # === what the admin API shows (no key material) ===

    def figures(self) -> dict[str, Any] | None:
        """For /metrics: times in seconds since the epoch; None before the first certificate."""
        m = self.current
        if m is None:
            return None
        return {"spiffe_id": self.settings.spiffe_id, "not_after": m.not_after, "renew_at": m.renew_at,
                "renewals": self.renewals, "renewal_failures": self.failures}

    def view(self) -> dict[str, Any]:
        m = self.current
        return {
            "spiffe_id": self.settings.spiffe_id,
            "ca_directory": self.settings.ca_directory,
            "cert_ttl_s": self.settings.cert_ttl_s,
            "not_before": rfc3339(m.not_before) if m else None,
            "not_after": rfc3339(m.not_after) if m else None,
            "renew_at": rfc3339(m.renew_at) if m else None,
            "generation": m.generation if m else None,
            "renewals": self.renewals,
            "renewal_failures": self.failures,
            "last_error": self.last_error,
        }
