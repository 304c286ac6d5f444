"""The Cython modules of ext/, when built, and the pure-Python path when not (or when switched off).

    parser = fast_parser(EndpointSlice)   # a function doc -> model or None, or None: no fast path

A fast parser only ever accepts: it returns the model `model_validate` would build, or None when the
document is not one it takes (invalid ones included), and pydantic validates it and words the errors.
The modules are built by `make ext` (setup.py); without them, or with FASTMESH_NO_EXT=1 in the
environment, everything runs in Python with the same results (tests/config/test_ext.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastmesh.config.model import EndpointSlice, KubeObject

Parser = Callable[[Any], KubeObject | None]


def _load() -> dict[type[KubeObject], Parser]:
    try:
        from fastmesh._ext.endpointslice import parse_endpoint_slice
    except ImportError:  # not built: the pure-Python path
        return {}
    return {EndpointSlice: parse_endpoint_slice}


AVAILABLE: dict[type[KubeObject], Parser] = _load()
"""The fast parsers built, by model."""
_active: dict[type[KubeObject], Parser] = {} if os.environ.get("FASTMESH_NO_EXT") else dict(AVAILABLE)


def fast_parser(model: type[KubeObject]) -> Parser | None:
    return _active.get(model)


def use_ext(enabled: bool) -> None:
    """Switch the built modules on or off in this process (benchmarks and tests compare both paths)."""
    _active.clear()
    if enabled:
        _active.update(AVAILABLE)
