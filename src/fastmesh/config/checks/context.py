"""What every check gets: the config, where to report, and which objects failed the schema."""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from fastmesh.config.errors import Problem, field_path
from fastmesh.config.mesh import Document, MeshConfig
from fastmesh.config.model import Service, TrafficPolicy

Loc = Sequence[str | int]


@dataclass
class Context:
    cfg: MeshConfig
    broken: frozenset[tuple[str, str, str]] = frozenset()
    """(kind, namespace, name) of documents that failed the schema: references to them are not
    reported again as "not found"."""
    allow_invalid_backends: bool = False
    """Accept backendRefs to missing Services or ports (they compile to `null`: 500), as Gateway API
    does for objects read from a cluster; a file is the whole world, so by default they are errors."""
    problems: list[Problem] = field(default_factory=list)
    unresolved: list[Problem] = field(default_factory=list)
    """With `allow_invalid_backends`: the backendRefs that do not resolve (not errors: they answer 500)."""

    def report(self, doc: Document, loc: Loc, message: str, reason: str = "") -> None:
        self.problems.append(Problem(self.cfg.source, message, doc.index, doc.label, field_path(loc), reason=reason))

    def report_backend(self, doc: Document, loc: Loc, message: str, reason: str = "BackendNotFound") -> None:
        """A backendRef that does not resolve: an error in a file, only a condition in a cluster."""
        if not self.allow_invalid_backends:
            self.report(doc, loc, message, reason)
            return
        self.unresolved.append(Problem(self.cfg.source, message, doc.index, doc.label, field_path(loc), reason=reason))

    @cached_property
    def service_hostnames(self) -> dict[str, Service]:
        """Every hostname of every Service -> the Service (built once, looked up per route)."""
        return {h: s for s in self.cfg.services for h in s.hostnames()}

    @cached_property
    def first_service_policy(self) -> dict[tuple[str, str, int | None], TrafficPolicy]:
        """(namespace, Service, port) -> the first TrafficPolicy targeting it (in file order)."""
        first: dict[tuple[str, str, int | None], TrafficPolicy] = {}
        for policy in self.cfg.objects(TrafficPolicy):
            target = policy.spec.target_ref
            if target.kind == "Service":
                first.setdefault((policy.namespace, target.name, target.port), policy)
        return first

    def is_broken(self, kind: str, namespace: str | None = None, name: str | None = None) -> bool:
        """Whether an object (or, without a name, any object of the kind) failed the schema."""
        return any(
            k == kind and (namespace is None or (ns, n) == (namespace, name)) for k, ns, n in self.broken
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)`, or ` (there is none)` / ` (known: a, b)`."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    if not options:
        return " (there are none in this file)"
    shown = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
    return f" (known: {shown})"


def duplicates(keys: Iterable[Hashable]) -> Iterator[tuple[int, int]]:
    """(index, index of its first occurrence) of every key seen before."""
    first: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            yield i, first[key]
        else:
            first[key] = i
