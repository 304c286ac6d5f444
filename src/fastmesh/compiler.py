"""Loading a config for the proxy: checked and compiled in a child process, the snapshot sent back.

The config layer (PyYAML, pydantic and the models) is only needed while a config is read, and
importing it would keep ~13 MiB resident in the proxy for good; `fastmesh.config.worker` runs it
in a short-lived `python -m` process instead (~0.25 s per load or reload). This process keeps
only what the child prints: a few settings and the snapshot's JSON text, the one copy of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import fastmesh
from fastmesh.config.errors import ConfigError, Problem
from fastmesh.overrides import OverrideError, Overrides

WORKER = "fastmesh.config.worker"


@dataclass(frozen=True)
class IdentitySettings:
    """`spec.identity`: who the proxy is and where its certificate comes from."""

    spiffe_id: str
    ca_directory: str
    """Absolute path of the CA directory."""
    cert_ttl_s: float


@dataclass(frozen=True)
class ProxySettings:
    """What the orchestrator itself reads from the Proxy document."""

    admin_address: str
    worker_threads: int
    drain_timeout_s: float
    admin_token_file: str | None = None
    """Absolute path of `spec.admin.tokenFile`."""
    identity: IdentitySettings | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProxySettings:
        identity = doc.get("identity")
        return cls(**{**doc, "identity": IdentitySettings(**identity) if identity else None})


@dataclass(frozen=True)
class Compiled:
    """One read of the config file, compiled, listener overrides applied."""

    settings: ProxySettings
    snapshot_json: str
    """The snapshot as compact JSON, without "version" (see `with_version`)."""
    objects: tuple[dict[str, Any], ...] = ()
    """From a cluster: the objects left out or with unresolved refs (fastmesh.config.cluster.ObjectReport)."""
    rollouts: tuple[dict[str, Any], ...] = ()
    """The Rollouts' plans (fastmesh.config.snapshot.rollouts), for the rollout controller."""


def with_version(snapshot_json: str, version: int) -> str:
    """The snapshot JSON with `"version"` as its first member, as the engine takes it."""
    if not snapshot_json.startswith("{") or snapshot_json == "{}":
        raise ValueError("the snapshot must be a non-empty JSON object")
    return f'{{"version":{int(version)},{snapshot_json[1:]}'


def child_env() -> dict[str, str]:
    """The environment, with this fastmesh first on the path (the proxy may run from a checkout)."""
    root = str(Path(fastmesh.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, path) if p)}


def _crashed(source: str, status: int | None, stderr: bytes) -> ConfigError:
    lines = stderr.decode(errors="replace").strip().splitlines()
    why = lines[-1] if lines else "no output"
    return ConfigError([Problem(source, f"the config compiler ({WORKER}) failed with status {status}: {why}")])


async def compile_config(
    content: bytes, source: str, overrides: Overrides, cluster: bool = False, namespace: str | None = None
) -> Compiled:
    """Check and compile `content` (read from `source`); ConfigError or OverrideError if it is refused.

    `cluster`: the objects come from a Kubernetes cluster: an invalid object is left out (and reported
    in `Compiled.objects`), a backendRef to a missing Service answers 500 (Gateway API).
    `namespace`: the proxy's own namespace (GAMMA consumer routes); None: the Proxy document's."""
    argv = [sys.executable, "-m", WORKER, f"--source={source}"] + (["--cluster"] if cluster else [])
    argv += [f"--namespace={namespace}"] if namespace else []
    argv += [f"--listener={name}={address}" for name, address in overrides.listeners.items()]
    child = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await child.communicate(content)
    newline = out.find(b"\n")
    try:
        header = json.loads(out[:newline]) if child.returncode == 0 and newline > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise _crashed(source, child.returncode, err)
    if "problems" in header:
        raise ConfigError([Problem(**problem) for problem in header["problems"]])
    if "override_error" in header:
        raise OverrideError(header["override_error"])
    end = len(out) - 1 if out.endswith(b"\n") else len(out)
    # Decoded straight from the output buffer: a large snapshot is copied once, not three times.
    snapshot_json = str(memoryview(out)[newline + 1 : end], "utf-8")
    return Compiled(ProxySettings.from_json(header["settings"]), snapshot_json,
                    objects=tuple(header.get("objects", ())), rollouts=tuple(header.get("rollouts", ())))


CLUSTER_WORKER = "fastmesh.config.cluster_worker"


class ClusterCompiler:
    """The objects of a cluster compiled incrementally in a long-lived child process
    (fastmesh.config.cluster_worker): only the changes are sent to it.

    `everything()` gives every object (kind, object) there is: sent to a new child (the first one,
    or the next after a crash) before the changes, so it starts from the whole cluster."""

    def __init__(
        self, source: str, overrides: Overrides, everything: Callable[[], list[tuple[str, dict[str, Any]]]],
        *, kinds: Sequence[str], namespace: str | None = None, proxy_namespace: str | None = None,
    ) -> None:
        """`kinds`: every kind `everything()` gives (a request replacing them all is a full list)."""
        self.source = source
        self.kinds = tuple(kinds)
        self.overrides = overrides
        self.everything = everything
        self.namespace, self.proxy_namespace = namespace, proxy_namespace
        self._child: asyncio.subprocess.Process | None = None
        self.started = 0

    async def _start(self) -> asyncio.subprocess.Process:
        argv = [sys.executable, "-m", CLUSTER_WORKER, f"--source={self.source}"]
        argv += [f"--namespace={self.namespace}"] if self.namespace else []
        argv += [f"--proxy-namespace={self.proxy_namespace}"] if self.proxy_namespace else []
        argv += [f"--listener={name}={address}" for name, address in self.overrides.listeners.items()]
        self.started += 1
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=child_env(), limit=1 << 30,  # one line is the whole snapshot
        )

    async def apply(
        self, upserts: list[tuple[str, dict[str, Any]]], deletes: list[tuple[str, str, str]] = [],  # noqa: B006
        replace_kinds: list[str] = [],  # noqa: B006
    ) -> Compiled | None:
        """The new snapshot, None when nothing the compiler reads changed; ConfigError / OverrideError."""
        request = {"upserts": upserts, "deletes": deletes, "replace_kinds": replace_kinds}
        first = None
        if self._child is None or self._child.returncode is not None:
            self._child = await self._start()
            if not set(self.kinds) <= set(replace_kinds):  # not a full list itself: send one first
                first = await self._call({"upserts": self.everything(), "replace_kinds": list(self.kinds)})
        # A new child's first answer is a snapshot of everything: current if the changes change nothing.
        return await self._call(request) or first

    async def _call(self, request: dict[str, Any]) -> Compiled | None:
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        snapshot = b""
        try:
            child.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            await child.stdin.drain()
            line = await child.stdout.readline()
            header = json.loads(line) if line else None
            if not isinstance(header, dict):
                raise ValueError("it exited" if not line else "not a JSON object")
            if "settings" in header:
                snapshot = await child.stdout.readline()
                if not snapshot.endswith(b"\n"):
                    raise ValueError("it exited")
        except (OSError, ValueError) as e:
            await self.close()
            raise ConfigError([Problem(self.source, f"the cluster compiler ({CLUSTER_WORKER}) failed: {e}")]) from None
        if "problems" in header:
            raise ConfigError([Problem(**problem) for problem in header["problems"]])
        if "override_error" in header:
            raise OverrideError(header["override_error"])
        if "settings" not in header:
            return None  # unchanged
        return Compiled(ProxySettings.from_json(header["settings"]), str(memoryview(snapshot)[:-1], "utf-8"),
                        objects=tuple(header.get("objects", ())))

    async def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 5)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()
