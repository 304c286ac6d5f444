"""Gateway API precedence of the route entries of one virtual host (the engine takes the first match)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastmesh.config import MeshConfig, compile_snapshot
from fastmesh.config.snapshot.precedence import covers, hostname_specificity

Load = Callable[[str], MeshConfig]

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"


def route(name: str, matches: str, created: str | None = None, ns: str = "default") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return (
        f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: {name}, namespace: {ns}{stamp}}}\n"
        f"spec:\n  parentRefs: [{{group: '', kind: Service, name: web, namespace: default}}]\n"
        f"  rules:\n{matches}"
    )


def order(load: Load, text: str) -> list[tuple[str, Any]]:
    (vhost,) = compile_snapshot(load(SERVICE + text))["vhosts"]
    return [(r["name"], _short(r["match"])) for r in vhost["routes"]]


def _short(match: dict[str, Any]) -> str:
    path = match["path"]
    out = f"{path['type']} {path['value']}"
    if match["method"]:
        out += f" {match['method']}"
    out += "".join(f" h:{h['name']}" for h in match["headers"])
    out += "".join(f" q:{q['name']}" for q in match["query"])
    return out


def test_path_kind_then_prefix_length_then_method_headers_query(load: Load) -> None:
    rules = """\
    - matches:
        - {path: {type: PathPrefix, value: /}}
        - {path: {type: RegularExpression, value: "/api/.*"}}
        - {path: {type: PathPrefix, value: /api}, queryParams: [{name: a, value: "1"}]}
        - {path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: "1"}]}
        - {path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: "1"}, {name: x-b, value: "2"}]}
        - {path: {type: PathPrefix, value: /api}, method: POST}
        - {path: {type: PathPrefix, value: /api/v1}}
        - {path: {type: Exact, value: /api}}
        - {path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: "1"}], queryParams: [{name: a, value: "1"}]}
"""
    assert [m for _, m in order(load, route("r", rules))] == [
        "Exact /api",
        "PathPrefix /api/v1",
        "PathPrefix /api POST",
        "PathPrefix /api h:x-a h:x-b",
        "PathPrefix /api h:x-a q:a",
        "PathPrefix /api h:x-a",
        "PathPrefix /api q:a",
        "PathPrefix /",
        "RegularExpression /api/.*",  # regular expressions after every prefix
    ]


def test_ties_go_to_the_oldest_route_then_name_then_rule_then_match(load: Load) -> None:
    same = "    - matches: [{path: {type: PathPrefix, value: /x}}, {path: {type: PathPrefix, value: /y}}]\n"
    text = (
        route("zeta-old", same, created="2024-01-01T00:00:00Z")
        + route("alpha-new", same, created="2025-06-01T00:00:00Z")
        + route("beta-unstamped", same + same)
        + route("gamma-unstamped", same)  # GAMMA: routes of other namespaces are consumer routes, not here
        + route("alpha-unstamped", same)
    )
    assert order(load, text) == [
        ("default/zeta-old/rule/0", "PathPrefix /x"),
        ("default/zeta-old/rule/0", "PathPrefix /y"),
        ("default/alpha-new/rule/0", "PathPrefix /x"),
        ("default/alpha-new/rule/0", "PathPrefix /y"),
        ("default/alpha-unstamped/rule/0", "PathPrefix /x"),
        ("default/alpha-unstamped/rule/0", "PathPrefix /y"),
        ("default/beta-unstamped/rule/0", "PathPrefix /x"),
        ("default/beta-unstamped/rule/0", "PathPrefix /y"),
        ("default/beta-unstamped/rule/1", "PathPrefix /x"),
        ("default/beta-unstamped/rule/1", "PathPrefix /y"),
        ("default/gamma-unstamped/rule/0", "PathPrefix /x"),
        ("default/gamma-unstamped/rule/0", "PathPrefix /y"),
    ]


def test_precedence_beats_route_age(load: Load) -> None:
    text = route("old", "    - {}\n", created="2020-01-01T00:00:00Z") + route(
        "new", "    - matches: [{path: {type: PathPrefix, value: /api}}]\n", created="2025-01-01T00:00:00Z"
    )
    assert [name for name, _ in order(load, text)] == ["default/new/rule/0", "default/old/rule/0"]


def test_hostname_coverage() -> None:
    assert covers("*.example.com", "a.example.com")
    assert covers("*.example.com", "a.b.example.com")
    assert covers("*.example.com", "*.a.example.com")
    assert not covers("*.example.com", "example.com")
    assert not covers("*.example.com", "aexample.com")
    assert not covers("a.example.com", "*.example.com")
    assert hostname_specificity(["a.example.com", "*.example.com"], "a.example.com") == (13, 13)
    assert hostname_specificity(["*.com", "*.example.com"], "a.example.com") == (0, 13)
    assert hostname_specificity([], "a.example.com") == (0, 0)
