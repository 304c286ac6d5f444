"""deploy/crds/ holds a CRD per fastmesh.io kind, generated from the models, current and structural."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fastmesh.config import crds
from fastmesh.config.model import TrafficPolicy

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def test_deploy_crds_are_current() -> None:
    assert crds.main(["--check", str(CRDS)]) == 0, "run: python -m fastmesh.config.crds"
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crds.files())


def test_check_mode_fails_on_a_stale_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in crds.files().items():
        (tmp_path / name).write_text(text.replace("maximum: 20", "maximum: 21"), encoding="utf-8")
    (tmp_path / "old.fastmesh.io.yaml").write_text("{}\n", encoding="utf-8")
    assert crds.main(["--check", str(tmp_path)]) == 1
    assert "trafficpolicies.fastmesh.io.yaml" in capsys.readouterr().err
    assert crds.main([str(tmp_path)]) == 0
    assert crds.main(["--check", str(tmp_path)]) == 0
    assert not (tmp_path / "old.fastmesh.io.yaml").exists()


def _walk(node: object, path: str = "") -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("kind", crds.CRD_KINDS, ids=lambda k: k.KIND)
def test_schema_is_structural(kind: type) -> None:
    """Kubernetes' structural rules: every node typed (or int-or-string / preserve-unknown), no refs, unions,
    defaults or `additionalProperties: false`."""
    schema = crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if path.endswith(".properties"):
            continue
        assert not {"$ref", "anyOf", "oneOf", "allOf", "default", "const", "title"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        typed = "type" in node
        assert typed != bool(node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")), path


def test_constraints_checked_in_code_reach_the_schema() -> None:
    """A bound the loader enforces in a validator is in the CRD too (so the apiserver rejects it first)."""
    spec = crds.crd(TrafficPolicy)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    retry = spec["properties"]["retry"]["properties"]
    assert (retry["attempts"]["minimum"], retry["attempts"]["maximum"]) == (0, 20)
    assert retry["codes"]["items"] == {"type": "integer", "minimum": 400, "maximum": 599}
    assert retry["perTryTimeout"]["pattern"] == "^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$"
    assert spec["properties"]["targetRef"]["required"] == ["name"]
    budget = retry["budget"]["properties"]["percent"]
    assert (budget["type"], budget["minimum"], budget["maximum"]) == ("number", 0, 100)


def test_a_union_without_structural_form_is_an_error() -> None:
    node = {"anyOf": [{"type": "string"}, {"type": "boolean"}]}
    with pytest.raises(crds.SchemaError, match="spec.x"):
        crds.structural(node, {}, "spec.x")


def test_files_are_yaml_that_names_each_kind() -> None:
    for name, text in crds.files().items():
        doc = yaml.safe_load(text)
        assert name == f"{doc['metadata']['name']}.yaml"
        assert doc["spec"]["group"] == "fastmesh.io"
        assert json.dumps(doc)  # plain data
    assert crds.plural("Proxy") == "proxies" and crds.plural("TrafficPolicy") == "trafficpolicies"
