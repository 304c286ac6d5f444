"""Watching the config file: a cheap `stat` poll, then a content hash so only real changes reload.

Polling (every 0.5 s) needs no extra dependency and follows the path, not the inode, so editors
and tools that replace the file by writing a new one and renaming it over the old are seen too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

# SHA-256 without `hashlib`: importing it initialises OpenSSL's digests, ~0.6 MiB resident in the
# proxy for one hash of the config file per change. CPython's own implementation is the same hash.
try:
    from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]  # CPython 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # CPython 3.11
    except ImportError:  # pragma: no cover - another Python
        from hashlib import sha256  # type: ignore[assignment, unused-ignore]

log = logging.getLogger("fastmesh.reload")

Fingerprint = tuple[int, int, int]  # (mtime_ns, size, inode)


def fingerprint(path: Path) -> Fingerprint | None:
    """The file's stat fingerprint; None when it does not exist (e.g. between unlink and rename)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def digest(data: bytes) -> str:
    hexdigest: str = sha256(data).hexdigest()
    return hexdigest


class LastContent:
    """The digest of the config content last loaded, so a watcher hands on only content that changed."""

    def __init__(self) -> None:
        self._digest: str | None = None

    def seen(self, content: bytes) -> None:
        self._digest = digest(content)

    def is_new(self, content: bytes) -> bool:
        """True (and remembered) when `content` differs from what was last seen."""
        content_digest = digest(content)
        if content_digest == self._digest:
            return False
        self._digest = content_digest
        return True


class FileWatcher:
    """Calls `on_change(content)` when the file's content differs from the last content it was told about.

    The runtime calls `seen(content)` whenever it reads the file itself (start, SIGHUP), so a change
    that was already loaded does not reload twice.
    """

    def __init__(
        self,
        path: Path,
        on_change: Callable[[bytes], Awaitable[None]],
        interval_s: float = 0.5,
        settle_s: float = 0.05,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.interval_s = interval_s
        self.settle_s = settle_s  # a file being written changes stat again within this
        self._fingerprint: Fingerprint | None = None
        self._last = LastContent()

    def seen(self, content: bytes, fp: Fingerprint | None = None) -> None:
        """Record what was loaded (and the stat it was read under), so polling does not load it again."""
        self._last.seen(content)
        self._fingerprint = fp

    async def poll_once(self) -> bool:
        """Check the file once; True if `on_change` was called."""
        current = fingerprint(self.path)
        if current is None or current == self._fingerprint:
            return False
        for _ in range(20):  # wait until a writer in progress is done with the file
            await asyncio.sleep(self.settle_s)
            again = fingerprint(self.path)
            if again == current:
                break
            current = again
        if current is None:
            return False
        try:
            content = self.path.read_bytes()
        except OSError as e:
            log.warning("cannot read %s: %s", self.path, e)
            return False
        self._fingerprint = current
        if not self._last.is_new(content):
            return False
        await self.on_change(content)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever a single poll hit
                log.exception("watching %s failed", self.path)
            await asyncio.sleep(self.interval_s)
