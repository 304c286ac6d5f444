"""The config layer: Kubernetes-form YAML in, a checked `MeshConfig`, then the engine snapshot out.

    cfg = load_file("examples/demo.yaml")     # ConfigError lists every problem, one per line
    snapshot = compile_snapshot(cfg)          # JSON-ready; the runtime adds "version"

The names below are imported on first use: `fastmesh.config.errors` must be importable without
pydantic and the models, which the long-running proxy process never loads (fastmesh.compiler).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastmesh.config.errors import ConfigError, Problem
    from fastmesh.config.loader import load_file, load_text
    from fastmesh.config.mesh import MeshConfig, document_count
    from fastmesh.config.snapshot import compile_snapshot

_FROM = {
    "ConfigError": "fastmesh.config.errors",
    "Problem": "fastmesh.config.errors",
    "load_file": "fastmesh.config.loader",
    "load_text": "fastmesh.config.loader",
    "MeshConfig": "fastmesh.config.mesh",
    "document_count": "fastmesh.config.mesh",
    "compile_snapshot": "fastmesh.config.snapshot",
}

__all__ = ["ConfigError", "MeshConfig", "Problem", "compile_snapshot", "document_count", "load_file", "load_text"]


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
