"""docs/config.md carries a field table per kind, generated from the models, and is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from fastmesh.config import docs
from fastmesh.config.model import KINDS, ObjectMeta

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        inner, _ = docs._inner_model(field.annotation)
        if inner is not None:
            _models(inner, seen)


def test_docs_config_md_is_current() -> None:
    current = DOC.read_text(encoding="utf-8")
    assert docs.render(current) == current, "run: python -m fastmesh.config.docs"
    assert docs.main(["--check", str(DOC)]) == 0


def test_every_kind_has_a_table_with_its_fields() -> None:
    text = DOC.read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"<!-- fields: {kind.KIND} -->" in text
    assert "| `spec.rules[].backendRefs[].weight` | integer 0..1000000 | `1` |" in text
    assert "| `spec.drainTimeout` | duration (`10s`, `500ms`, `1h30m`) | `\"10s\"` |" in text
    assert "| `addressType` | `IPv4` \\| `IPv6` \\| `FQDN` | **required** |" in text


def test_every_field_is_documented() -> None:
    models: set[type[BaseModel]] = set()
    roots: list[type[BaseModel]] = [*KINDS, ObjectMeta]
    for kind in roots:
        _models(kind, models)
    undocumented = [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description]
    assert undocumented == []


def test_check_mode_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("integer 0..1000000", "integer"), encoding="utf-8")
    assert docs.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert docs.main([str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")
