"""The control plane's stream: newline-delimited JSON messages, each on one line.

    {"type": "hello", "epoch": E, "namespace": NS, "identity": SPIFFE_ID}     first, always
    {"type": "full", "epoch": E, "version": V, "documents": [DOC, ...]}        the whole view
    {"type": "delta", "epoch": E, "from": V0, "version": V, "upserts": [DOC, ...],
     "deletes": [{"kind": K, "namespace": NS, "name": N}, ...]}                what changed from V0 to V

`epoch` names one run of the control plane: versions count within it. A proxy that reconnects says what it
has (`?epoch=E&version=V`); the same epoch and a version still in the view's history gets the deltas after
it, anything else a full state. Documents are config documents (fastmesh.kube.source.project), as a proxy
watching the cluster itself would read them; this module is the part both sides share (no cryptography,
no kubernetes client: the proxy imports it).
"""

from __future__ import annotations

import json
from typing import Any

from fastmesh.kube.source import RESOURCES
from fastmesh.kube.watch import Changes

Key = tuple[str, str, str]
"""(kind, namespace, name) of a document."""

KIND_ORDER = {kind: index for index, (kind, _, _) in enumerate(RESOURCES)}
CONFIG_PATH = "/v1/config"
CERTIFICATE_PATH = "/v1/certificate"


class ProtocolError(ValueError):
    """A message the proxy cannot use; the stream is dropped and opened again."""


def key_of(doc: dict[str, Any]) -> Key:
    meta = doc.get("metadata") or {}
    return str(doc.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", ""))


def canonical(doc: dict[str, Any]) -> str:
    """The one text of a document: compared to find changes, shipped as is, rendered as is."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def render(texts: dict[Key, str]) -> bytes:
    """Documents as the multi-document config text fastmesh.kube.source.render makes of the same objects
    (kinds in RESOURCES order, then namespace/name), so the loader and compiler see what they would see
    watching the cluster directly."""
    order = sorted(texts, key=lambda k: (KIND_ORDER.get(k[0], len(KIND_ORDER)), k[1], k[2]))
    return ("\n---\n".join(texts[k] for k in order) + "\n").encode()


def full_line(epoch: str, version: int, texts: list[str]) -> bytearray:
    """The full state message as the stream's line (newline included), grown in place: at 10,000 Services it
    is ~23 MB, made without the joined text and its encoded copy beside it."""
    out = bytearray(f'{{"type":"full","epoch":{json.dumps(epoch)},"version":{version},"documents":['.encode())
    for i, text in enumerate(texts):
        if i:
            out += b","
        out += text.encode()
    out += b"]}\n"
    return out


def delta_message(epoch: str, base: int, version: int, upserts: list[str], deletes: list[Key]) -> str:
    gone = json.dumps([{"kind": k, "namespace": ns, "name": n} for k, ns, n in deletes], separators=(",", ":"))
    return (f'{{"type":"delta","epoch":{json.dumps(epoch)},"from":{base},"version":{version},'
            f'"upserts":[{",".join(upserts)}],"deletes":{gone}}}')


class Replica:
    """The proxy's copy of its view, kept by applying the stream's messages in order."""

    def __init__(self) -> None:
        self.epoch = ""
        self.version = 0
        self.namespace: str | None = None
        self.identity: str | None = None
        self.texts: dict[Key, str] = {}
        self.complete = False
        """A full state has been received (in this or an earlier connection)."""
        self.replaced = False
        """A full state came since `take_changes`: every kind is replaced."""
        self.dirty: set[Key] = set()
        """Documents upserted or deleted by the deltas since `take_changes`."""

    def apply(self, line: bytes | str) -> bool:
        """Apply one message; True when the documents may have changed."""
        try:
            message = json.loads(line)
        except ValueError as e:
            raise ProtocolError(f"not JSON: {e}") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "hello":
            self.namespace, self.identity = message.get("namespace"), message.get("identity")
            if message.get("epoch") != self.epoch:
                self.complete = False  # another run of the control plane: only a full state counts
            return False
        if kind == "full":
            self.texts = {key_of(doc): canonical(doc) for doc in message["documents"]}
            self.replaced, self.dirty = True, set()
        elif kind == "delta":
            if not self.complete or message.get("epoch") != self.epoch or message.get("from") != self.version:
                raise ProtocolError(f"delta from version {message.get('from')} of epoch {message.get('epoch')}, "
                                    f"but this proxy has version {self.version} of epoch {self.epoch}")
            for doc in message["upserts"]:
                key = key_of(doc)
                self.texts[key] = canonical(doc)
                self.dirty.add(key)
            for gone in message["deletes"]:
                key = (gone["kind"], gone["namespace"], gone["name"])
                self.texts.pop(key, None)
                self.dirty.add(key)
        else:
            raise ProtocolError(f"unknown message type {kind!r}")
        self.epoch, self.version, self.complete = str(message["epoch"]), int(message["version"]), True
        return True

    def content(self) -> bytes:
        return render(self.texts)

    @property
    def pending(self) -> bool:
        """Changes not taken yet."""
        return self.replaced or bool(self.dirty)

    def documents(self) -> list[tuple[str, dict[str, Any]]]:
        """Every document as (kind, document), for fastmesh.compiler.ClusterCompiler (which takes documents
        as it takes API objects: `project` leaves a document as it is)."""
        return [(key[0], json.loads(text)) for key, text in self.texts.items()]

    def take_changes(self) -> Changes:
        """What changed since the last call, for an incremental compiler: after a full state, every kind
        replaced by the documents there are; else the documents the deltas upserted or deleted."""
        if self.replaced:
            changes = Changes(self.documents(), [], list(KIND_ORDER))
        else:
            changes = Changes()
            for key in sorted(self.dirty):
                text = self.texts.get(key)
                if text is None:
                    changes.deletes.append(key)
                else:
                    changes.upserts.append((key[0], json.loads(text)))
        self.replaced, self.dirty = False, set()
        return changes
