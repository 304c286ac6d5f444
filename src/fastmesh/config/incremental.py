"""A cluster's objects compiled incrementally: each change recompiles what it touches, not the whole mesh.

    compiler = IncrementalCompiler("kubernetes https://...", proxy_namespace="mesh")
    result = compiler.apply(upserts=[("Service", obj), ...], deletes=[("EndpointSlice", "ns", "name")])
    result.snapshot_json      # byte-identical to what fastmesh.config.worker --cluster gives for the same objects

Objects are given as the API serves them (`fastmesh.kube.source.project` makes them documents) and
parsed (pydantic) once per content: an unchanged object is never parsed again. Then:

- Only EndpointSlices changed (the common event at scale) and the last compile succeeded: each changed
  slice is checked against the config as it stands (a slice's checks read only itself and its
  Service), and only the backends of the Services whose slices changed are compiled again; the
  snapshot JSON is reassembled from the cached JSON of every other Service's backends.
- Anything else (or a slice whose Service is not in the config, where the result depends on the order
  objects are left out in): a full check and compile of the cached models (fastmesh.config.cluster).

Either way the result is what the file path (`render` -> `load_cluster_text` -> `compile_snapshot`)
gives: tests/config/test_incremental.py compares them over random change sequences.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fastmesh.config.checks.context import Context
from fastmesh.config.checks.endpointslice import check_endpoint_slice
from fastmesh.config.cluster import Identity, check_objects
from fastmesh.config.errors import Problem
from fastmesh.config.gcpause import paused_gc
from fastmesh.config.loader import _identity, _parse
from fastmesh.config.mesh import Document, MeshConfig
from fastmesh.config.model import EndpointSlice, KubeObject
from fastmesh.config.snapshot import compile_head
from fastmesh.config.snapshot.backends import external_backends, service_backends, slices_by_service
from fastmesh.config.snapshot.vhosts import compile_vhosts
from fastmesh.config.worker import proxy_settings
from fastmesh.kube.source import RESOURCES, project
from fastmesh.overrides import Overrides

Key = tuple[str, str, str]
"""(kind, namespace, name): one object; documents are ordered by it (kinds in RESOURCES order)."""
ServiceKey = tuple[str, str | None]

_API_VERSION = {kind: api_version for kind, api_version, _ in RESOURCES}
_KIND_ORDER = {kind: i for i, (kind, _, _) in enumerate(RESOURCES)}
_SEPARATORS = (",", ":")
BLOCK = 128


def _order(key: Key) -> tuple[int, str, str]:
    return _KIND_ORDER[key[0]], key[1], key[2]


def _name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=_SEPARATORS)


@dataclass
class _Object:
    """One object as a document, parsed once."""

    doc: dict[str, Any]
    identity: Identity
    model: KubeObject | None
    """None: the document failed the schema (`problems` says why)."""
    problems: list[Problem]


@dataclass(frozen=True)
class Result:
    version: int
    """Counts the snapshots this compiler produced (1 for the first)."""
    header: dict[str, Any]
    """As fastmesh.config.worker writes it with --cluster: {"settings": ..., "objects": [...]}."""
    snapshot_json: str
    """Compact JSON without "version" (fastmesh.compiler.with_version adds it)."""
    incremental: bool
    """True: only the changed EndpointSlices' Services were compiled again."""
    changed: bool = True
    """False: the objects given were what the compiler already had; the previous result again."""


@dataclass
class _Compiled:
    """What the last successful compile left, for the next incremental one."""

    cfg: MeshConfig
    head: str
    """`{"listeners":...,"pool":...` (no closing brace)."""
    services: list[ServiceKey]
    """The Services of the config, in document order."""
    backends: dict[ServiceKey, str]
    """Service -> the JSON of its backends, without the brackets."""
    externals: list[str]
    vhosts: str
    slices: dict[ServiceKey, dict[str, EndpointSlice]] = field(default_factory=dict)
    """The slices in the config (not left out) by Service, by name."""
    slice_owner: dict[Key, ServiceKey] = field(default_factory=dict)
    """Slice -> its Service, for the slices in `slices`."""
    reports: dict[Key, dict[str, Any]] = field(default_factory=dict)
    blocks: list[str | None] = field(default_factory=list)
    """The JSON of `BLOCK` Services' backends at a time (None: to be joined again): a change joins
    one block and the blocks, instead of every Service's piece."""
    block_of: dict[ServiceKey, int] = field(default_factory=dict)


class IncrementalCompiler:
    """The objects of a cluster, kept, and compiled into a snapshot on every `apply`."""

    def __init__(
        self,
        source: str,
        *,
        namespace: str | None = None,
        proxy_namespace: str | None = None,
        overrides: Overrides | None = None,
        freeze_gc: bool = False,
    ) -> None:
        """`source` names the cluster in messages; `namespace`: the proxy's own (GAMMA consumer routes);
        `proxy_namespace`: only the Proxy object of this namespace counts (None: any).

        `freeze_gc`: after a full compile, move every object of the process to the GC's permanent
        generation (`gc.freeze`), for a process that holds little but the compiler: its millions of
        (acyclic) objects are then never scanned again by the cyclic GC, which otherwise spends ~1 s
        on them after each full compile and stalls the next incremental one."""
        self.source = source
        self.namespace = namespace
        self.proxy_namespace = proxy_namespace
        self.overrides = overrides or Overrides()
        self.objects: dict[Key, _Object] = {}
        self.version = 0
        self.full_compiles = 0
        self.freeze_gc = freeze_gc
        self._compiled: _Compiled | None = None
        self._last: Result | None = None

    def apply(
        self, upserts: Iterable[tuple[str, dict[str, Any]]] = (), deletes: Iterable[tuple[str, str, str]] = (),
        replace_kinds: Iterable[str] = (),
    ) -> Result:
        """Add or replace objects (kind, object as the API serves it) and remove others (kind, namespace,
        name); the new snapshot. `replace_kinds`: for these kinds `upserts` is every object there is
        (a list, a relist): the others of the kinds are removed. ConfigError or OverrideError when the
        config as a whole is refused (the objects are kept all the same: the next `apply` compiles them again)."""
        with paused_gc():
            upserts = list(upserts)
            deletes = list(deletes)
            replaced = set(replace_kinds)
            if replaced:
                listed = {(kind, *_name(obj)) for kind, obj in upserts if kind in replaced}
                deletes += [key for key in self.objects if key[0] in replaced and key not in listed]
            changed = self._update(upserts, deletes)
            if not changed and self._last is not None:
                return replace(self._last, changed=False, incremental=True)
            compiled = self._compiled
            kinds = {key[0] for key in changed}
            fast = compiled is not None and kinds <= {"EndpointSlice"} and self._slices_changed(compiled, changed)
            if not fast:
                self._compiled = self._last = None  # a failure below leaves no stale state behind
                compiled = self._compiled = self._full()
                if self.freeze_gc:
                    gc.freeze()
            assert compiled is not None
            self.version += 1
            self._last = Result(self.version, self._header(compiled), self._snapshot(compiled), fast)
            return self._last

    # === the objects ===

    def _update(
        self, upserts: Iterable[tuple[str, dict[str, Any]]], deletes: Iterable[tuple[str, str, str]]
    ) -> set[Key]:
        """Apply the changes to `objects`; the keys whose document changed."""
        changed: set[Key] = set()
        for kind, namespace, name in deletes:
            key = (kind, namespace, name)
            if self.objects.pop(key, None) is not None:
                changed.add(key)
        for kind, obj in upserts:
            api_version = _API_VERSION.get(kind)
            if api_version is None:
                raise ValueError(f"unknown kind {kind!r} (fastmesh reads: {', '.join(_API_VERSION)})")
            key = (kind, *_name(obj))
            doc = project(kind, api_version, obj)
            if doc is not None and kind == "Proxy" and self.proxy_namespace is not None:
                if doc["metadata"].get("namespace") != self.proxy_namespace:
                    doc = None  # another proxy's settings
            old = self.objects.get(key)
            if doc is None:
                if old is not None:
                    del self.objects[key]
                    changed.add(key)
                continue
            if old is not None and old.doc == doc:
                continue
            problems: list[Problem] = []
            parsed = _parse(doc, self.source, 0, problems)
            model = parsed if isinstance(parsed, KubeObject) else None
            self.objects[key] = _Object(doc, _identity(doc), model, problems)
            changed.add(key)
        return changed

    # === full compile ===

    def _full(self) -> _Compiled:
        self.full_compiles += 1
        keys = sorted(self.objects, key=_order)
        cfg, found = check_objects(self.source, self.namespace,
                                   [(o.identity, o.model, o.problems) for o in map(self.objects.__getitem__, keys)])
        head = compile_head(cfg)
        self.overrides.apply(head)
        slices = slices_by_service(cfg.endpoint_slices)
        services: list[ServiceKey] = []
        backends: dict[ServiceKey, str] = {}
        for service in cfg.services:
            skey = (service.namespace, service.name)
            services.append(skey)
            backends[skey] = _dumps(service_backends(cfg, service, slices.get(skey, [])))[1:-1]
        by_identity = {(k[0], k[1] or "default", k[2]): k for k in keys} if found else {}
        reports = {by_identity.get((r.kind, r.namespace, r.name), (r.kind, r.namespace, r.name)): r.to_json()
                   for r in found}
        return _Compiled(
            cfg, _dumps(head)[:-1], services, backends,
            [_dumps(b) for b in external_backends(cfg)], _dumps(compile_vhosts(cfg)),
            {skey: {eps.name: eps for eps in found_slices} for skey, found_slices in slices.items()},
            {("EndpointSlice", eps.namespace, eps.name): skey for skey, found in slices.items() for eps in found},
            reports,
        )

    # === EndpointSlices only ===

    def _slices_changed(self, compiled: _Compiled, keys: set[Key]) -> bool:
        """Bring `compiled` up to date with the changed slices; False (nothing touched) when one of
        them needs the full compile: it names a Service that is not in the config."""
        cfg = compiled.cfg
        for key in keys:
            obj = self.objects.get(key)
            if obj is not None and isinstance(obj.model, EndpointSlice):
                eps = obj.model
                if eps.service_name is not None and cfg.service(eps.namespace, eps.service_name) is None:
                    return False
        touched: set[ServiceKey] = set()
        ctx = Context(cfg, frozenset(), allow_invalid_backends=True)
        for key in keys:
            compiled.reports.pop(key, None)
            owner = compiled.slice_owner.pop(key, None)  # the slice as it was: out of its Service's slices
            if owner is not None:
                del compiled.slices[owner][key[2]]
                touched.add(owner)
            obj = self.objects.get(key)
            if obj is None:
                continue
            problems = list(obj.problems)
            if isinstance(obj.model, EndpointSlice):
                before = len(ctx.problems)
                check_endpoint_slice(ctx, Document(0, obj.model))
                problems += ctx.problems[before:]
                if not problems:
                    skey = (obj.model.namespace, obj.model.service_name)
                    compiled.slices.setdefault(skey, {})[obj.model.name] = obj.model
                    compiled.slice_owner[key] = skey
                    touched.add(skey)
            if problems:
                kind, namespace, name = obj.identity
                compiled.reports[key] = {
                    "kind": kind, "namespace": namespace or "default", "name": name or "", "left_out": True,
                    "problems": [{"path": p.path, "message": p.message, "reason": p.reason} for p in problems],
                }
        for skey in touched:
            service = cfg.service(skey[0], skey[1]) if skey[1] is not None else None
            if service is None:
                continue
            slices = [eps for _, eps in sorted(compiled.slices.get(skey, {}).items())]
            compiled.backends[skey] = _dumps(service_backends(cfg, service, slices))[1:-1]
            compiled.blocks[compiled.block_of[skey]] = None
        return True

    # === output ===

    def _snapshot(self, compiled: _Compiled) -> str:
        if not compiled.block_of:
            compiled.block_of = {skey: i // BLOCK for i, skey in enumerate(compiled.services)}
            compiled.blocks = [None] * -(-len(compiled.services) // BLOCK)
        blocks = compiled.blocks
        for b, block in enumerate(blocks):
            if block is None:
                parts = (compiled.backends[skey] for skey in compiled.services[b * BLOCK : (b + 1) * BLOCK])
                blocks[b] = ",".join(p for p in parts if p)
        backends = ",".join([b for b in blocks if b] + compiled.externals)
        return "".join((compiled.head, ',"backends":[', backends, '],"vhosts":', compiled.vhosts, "}"))

    def _header(self, compiled: _Compiled) -> dict[str, Any]:
        reports = [compiled.reports[key] for key in sorted(compiled.reports, key=_order)]
        return {"settings": proxy_settings(compiled.cfg, self.source, cluster=True), "objects": reports}
