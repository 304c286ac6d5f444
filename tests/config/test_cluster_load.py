"""Objects from a cluster are checked one by one (fastmesh.config.cluster): an invalid one is left out
with its problems, what depended on it goes too, the rest compiles; the worker reports them."""

from __future__ import annotations

import json

import pytest

from fastmesh.config import ConfigError, compile_snapshot, load_text
from fastmesh.config.cluster import load_cluster_text
from fastmesh.config.worker import compile_content
from fastmesh.overrides import Overrides


def _service(name: str) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 8080}}]}}\n---\n"


def _route(name: str, parent: str, backend: str, path: str = "/") -> str:
    return (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n"
        f"  parentRefs: [{{group: '', kind: Service, name: {parent}}}]\n"
        f"  rules: [{{matches: [{{path: {{type: RegularExpression, value: '{path}'}}}}],"
        f" backendRefs: [{{name: {backend}, port: 8080}}]}}]\n---\n"
    )


TEXT = (
    _service("web") + _service("api")
    + "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec: {ports: [{port: 80800}]}\n---\n"
    + _route("good", "web", "web", "/ok/.*")
    + _route("bad-regex", "web", "web", "/(unclosed")
    + _route("no-backend", "api", "nowhere")
    + _route("on-broken", "broken", "web")  # its parent was left out: it goes too
)


def test_invalid_objects_are_left_out_and_the_rest_compiles() -> None:
    with pytest.raises(ConfigError):
        load_text(TEXT, "k8s")  # a file is refused whole
    cfg, reports = load_cluster_text(TEXT, "k8s")
    assert sorted(r.name for r in cfg.routes) == ["good", "no-backend"]
    by_name = {r.name: r for r in reports}
    assert sorted(by_name) == ["bad-regex", "broken", "no-backend", "on-broken"]
    assert by_name["broken"].left_out and by_name["broken"].kind == "Service"
    (regex,) = by_name["bad-regex"].problems
    assert by_name["bad-regex"].left_out and regex.path == "spec.rules[0].matches[0].path.value"
    assert regex.reason == "" and "invalid regular expression" in regex.message
    (parent,) = by_name["on-broken"].problems
    assert by_name["on-broken"].left_out and (parent.reason, parent.path) == ("NoMatchingParent", "spec.parentRefs[0].name")
    (backend,) = by_name["no-backend"].problems
    assert not by_name["no-backend"].left_out  # kept: that backend answers 500
    assert (backend.reason, backend.message) == ("BackendNotFound", "Service default/nowhere not found (did you mean default/web?)")
    routes = {v["name"]: v["routes"] for v in compile_snapshot(cfg)["vhosts"]}
    assert [r["name"] for r in routes["default/web"]] == ["default/good/rule/0"]
    assert routes["default/api"][0]["backends"] == [{"backend": None, "weight": 1}]


def test_the_worker_reports_the_objects_of_a_cluster() -> None:
    header, snapshot = compile_content(TEXT.encode(), "k8s", Overrides(), cluster=True)
    assert snapshot is not None
    objects = {o["name"]: o for o in header["objects"]}
    assert objects["bad-regex"]["left_out"] and objects["bad-regex"]["problems"][0]["reason"] == ""
    assert objects["no-backend"] == {
        "kind": "HTTPRoute", "namespace": "default", "name": "no-backend", "left_out": False,
        "problems": [{"path": "spec.rules[0].backendRefs[0].name", "reason": "BackendNotFound",
                      "message": "Service default/nowhere not found (did you mean default/web?)"}],
    }
    header, _ = compile_content(TEXT.encode(), "k8s", Overrides())
    assert "problems" in header and "objects" not in header  # a file: refused, as before
    json.dumps(header)
