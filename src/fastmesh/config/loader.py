"""From YAML text to a checked `MeshConfig`, or a `ConfigError` listing every problem."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fastmesh.config.checks import check
from fastmesh.config.errors import ConfigError, Problem, field_path
from fastmesh.config.fastpath import fast_parser
from fastmesh.config.gcpause import without_gc
from fastmesh.config.mesh import Document, MeshConfig, doc_label
from fastmesh.config.model import KINDS, KubeObject
from fastmesh.config.schema_errors import describe
from fastmesh.config.yamlfile import read_documents

_BY_KIND: dict[str, type[KubeObject]] = {k.KIND: k for k in KINDS}
_KNOWN = ", ".join(f"{k.KIND} ({k.API_VERSION})" for k in KINDS)


def load_file(path: str | Path, *, allow_invalid_backends: bool = False) -> MeshConfig:
    """Read and check a config file. Raises ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem(source, f"cannot read: {e.strerror or e}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(source, f"cannot read: not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    return load_text(text, source, allow_invalid_backends=allow_invalid_backends)


@without_gc
def load_text(
    text: str, source: str = "<string>", *, allow_invalid_backends: bool = False, namespace: str | None = None
) -> MeshConfig:
    """Check a config given as text; `source` names it in messages. Raises ConfigError.

    `allow_invalid_backends`: accept backendRefs to missing Services or ports (compiled to `null`,
    which answers 500), as Gateway API does for objects read from a cluster.
    `namespace`: the proxy's own namespace (GAMMA consumer routes); None: the Proxy document's.
    """
    parsed = parse_documents(read_documents(text, source), source, namespace)
    return check_parsed(parsed, allow_invalid_backends=allow_invalid_backends)


@dataclass
class Parsed:
    """The documents that passed the schema, and what is known of those that did not."""

    config: MeshConfig
    broken: frozenset[tuple[str, str, str]]
    """(kind, namespace, name) of the documents that failed the schema."""
    problems: list[Problem]


def parse_documents(raw_documents: list[tuple[int, Any]], source: str, namespace: str | None = None) -> Parsed:
    """The schema phase of `load_text`: each YAML document into its model."""
    problems: list[Problem] = []
    documents: list[Document] = []
    broken: set[tuple[str, str, str]] = set()
    for index, raw in raw_documents:
        obj = _parse(raw, source, index, problems)
        if isinstance(obj, KubeObject):
            documents.append(Document(index, obj))
        elif obj is not None:
            broken.add(obj)
    return Parsed(MeshConfig(source, tuple(documents), namespace), frozenset(broken), problems)


def check_parsed(parsed: Parsed, *, allow_invalid_backends: bool = False) -> MeshConfig:
    """The checks phase of `load_text`: what needs more than one field. Raises ConfigError."""
    problems = parsed.problems + check(parsed.config, parsed.broken, allow_invalid_backends)
    if problems:
        problems.sort(key=lambda p: p.document or 0)  # file order; stable within a document
        raise ConfigError(problems)
    return parsed.config


def _identity(raw: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(kind, namespace, name) as far as they can be read from an unchecked document."""
    kind = raw.get("kind")
    meta = raw.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    return (
        kind if isinstance(kind, str) else "<no kind>",
        namespace if isinstance(namespace, str) else None,
        name if isinstance(name, str) else None,
    )


def _parse(
    raw: Any, source: str, index: int, problems: list[Problem]
) -> KubeObject | tuple[str, str, str] | None:
    """The object; or, when it is invalid, its identity (None if it has none)."""
    if not isinstance(raw, dict):
        what = "a list" if isinstance(raw, list) else repr(raw)
        problems.append(
            Problem(source, f"must be a mapping with apiVersion, kind, metadata and spec (got {what})", index, "?")
        )
        return None
    kind, namespace, name = _identity(raw)
    label = doc_label(kind, namespace, name)

    def report(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(source, message, index, label, field_path(loc)))

    model = _BY_KIND.get(kind)
    if model is None:
        if "kind" not in raw:
            report(("kind",), f"required field is missing (one of: {_KNOWN})")
        else:
            close = difflib.get_close_matches(kind, _BY_KIND, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            report(("kind",), f"unknown kind {raw['kind']!r} ({hint}fastmesh reads: {_KNOWN})")
        return None
    api_version = raw.get("apiVersion")
    if api_version != model.API_VERSION:
        got = "it is missing" if api_version is None else f"got {api_version!r}"
        report(("apiVersion",), f"{kind} is apiVersion {model.API_VERSION!r} ({got})")
        raw = {**raw, "apiVersion": model.API_VERSION}  # check the rest all the same
    fast = fast_parser(model)  # ext/ (Cython): the same model, or None and pydantic says what is wrong
    try:
        obj = fast(raw) if fast is not None else None
        if obj is None:
            obj = model.model_validate(raw)
    except ValidationError as e:
        for error in e.errors():
            report(tuple(error["loc"]), describe(model, error))
        return (kind, namespace or "default", name or "")
    if api_version != model.API_VERSION:
        return (kind, obj.namespace, obj.name)
    return obj
