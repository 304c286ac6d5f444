"""Compiling a checked config into the engine snapshot (docs/engine-snapshot.md), without "version"."""

from __future__ import annotations

from typing import Any

from fastmesh.config.gcpause import without_gc
from fastmesh.config.snapshot.authorization import compile_authorization
from fastmesh.config.snapshot.backends import compile_backends
from fastmesh.config.snapshot.vhosts import compile_vhosts
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model.proxy import ListenerSpec
from fastmesh.config.model.types import parse_duration


def _ms(duration: str) -> int:
    return round(parse_duration(duration) * 1000)


def _listener(cfg: MeshConfig, listener: ListenerSpec) -> dict[str, Any]:
    compiled: dict[str, Any] = {"name": listener.name, "address": listener.socket_address}
    if listener.mtls != "DISABLE":  # absent means DISABLE (docs/engine-snapshot.md)
        compiled["tls"] = {"mode": listener.mtls}
    authorization = compile_authorization(cfg, listener)
    if authorization is not None:
        compiled["authorization"] = authorization
    return compiled


def compile_head(cfg: MeshConfig) -> dict[str, Any]:
    """The snapshot's members before "backends": listeners and pool."""
    proxy = cfg.proxy
    return {
        "listeners": [_listener(cfg, listener) for listener in proxy.listeners],
        "pool": {
            "idle_timeout_ms": _ms(proxy.pool.idle_timeout),
            "max_idle_per_endpoint": proxy.pool.max_idle_per_endpoint,
            "connect_timeout_ms": _ms(proxy.pool.connect_timeout),
        },
    }


@without_gc
def compile_snapshot(cfg: MeshConfig) -> dict[str, Any]:
    """The snapshot as a JSON-ready dict; the runtime adds "version" and applies it."""
    return {**compile_head(cfg), "backends": compile_backends(cfg), "vhosts": compile_vhosts(cfg)}


__all__ = ["compile_head", "compile_snapshot"]
