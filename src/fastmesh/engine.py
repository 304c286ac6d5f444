"""The data plane as the orchestrator sees it: a typed async face over the private `fastmesh._engine`.

The engine runs on its own threads. Its blocking calls (`apply` binds sockets, `drain` waits for
in-flight requests) release the GIL, so they run in a worker thread and the event loop stays free
to answer the admin API meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol


class EngineCore(Protocol):
    """What `fastmesh._engine.Engine` provides (see docs/engine-snapshot.md); unit tests pass fakes."""

    def apply(self, snapshot_json: str) -> int: ...
    def listeners(self) -> dict[str, str]: ...
    def stats_json(self) -> str: ...
    def drain(self, timeout_s: float) -> bool: ...
    def version(self) -> int: ...
    def active_requests(self) -> int: ...


class EngineNotBuilt(RuntimeError):
    """`fastmesh._engine` cannot be imported."""


class IdentityUnsupported(RuntimeError):
    """The engine build has no `set_identity` (built before mTLS landed)."""


def start_core(worker_threads: int) -> EngineCore:
    """Start the compiled engine (its tokio runtime) with `worker_threads` threads."""
    try:
        from fastmesh import _engine
    except ImportError as e:
        raise EngineNotBuilt(
            f"the engine (fastmesh._engine) is not built: run `make engine` ({e})"
        ) from e
    core: EngineCore = _engine.Engine(worker_threads)
    return core


class Engine:
    def __init__(self, core: EngineCore) -> None:
        self.core = core

    @classmethod
    def start(cls, worker_threads: int) -> Engine:
        return cls(start_core(worker_threads))

    async def apply_json(self, snapshot_json: str) -> int:
        """Hand over one snapshot (JSON, as the config compiler hands it over); ValueError (refused)
        or OSError (bind failed) leave the old one serving."""
        return await asyncio.get_running_loop().run_in_executor(None, self.core.apply, snapshot_json)

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting and wait for in-flight requests; True if all finished in time."""
        return await asyncio.get_running_loop().run_in_executor(None, self.core.drain, timeout_s)

    def set_identity(self, cert_chain_pem: str, key_pem: str, trust_bundle_pem: str) -> int:
        """Install the workload certificate, its key and the trust bundle; returns the generation.
        ValueError (refused material) leaves the previous one in place."""
        set_identity = getattr(self.core, "set_identity", None)
        if set_identity is None:
            raise IdentityUnsupported(
                "this engine build has no mTLS (Engine.set_identity is missing): rebuild it with "
                "`make engine` from a tree that has it")
        return int(set_identity(cert_chain_pem, key_pem, trust_bundle_pem))

    def identity(self) -> dict[str, Any] | None:
        """The engine's view of the installed identity (no key), or None."""
        identity = getattr(self.core, "identity", None)
        return identity() if identity is not None else None

    def listeners(self) -> dict[str, str]:
        return self.core.listeners()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self.core.stats_json())
        return stats

    def version(self) -> int:
        return self.core.version()

    def active_requests(self) -> int:
        return self.core.active_requests()
