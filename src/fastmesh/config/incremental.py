"""A cluster's objects compiled incrementally: each change recompiles what it touches, not the whole mesh.

    compiler = IncrementalCompiler("kubernetes https://...", proxy_namespace="mesh")
    result = compiler.apply(upserts=[("Service", obj), ...], deletes=[("EndpointSlice", "ns", "name")])
    result.snapshot_json      # byte-identical to what fastmesh.config.worker --cluster gives for the same objects

Objects are given as the API serves them (`fastmesh.kube.source.project` makes them documents) and
parsed (pydantic) once per content: an unchanged object is never parsed again. Then:

- Only EndpointSlices, HTTPRoutes and AuthorizationPolicies changed (the common events) and the last
  compile succeeded:
  - each changed slice is checked against the config as it stands (a slice's checks read only itself
    and its Service), and only the backends of the Services whose slices changed are compiled again;
  - each changed HTTPRoute is checked against the config as it stands (a route's checks read Services,
    FaultInjections and the Proxy, never other routes), and only the vhosts of the Services it is attached
    to, before and after, are compiled again;
  - each changed AuthorizationPolicy is checked against the config as it stands (its checks read only
    Services), and only the listeners (the snapshot's head) are compiled again;
  the snapshot JSON is reassembled from the cached JSON of every other Service's backends and vhost.
- Anything else, or where the result could differ from a full compile: a full check and compile of the
  cached models (fastmesh.config.cluster). That is: a slice whose Service is not in the config; a route
  or policy change after a Proxy was left out (a route change: or a FaultInjection), or after a Service
  was when the route (policy) has a problem (a full compile checks it against the objects left out
  later, so its messages depend on the order objects are left out in); a route that is (or was) on the
  listeners (host vhosts span routes); a route of a namespace with a TrafficPolicy targeting an
  HTTPRoute or a Rollout (their checks and what they render read the routes). TrafficPolicy,
  FaultInjection, Service and Proxy changes are always a full compile.

Either way the result is what the file path (`render` -> `load_cluster_text` -> `compile_snapshot`)
gives: tests/config/test_incremental.py compares them over random change sequences.
"""

from __future__ import annotations

import bisect
import gc
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fastmesh.config.checks.authorizationpolicy import check_authorization_policy
from fastmesh.config.checks.context import Context
from fastmesh.config.checks.endpointslice import check_endpoint_slice
from fastmesh.config.checks.httproute import check_route
from fastmesh.config.cluster import Identity, ObjectReport, check_objects
from fastmesh.config.errors import Problem
from fastmesh.config.gcpause import paused_gc
from fastmesh.config.loader import _identity, _parse
from fastmesh.config.mesh import Document, MeshConfig
from fastmesh.config.model import AuthorizationPolicy, EndpointSlice, HTTPRoute, KubeObject, Rollout, TrafficPolicy
from fastmesh.config.snapshot import compile_head
from fastmesh.config.snapshot.backends import external_backends, service_backends, slices_by_service
from fastmesh.config.snapshot.vhosts import Rendered, host_vhosts, service_names, service_vhosts
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
    """True: only the Services of the changed EndpointSlices and HTTPRoutes were compiled again."""
    changed: bool = True
    """False: the objects given were what the compiler already had; the previous result again."""


class _Joined:
    """The JSON of one piece per Service, joined with commas, `BLOCK` Services at a time: a change joins
    the blocks it touched and the blocks, instead of every Service's piece."""

    def __init__(self, order: list[ServiceKey], pieces: dict[ServiceKey, str]) -> None:
        self.order = order
        self.pieces = pieces
        self.block_of = {skey: i // BLOCK for i, skey in enumerate(order)}
        self.blocks: list[str | None] = [None] * -(-len(order) // BLOCK)

    def __setitem__(self, skey: ServiceKey, piece: str) -> None:
        self.pieces[skey] = piece
        self.blocks[self.block_of[skey]] = None

    def parts(self) -> list[str]:
        """The joined blocks that are not empty."""
        blocks = self.blocks
        for b, block in enumerate(blocks):
            if block is None:
                parts = (self.pieces[skey] for skey in self.order[b * BLOCK : (b + 1) * BLOCK])
                blocks[b] = ",".join(p for p in parts if p)
        return [b for b in blocks if b]


@dataclass
class _Compiled:
    """What the last successful compile left, for the next incremental one."""

    cfg: MeshConfig
    head: str
    """`{"listeners":...,"pool":...` (no closing brace)."""
    backends: _Joined
    """Service -> the JSON of its backends, without the brackets."""
    externals: list[str]
    vhosts: _Joined
    """Service -> the JSON of its vhost."""
    host_vhosts: list[str]
    """The JSON of each vhost of the listener routes' hosts."""
    names: Counter[str]
    """How many Services have each name (fastmesh.config.snapshot.vhosts.service_names)."""
    route_readers: frozenset[str]
    """Namespaces where a route change needs the full compile: a TrafficPolicy targeting an HTTPRoute
    or a Rollout is there (their checks and what they render read the routes)."""
    left_out: frozenset[str]
    """The kinds of the objects left out: a route change needs the full compile after a Proxy or a
    FaultInjection was, and after a Service was when the route has a problem."""
    slices: dict[ServiceKey, dict[str, EndpointSlice]] = field(default_factory=dict)
    """The slices in the config (not left out) by Service, by name."""
    slice_owner: dict[Key, ServiceKey] = field(default_factory=dict)
    """Slice -> its Service, for the slices in `slices`."""
    reports: dict[Key, dict[str, Any]] = field(default_factory=dict)


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
            routes = {key for key in changed if key[0] == "HTTPRoute"}
            policies = {key for key in changed if key[0] == "AuthorizationPolicy"}
            try:
                fast = (
                    compiled is not None and kinds <= {"EndpointSlice", "HTTPRoute", "AuthorizationPolicy"}
                    and self._routes_changed(compiled, routes) and self._policies_changed(compiled, policies)
                    and self._slices_changed(compiled, changed - routes - policies)
                )
            except BaseException:
                self._compiled = self._last = None  # half brought up to date: the next apply compiles in full
                raise
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
        services: list[ServiceKey] = [(service.namespace, service.name) for service in cfg.services]
        backends: dict[ServiceKey, str] = {skey: _dumps(service_backends(cfg, service, slices.get(skey, [])))[1:-1]
                    for skey, service in zip(services, cfg.services)}
        rendered, names = Rendered(cfg), service_names(cfg)
        vhosts: dict[ServiceKey, str] = {skey: _dumps(vhost) for skey, vhost in zip(services, service_vhosts(cfg, cfg.services, rendered, names))}
        by_identity = {(k[0], k[1] or "default", k[2]): k for k in keys} if found else {}
        reports = {by_identity.get((r.kind, r.namespace, r.name), (r.kind, r.namespace, r.name)): r.to_json()
                   for r in found}
        models = [obj.model for obj in self.objects.values() if obj.model is not None]
        readers = frozenset(
            m.namespace for m in models
            if isinstance(m, Rollout) or (isinstance(m, TrafficPolicy) and m.spec.target_ref.kind == "HTTPRoute")
        )
        return _Compiled(
            cfg, _dumps(head)[:-1], _Joined(services, backends), [_dumps(b) for b in external_backends(cfg)],
            _Joined(services, vhosts), [_dumps(v) for v in host_vhosts(cfg, rendered)], names, readers,
            frozenset(r.kind for r in found if r.left_out),
            {skey: {eps.name: eps for eps in found_slices} for skey, found_slices in slices.items()},
            {("EndpointSlice", eps.namespace, eps.name): skey for skey, found in slices.items() for eps in found},
            reports,
        )

    # === HTTPRoutes and AuthorizationPolicies ===

    def _routes_changed(self, compiled: _Compiled, keys: set[Key]) -> bool:
        """Bring `compiled` up to date with the changed routes; False (nothing touched) when one of them
        needs the full compile (see the module's docstring)."""
        if not keys:
            return True
        if compiled.left_out & {"Proxy", "FaultInjection"}:
            return False

        def refused(key: Key, was: KubeObject | None, new: KubeObject | None) -> bool:
            on_listeners = any(isinstance(r, HTTPRoute) and r.on_listeners() for r in (was, new))
            return key[1] in compiled.route_readers or on_listeners

        checked = self._checked(compiled, keys, HTTPRoute, check_route, refused)
        if checked is None:
            return False
        touched: set[tuple[str, str]] = set()
        for route in self._replace(compiled, keys, HTTPRoute, checked):
            assert isinstance(route, HTTPRoute)
            touched.update((ns, name) for ns, name, _ in route.service_parents())
        cfg = compiled.cfg
        services = [s for skey in sorted(touched) if (s := cfg.service(*skey)) is not None]
        for service, vhost in zip(services, service_vhosts(cfg, services, names=compiled.names)):
            compiled.vhosts[(service.namespace, service.name)] = _dumps(vhost)
        return True

    def _policies_changed(self, compiled: _Compiled, keys: set[Key]) -> bool:
        """The same for AuthorizationPolicies: they are read only by the listeners (the snapshot's head)."""
        if not keys:
            return True
        if "Proxy" in compiled.left_out:
            return False
        checked = self._checked(compiled, keys, AuthorizationPolicy, check_authorization_policy, lambda *_: False)
        if checked is None:
            return False
        self._replace(compiled, keys, AuthorizationPolicy, checked)
        head = compile_head(compiled.cfg)
        self.overrides.apply(head)
        compiled.head = _dumps(head)[:-1]
        return True

    def _checked(
        self, compiled: _Compiled, keys: set[Key], cls: type[KubeObject], check: Callable[[Context, Document], None],
        refused: Callable[[Key, KubeObject | None, KubeObject | None], bool],
    ) -> dict[Key, tuple[list[Problem], list[Problem]]] | None:
        """The changed objects of `cls`, checked against the config as it stands (their checks must read no
        other object of `cls`): key -> (problems, unresolved refs). None when one needs the full compile:
        `refused(key, as it was in the config, as it is)` says so; its name is not its key's (a duplicate of
        another object); or it has a problem while a Service was left out (a full compile checks it against
        the Services left out later: other messages)."""
        cfg = compiled.cfg
        current = {(o.namespace, o.name): o for o in cfg.objects(cls)}
        ctx = Context(cfg, frozenset(), allow_invalid_backends=True)
        checked: dict[Key, tuple[list[Problem], list[Problem]]] = {}
        for key in keys:
            obj = self.objects.get(key)
            new = obj.model if obj is not None and isinstance(obj.model, cls) else None
            if refused(key, current.get(key[1:]), new):
                return None
            if new is None:
                continue
            if (new.namespace, new.name) != key[1:]:
                return None
            before, before_unresolved = len(ctx.problems), len(ctx.unresolved)
            check(ctx, Document(0, new))
            checked[key] = ctx.problems[before:], ctx.unresolved[before_unresolved:]
            if checked[key][0] and "Service" in compiled.left_out:
                return None
        return checked

    def _replace(
        self, compiled: _Compiled, keys: set[Key], cls: type[KubeObject],
        checked: dict[Key, tuple[list[Problem], list[Problem]]],
    ) -> list[KubeObject]:
        """Reports and config brought up to date with the changed objects of `cls` (checked by `_checked`);
        the objects of `cls` among them that were in the config or are now."""
        cfg = compiled.cfg
        current = {(o.namespace, o.name): o for o in cfg.objects(cls)}
        touched = []
        for key in keys:
            compiled.reports.pop(key, None)
            was = current.pop(key[1:], None)
            if was is not None:
                touched.append(was)
            obj = self.objects.get(key)
            if obj is None:
                continue
            problems, unresolved = checked.get(key, ([], []))
            problems = obj.problems + problems
            if isinstance(obj.model, cls) and not problems:
                current[key[1:]] = obj.model
                touched.append(obj.model)
            if problems or unresolved:
                kind, namespace, name = obj.identity
                report = ObjectReport(kind, namespace or "default", name or "", bool(problems),
                                      tuple(problems or unresolved))
                compiled.reports[key] = report.to_json()
        kept = tuple(Document(0, current[name]) for name in sorted(current))
        documents = cfg.documents  # by kind in RESOURCES order: those of `cls` are one run of them
        rank = _KIND_ORDER[cls.KIND]
        start = bisect.bisect_left(documents, rank, key=lambda d: _KIND_ORDER[d.obj.KIND])
        end = bisect.bisect_right(documents, rank, key=lambda d: _KIND_ORDER[d.obj.KIND])
        compiled.cfg = cfg.with_objects(cls, documents[:start] + kept + documents[end:], tuple(d.obj for d in kept))
        return touched

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
        return True

    # === output ===

    def _snapshot(self, compiled: _Compiled) -> str:
        backends = ",".join(compiled.backends.parts() + compiled.externals)
        vhosts = ",".join(compiled.vhosts.parts() + compiled.host_vhosts)
        return "".join((compiled.head, ',"backends":[', backends, '],"vhosts":[', vhosts, "]}"))

    def _header(self, compiled: _Compiled) -> dict[str, Any]:
        reports = [compiled.reports[key] for key in sorted(compiled.reports, key=_order)]
        return {"settings": proxy_settings(compiled.cfg, self.source, cluster=True), "objects": reports}
