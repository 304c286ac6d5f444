"""Objects read from a cluster are checked one by one: an invalid object is left out, the rest serves.

A file is one edit by one author, so any problem refuses it whole (`load_text`). A cluster is many
objects written by many hands at different times; refusing everything for one bad HTTPRoute would let
any namespace's mistake freeze routing for the whole mesh. So `load_cluster_text` leaves out every
object with a problem and checks the rest again (an object left out may leave others dangling: an
HTTPRoute whose parent Service was left out goes too), until what remains is valid. What was left
out, and the backendRefs that do not resolve (kept: they answer 500, as Gateway API says), come back
as `ObjectReport`s, which the proxy writes into the objects' status (fastmesh.kube.status).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fastmesh.config.checks import checked
from fastmesh.config.errors import ConfigError, Problem
from fastmesh.config.gcpause import without_gc
from fastmesh.config.loader import Parsed, _identity, parse_documents
from fastmesh.config.mesh import Document, MeshConfig
from fastmesh.config.model import KubeObject
from fastmesh.config.yamlfile import read_documents


@dataclass(frozen=True)
class ObjectReport:
    """What is wrong with one object of the cluster."""

    kind: str
    namespace: str
    name: str
    left_out: bool
    """True: the object is not in the config (its problems are errors); False: only unresolved refs."""
    problems: tuple[Problem, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "namespace": self.namespace, "name": self.name, "left_out": self.left_out,
            "problems": [{"path": p.path, "message": p.message, "reason": p.reason} for p in self.problems],
        }


Identity = tuple[str, str | None, str | None]
"""(kind, namespace, name) of a document, as far as it could be read (fastmesh.config.loader._identity)."""


@without_gc
def load_cluster_text(text: str, source: str, namespace: str | None = None) -> tuple[MeshConfig, list[ObjectReport]]:
    """The valid part of a cluster's objects, and a report per object with a problem."""
    raw = read_documents(text, source)
    identity = {index: _identity(doc) if isinstance(doc, dict) else ("?", None, None) for index, doc in raw}
    return check_cluster(parse_documents(raw, source, namespace), identity)


def check_objects(
    source: str, namespace: str | None, objects: Sequence[tuple[Identity, KubeObject | None, Sequence[Problem]]]
) -> tuple[MeshConfig, list[ObjectReport]]:
    """`check_cluster` of objects parsed one by one: (identity, model or None when it failed the schema,
    its schema problems); object i is document i + 1."""
    documents: list[Document] = []
    problems: list[Problem] = []
    identity: dict[int, Identity] = {}
    for index, (ident, model, found) in enumerate(objects, 1):
        identity[index] = ident
        if model is not None:
            documents.append(Document(index, model))
        problems += [replace(p, document=index) for p in found]
    return check_cluster(Parsed(MeshConfig(source, tuple(documents), namespace), frozenset(), problems), identity)


@without_gc
def check_cluster(parsed: Parsed, identity: dict[int, Identity]) -> tuple[MeshConfig, list[ObjectReport]]:
    """The checks phase of `load_cluster_text`: leave out what has a problem until the rest is valid.
    `identity`: document index -> what the document says it is (for the reports)."""
    source, namespace = parsed.config.source, parsed.config.own_namespace
    errors: dict[int | None, list[Problem]] = {}
    for problem in parsed.problems:
        errors.setdefault(problem.document, []).append(problem)
    documents = parsed.config.documents
    while True:
        cfg = MeshConfig(source, documents, namespace)
        ctx = checked(cfg, frozenset(), allow_invalid_backends=True)  # what failed the schema is absent
        for problem in ctx.problems:
            errors.setdefault(problem.document, []).append(problem)
        if None in errors:  # not an object's problem: nothing to leave out
            raise ConfigError(errors[None])
        if not ctx.problems:
            break
        bad = {p.document for p in ctx.problems}
        documents = tuple(d for d in documents if d.index not in bad)
    unresolved: dict[int, list[Problem]] = {}
    for problem in ctx.unresolved:
        assert problem.document is not None
        unresolved.setdefault(problem.document, []).append(problem)
    reports = []
    for index in sorted({*errors, *unresolved}, key=lambda i: i or 0):
        assert index is not None
        kind, ns, name = identity[index]
        left_out = index in errors
        problems = errors[index] if left_out else unresolved[index]
        reports.append(ObjectReport(kind, ns or "default", name or "", left_out, tuple(problems)))
    return cfg, reports
