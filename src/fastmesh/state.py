"""What the orchestrator knows about itself; the admin API and the metrics read it, the runtime writes it."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any


def rfc3339(unix_time: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-25T17:20:03.123Z.

    With `time`, not `datetime`: importing datetime costs the idle proxy ~0.7 MiB of memory.
    """
    fraction, seconds = math.modf(unix_time)
    microseconds = round(fraction * 1e6)  # rounded to microseconds, then cut to ms, as datetime does
    if microseconds >= 1_000_000:
        seconds, microseconds = seconds + 1, microseconds - 1_000_000
    elif microseconds < 0:
        seconds, microseconds = seconds - 1, microseconds + 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{microseconds // 1000:03d}Z"


@dataclass(frozen=True)
class AppliedConfig:
    """A snapshot the engine accepted and is serving."""

    version: int
    snapshot_json: str
    """As handed to the engine. Kept as text, not as a dict: ~10x smaller for the life of the proxy,
    and /config, which needs the dict, is rare."""
    applied_at: float

    @property
    def snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = json.loads(self.snapshot_json)
        return snapshot


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
    control: dict[str, Any] | None = None
    """With --control-plane: the connection's state (fastmesh.control.client.ControlWatcher.status)."""

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

    def orchestrator_view(self, pid: int, event_loop: str = "") -> dict[str, Any]:
        """The orchestrator part of /stats; `event_loop` is the loop's class ("uvloop.Loop")."""
        return {
            "pid": pid,
            "event_loop": event_loop,
            "source": self.source,
            "version": self.version,
            "uptime_s": round(time.time() - self.started_at, 3),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "draining": self.draining,
            **({"control_plane": dict(self.control)} if self.control is not None else {}),
        }
