"""The Cython modules of ext/, when built, and the pure-Python path when not (or when switched off).

    parser = fast_parser(EndpointSlice)     # doc -> model or None, or None: no compiled parser

A compiled parser only ever accepts: it returns the model `model_validate` would build, or None when
the document is not one it takes (invalid ones included), and pydantic validates it and words the
errors. A compiled function returns what the Python function it stands for returns.
The modules are built by `make ext` (setup.py); without them, or with FASTMESH_NO_EXT=1 in the
environment, everything runs in Python with the same results (tests/config/test_ext.py).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from fastmesh.config.model import EndpointSlice, KubeObject

Parser = Callable[[Any], KubeObject | None]

# ext/<module>.pyx -> the functions of it the Python code calls.
_MODULES = {
    "endpointslice": ("parse_endpoint_slice",),
}
_PARSERS: dict[type[KubeObject], str] = {EndpointSlice: "parse_endpoint_slice"}


NOT_LOADED: dict[str, str] = {}
"""ext/ module -> why it did not load (not built; or out of date with the models it builds)."""


def _load() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for module, names in _MODULES.items():
        try:
            loaded = importlib.import_module(f"fastmesh._ext.{module}")
        except ImportError as e:  # the pure-Python path
            NOT_LOADED[module] = str(e)
            continue
        found.update((name, getattr(loaded, name)) for name in names)
    return found


AVAILABLE: dict[str, Callable[..., Any]] = _load()
"""The compiled functions built, by name."""
ON = bool(AVAILABLE) and not os.environ.get("FASTMESH_NO_EXT")
"""Whether the process runs the compiled functions unless told otherwise (`use_ext`)."""
_active: dict[str, Callable[..., Any]] = dict(AVAILABLE) if ON else {}


def fast_parser(model: type[KubeObject]) -> Parser | None:
    name = _PARSERS.get(model)
    return _active.get(name) if name is not None else None


def use_ext(enabled: bool | set[str]) -> None:
    """Switch the built modules on or off in this process (benchmarks and tests compare both paths);
    a set: only these functions on."""
    _active.clear()
    if enabled:
        _active.update((k, v) for k, v in AVAILABLE.items() if enabled is True or k in enabled)
