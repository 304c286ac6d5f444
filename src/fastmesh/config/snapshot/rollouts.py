"""What the proxy's rollout controller needs from the Rollout objects: names as the engine knows them.

Computed in the config worker (the proxy never imports the models) and sent in its header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastmesh.config.checks.rollout import RolloutTargetError, resolve_target
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import HTTPRoute, Rollout
from fastmesh.config.model.httproute import HTTPHeaderMatch
from fastmesh.config.model.types import parse_duration
from fastmesh.config.snapshot.backends import resolve
from fastmesh.config.snapshot.routes import Entry, entries, render


def rollout_plans(cfg: MeshConfig) -> list[dict[str, Any]]:
    """One plan per Rollout (the config is checked: every target resolves)."""
    plans = []
    for rollout in cfg.objects(Rollout):
        route, index, stable, canary = resolve_target(cfg, rollout)  # indices of the rule's backendRefs
        refs = route.spec.rules[index].backend_refs
        names = sorted({e.name for e in entries(route) if e.rule_index == index})
        gates = rollout.spec.gates
        plans.append({
            "name": rollout.ref,
            "route": names[0],
            "stable": resolve(cfg, route.namespace, refs[stable]),
            "canary": resolve(cfg, route.namespace, refs[canary]),
            "steps": list(rollout.spec.steps),
            "interval_s": parse_duration(rollout.spec.interval),
            "paused": rollout.spec.paused,
            # where the weights live in the cluster (Kubernetes mode writes them there)
            "target": {"namespace": route.namespace, "name": route.name, "rule": index,
                       "stable_ref": stable, "canary_ref": canary},
            "gates": {
                "min_success_rate": gates.min_success_rate,
                "max_success_rate_drop": gates.max_success_rate_drop,
                "max_p99_ms": gates.max_p99_ms,
                "max_p99_ratio": gates.max_p99_ratio,
                "min_requests": gates.min_requests,
            },
        })
    return plans


# === what a Rollout compiles onto its rule ===


@dataclass(frozen=True)
class PinEntry(Entry):
    """A rule's match plus the Rollout's canary header: all of it to one backendRef."""

    pin: str = "canary"  # "canary" | "stable"
    header: HTTPHeaderMatch | None = None

    @property
    def name(self) -> str:
        return f"{super().name}/{self.pin}-pin"


def rollouts_by_rule(cfg: MeshConfig) -> dict[tuple[int, int], tuple[Rollout, int, int]]:
    """(id(route), rule index) -> (Rollout, stable ref index, canary ref index) of every Rollout."""
    out = {}
    for rollout in cfg.objects(Rollout):
        try:
            route, index, stable, canary = resolve_target(cfg, rollout)
        except RolloutTargetError:  # reported by the checks; a cluster serves the rest
            continue
        out[(id(route), index)] = (rollout, stable, canary)
    return out


def render_rollout_rule(cfg: MeshConfig, route: HTTPRoute, found: list[tuple[Entry, dict[str, Any]]],
                        rollout: Rollout, stable: int, canary: int) -> list[tuple[Entry, dict[str, Any]]]:
    """The rule's rendered entries (changed in place): backendRefs stable first (the order a header-hash
    session lays users out in), the Rollout's stickiness as the session; plus the canary header's pins."""
    spec = rollout.spec
    refs = [resolve(cfg, route.namespace, ref) for ref in (route.spec.rules[found[0][0].rule_index].backend_refs)]
    stable_name, canary_name = refs[stable], refs[canary]
    for _, rendered in found:
        rendered["backends"].sort(key=lambda b: b["backend"] != stable_name)
        if spec.stickiness is not None:
            rendered["session"] = spec.stickiness.session().compile()
    pins: list[tuple[Entry, dict[str, Any]]] = []
    header = spec.canary_header
    if header is None:
        return pins
    wanted = [("canary", header.value, canary_name)]
    if header.stable_value is not None:
        wanted.append(("stable", header.stable_value, stable_name))
    for entry, _ in found:
        for pin, value, backend in wanted:
            match = HTTPHeaderMatch(type="Exact", name=header.name, value=value)
            extended = entry.match.model_copy(update={"headers": [*entry.match.headers, match]})
            pinned = PinEntry(entry.route, entry.rule_index, entry.rule, entry.match_index, extended, pin, match)
            rendered = render(cfg, pinned)
            rendered["backends"] = [{"backend": backend, "weight": 1}]
            rendered.pop("session", None)
            pins.append((pinned, rendered))
    return pins
