"""The Rollout kind: schema and cross-document errors name file, document and field; plans for the proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fastmesh.config import ConfigError, MeshConfig
from fastmesh.config.snapshot.rollouts import rollout_plans
from fastmesh.config.worker import compile_content
from fastmesh.overrides import Overrides

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1}
spec: {ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2}
spec: {ports: [{port: 9080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
    - backendRefs: [{name: reviews-v1, port: 9080, weight: 90}, {name: reviews-v2, port: 9080, weight: 10}]
---
"""


def rollout(spec: str) -> str:
    return BASE + f"apiVersion: fastmesh.io/v1alpha1\nkind: Rollout\nmetadata: {{name: reviews}}\nspec:\n{spec}"


GOOD = """\
  targetRef: {kind: HTTPRoute, name: reviews}
  stable: {name: reviews-v1, port: 9080}
  canary: {name: reviews-v2}
  steps: [5, 10, 25, 50, 100]
  interval: 30s
  gates: {minSuccessRate: 99, maxP99Ratio: 1.5, minRequests: 50}
"""


def only(error: ConfigError) -> tuple[str | None, str]:
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.document == 5 and problem.label == "Rollout default/reviews", problem
    return problem.path, problem.message


def test_a_rollout_compiles_to_a_plan_with_engine_names(load: Callable[[str], MeshConfig]) -> None:
    cfg = load(rollout(GOOD))
    assert rollout_plans(cfg) == [{
        "name": "default/reviews", "route": "default/reviews/rule/0",
        "stable": "default/reviews-v1:9080", "canary": "default/reviews-v2:9080",
        "steps": [5, 10, 25, 50, 100], "interval_s": 30.0,
        "gates": {"min_success_rate": 99.0, "max_success_rate_drop": None, "max_p99_ms": None,
                  "max_p99_ratio": 1.5, "min_requests": 50},
        "paused": False,
        "target": {"namespace": "default", "name": "reviews", "rule": 0, "stable_ref": 0, "canary_ref": 1},
    }]


def test_the_worker_sends_plans_only_when_there_are_rollouts(config_file: Callable[[str], Path]) -> None:
    header, _ = compile_content(rollout(GOOD).encode(), "mesh.yaml", Overrides())
    assert [p["name"] for p in header["rollouts"]] == ["default/reviews"]
    header, _ = compile_content(BASE.encode(), "mesh.yaml", Overrides())
    assert "rollouts" not in header


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (("[5, 10, 25, 50, 100]", "[5, 25, 10, 100]"), "spec", "steps must be strictly increasing (got 25 then 10)"),
        (("[5, 10, 25, 50, 100]", "[5, 10, 50]"), "spec", "the last step must be 100 (got 50)"),
        (("[5, 10, 25, 50, 100]", "[0, 100]"), "spec.steps[0]", "greater than or equal to 1"),
        (("{minSuccessRate: 99, maxP99Ratio: 1.5, minRequests: 50}", "{minRequests: 50}"), "spec.gates",
         "set at least one gate: minSuccessRate, maxSuccessRateDrop, maxP99Ms or maxP99Ratio"),
        (("minSuccessRate: 99", "minSuccessRate: 120"), "spec.gates.minSuccessRate", "must be between 0 and 100 (got 120.0)"),
        (("interval: 30s", "interval: soon"), "spec.interval", "duration"),
        (("canary: {name: reviews-v2}", "canary: {name: reviews-v1, port: 9080}"), "spec",
         "stable and canary name the same backend"),
        (("canary: {name: reviews-v2}", "canary: {name: reviews-v1}"), "spec.canary",
         "stable and canary name the same backendRef"),
        (("name: reviews}\n  stable", "name: review}\n  stable"), "spec.targetRef.name",
         "HTTPRoute default/review not found (did you mean reviews?)"),
        (("canary: {name: reviews-v2}", "canary: {name: reviews-v3}"), "spec.canary",
         "reviews-v3 must name one backendRef of rule 0 of HTTPRoute default/reviews "
         "(its backendRefs: reviews-v1:9080, reviews-v2:9080; matched none)"),
        (("{kind: HTTPRoute, name: reviews}", "{kind: HTTPRoute, name: reviews, rule: 1}"), "spec.targetRef.rule",
         "HTTPRoute default/reviews has no rule 1 (it has 1)"),
        (("interval: 30s", "interval: 30s\n  extra: 1"), "spec.extra", ""),
    ],
)
def test_bad_rollouts_name_the_field(
    errors: Callable[[str], ConfigError], change: tuple[str, str], path: str, message: str
) -> None:
    text = rollout(GOOD)
    assert change[0] in text
    got_path, got_message = only(errors(text.replace(change[0], change[1], 1)))
    assert got_path == path
    assert message in got_message


def test_the_rule_must_split_between_exactly_two_backends(errors: Callable[[str], ConfigError]) -> None:
    text = rollout(GOOD).replace(", {name: reviews-v2, port: 9080, weight: 10}]", "]")
    path, message = only(errors(text))
    assert path == "spec.targetRef"
    assert message == ("rule 0 of HTTPRoute default/reviews must have exactly two backendRefs, stable and canary "
                       "(it has reviews-v1:9080)")


def test_a_route_with_several_rules_needs_the_rule_index(errors: Callable[[str], ConfigError]) -> None:
    text = rollout(GOOD).replace("  rules:\n", "  rules:\n    - backendRefs: [{name: reviews-v1, port: 9080}]\n      "
                                 "matches: [{path: {value: /admin}}]\n")
    path, message = only(errors(text))
    assert (path, message) == ("spec.targetRef.rule", "HTTPRoute default/reviews has 2 rules: say which one "
                               "with `rule` (its index, from 0)")


def test_two_rollouts_of_one_rule_are_refused(errors: Callable[[str], ConfigError]) -> None:
    text = rollout(GOOD) + "---\n" + rollout(GOOD).removeprefix(BASE).replace("name: reviews}\nspec", "name: again}\nspec")
    error = errors(text)
    assert [(p.label, p.path, p.message) for p in error.problems] == [
        ("Rollout default/again", "spec.targetRef",
         "Rollout default/reviews already rolls out rule 0 of HTTPRoute default/reviews")
    ]
