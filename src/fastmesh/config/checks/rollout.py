"""Checks of a Rollout beyond its schema: its rule exists and splits between exactly its two backends."""

from __future__ import annotations

from fastmesh.config.checks.context import Context, did_you_mean
from fastmesh.config.mesh import Document, MeshConfig
from fastmesh.config.model import HTTPRoute, Rollout
from fastmesh.config.model.httproute import HTTPBackendRef
from fastmesh.config.model.rollout import RolloutBackend


class RolloutTargetError(Exception):
    """What is wrong with a Rollout's target; `field` is the path under `spec`."""

    def __init__(self, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field = field


def _matches(ref: HTTPBackendRef, namespace: str, want: RolloutBackend) -> bool:
    return (
        (ref.group, ref.kind) == ("", "Service")
        and (ref.namespace or namespace) == namespace
        and ref.name == want.name
        and (want.port is None or ref.port == want.port)
    )


def _describe(ref: HTTPBackendRef) -> str:
    return f"{ref.name}:{ref.port}" if ref.port is not None else ref.name


def resolve_target(cfg: MeshConfig, rollout: Rollout) -> tuple[HTTPRoute, int, int, int]:
    """(route, rule index, stable backendRef index, canary backendRef index); RolloutTargetError if none."""
    spec = rollout.spec
    target = spec.target_ref
    route = next((r for r in cfg.routes if (r.namespace, r.name) == (rollout.namespace, target.name)), None)
    if route is None:
        known = (r.name for r in cfg.routes if r.namespace == rollout.namespace)
        raise RolloutTargetError(("targetRef", "name"), f"HTTPRoute {rollout.namespace}/{target.name} not found"
                                 f"{did_you_mean(target.name, known)}")
    rules = route.spec.rules
    if target.rule is None:
        if len(rules) != 1:
            raise RolloutTargetError(("targetRef", "rule"), f"HTTPRoute {route.ref} has {len(rules)} rules: "
                                     "say which one with `rule` (its index, from 0)")
        index = 0
    elif target.rule >= len(rules):
        raise RolloutTargetError(("targetRef", "rule"), f"HTTPRoute {route.ref} has no rule {target.rule} "
                                 f"(it has {len(rules)})")
    else:
        index = target.rule
    refs = rules[index].backend_refs
    named = ", ".join(_describe(r) for r in refs) or "none"
    if len(refs) != 2:
        raise RolloutTargetError(("targetRef",), f"rule {index} of HTTPRoute {route.ref} must have exactly two "
                                 f"backendRefs, stable and canary (it has {named})")
    found = []
    for role, want in (("stable", spec.stable), ("canary", spec.canary)):
        hits = [i for i, ref in enumerate(refs) if _matches(ref, route.namespace, want)]
        if len(hits) != 1:
            how = "none" if not hits else "both; give `port`"
            raise RolloutTargetError((role,), f"{_describe_want(want)} must name one backendRef of rule {index} "
                                     f"of HTTPRoute {route.ref} (its backendRefs: {named}; matched {how})")
        found.append(hits[0])
    if found[0] == found[1]:
        raise RolloutTargetError(("canary",), "stable and canary name the same backendRef")
    return route, index, found[0], found[1]


def _describe_want(want: RolloutBackend) -> str:
    return f"{want.name}:{want.port}" if want.port is not None else want.name


def check_rollout(ctx: Context, doc: Document) -> None:
    rollout = doc.obj
    assert isinstance(rollout, Rollout)
    try:
        route, index, _, _ = resolve_target(ctx.cfg, rollout)
    except RolloutTargetError as e:
        if not (e.field == ("targetRef", "name") and ctx.is_broken("HTTPRoute", rollout.namespace,
                                                                   rollout.spec.target_ref.name)):
            ctx.report(doc, ("spec", *e.field), str(e))
        return
    if rollout.spec.stickiness is not None and route.spec.rules[index].session_persistence is not None:
        ctx.report(doc, ("spec", "stickiness"), f"rule {index} of HTTPRoute {route.ref} has its own "
                   "sessionPersistence: remove one of the two")
    for other in ctx.cfg.objects(Rollout):
        if other is rollout:
            break
        try:
            other_route, other_index, _, _ = resolve_target(ctx.cfg, other)
        except RolloutTargetError:
            continue
        if (other_route is route) and other_index == index:
            ctx.report(doc, ("spec", "targetRef"), f"Rollout {other.ref} already rolls out rule {index} "
                       f"of HTTPRoute {route.ref}")
            return
