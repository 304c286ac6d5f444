"""What the proxy's rollout controller needs from the Rollout objects: names as the engine knows them.

Computed in the config worker (the proxy never imports the models) and sent in its header."""

from __future__ import annotations

from typing import Any

from fastmesh.config.checks.rollout import resolve_target
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import Rollout
from fastmesh.config.model.types import parse_duration
from fastmesh.config.snapshot.backends import resolve
from fastmesh.config.snapshot.routes import entries


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
