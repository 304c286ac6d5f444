"""What the orchestrator knows about itself; the admin API and the metrics read it, the runtime writes it."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any


def rfc3339(unix_time: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-25T17:20:03.123Z."""
    moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AppliedConfig:
    """A snapshot the engine accepted and is serving."""

    version: int
    snapshot: dict[str, Any]
    applied_at: float


@dataclass(frozen=True)
class ReloadError:
    """Why the latest reload was refused; cleared by the next successful one."""

    error: str
    at: float


@dataclass
class State:
    source: str  # the config file path
    started_at: float = field(default_factory=time.time)
    applied: AppliedConfig | None = None
    last_reload_error: ReloadError | None = None
    reloads: int = 0  # successful reloads, the first apply not counted
    reload_failures: int = 0
    draining: bool = False

    @property
    def version(self) -> int:
        return self.applied.version if self.applied else 0

    @property
    def ready(self) -> bool:
        return self.applied is not None and not self.draining

    def config_view(self) -> dict[str, Any]:
        """The /config document."""
        error = self.last_reload_error
        return {
            "version": self.version,
            "source": self.source,
            "applied_at": rfc3339(self.applied.applied_at) if self.applied else None,
            "snapshot": self.applied.snapshot if self.applied else None,
            "last_reload_error": {"error": error.error, "at": rfc3339(error.at)} if error else None,
        }

    def orchestrator_view(self, pid: int) -> dict[str, Any]:
        """The orchestrator part of /stats."""
        return {
            "pid": pid,
            "source": self.source,
            "version": self.version,
            "uptime_s": round(time.time() - self.started_at, 3),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "draining": self.draining,
        }
