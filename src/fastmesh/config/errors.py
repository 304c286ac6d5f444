"""Config problems: each names the file, the document and the field path; all are reported at once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def field_path(loc: Sequence[str | int]) -> str:
    """`("spec", "rules", 0, "backendRefs")` -> `spec.rules[0].backendRefs`.

    Map keys that are not identifiers (annotation names) read as `annotations["fastmesh.io/x"]`.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


@dataclass(frozen=True)
class Problem:
    """One mistake in one place."""

    source: str
    """The file (or `<string>`) the text came from."""
    message: str
    """What is wrong, with the value that was found."""
    document: int | None = None
    """1-based position of the YAML document in the file (empty documents count)."""
    label: str = ""
    """`Kind namespace/name` of the document, as far as it could be read."""
    path: str = ""
    """Field path inside the document: `spec.rules[0].backendRefs[1].weight`."""
    line: int | None = None
    """1-based line, for YAML syntax errors."""
    column: int | None = None
    """1-based column, for YAML syntax errors."""
    reason: str = ""
    """For objects read from a cluster: the Gateway API condition reason it is reported with
    (`BackendNotFound`, `InvalidKind`, `NoMatchingParent`; empty: `UnsupportedValue`)."""

    def __str__(self) -> str:
        parts = [self.source]
        if self.line is not None:
            parts.append(f"line {self.line}, column {self.column}")
        if self.document is not None:
            parts.append(f"document {self.document} ({self.label})")
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(ValueError):
    """The config is invalid; `str(error)` lists every problem, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
