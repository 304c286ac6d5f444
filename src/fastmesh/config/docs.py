"""Field tables of docs/config.md, generated from the models: `python -m fastmesh.config.docs [--check] [FILE]`.

docs/config.md is written by hand except the blocks between `<!-- fields: NAME -->` and
`<!-- end fields -->`, which this module rewrites. `--check` exits 1 when the file is not current.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fastmesh.config.model import KINDS, ObjectMeta
from fastmesh.config.model.types import Doc

DEFAULT_PATH = Path(__file__).resolve().parents[3] / "docs" / "config.md"
_ENVELOPE = {"api_version", "kind", "metadata", "status"}
_BLOCK = re.compile(r"(<!-- fields: (\S+) -->\n).*?(<!-- end fields -->)", re.DOTALL)
_SCALARS = {str: "string", int: "integer", bool: "boolean", float: "number", datetime: "timestamp"}


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        doc = next((a for a in args[1:] if isinstance(a, Doc)), None)
        return doc.text if doc else _type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args if a is not type(None))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"map of {_type_text(args[0])} to {_type_text(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    return _SCALARS.get(tp, "any")


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, list):
        value = [v.model_dump(mode="json", exclude_none=True) if isinstance(v, BaseModel) else v for v in value]
    return f"`{json.dumps(value)}`"


def _inner_model(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly or in a list), and whether it is a list."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _inner_model(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _inner_model(inner[0]) if len(inner) == 1 else (None, False)
    if origin is list:
        model, _ = _inner_model(typing.get_args(tp)[0])
        return model, True
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, False
    return None, False


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str, skip: set[str]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{field.alias or name}"
        inner, is_list = _inner_model(field.annotation)
        shown = f"{path}[]" if is_list and inner else path
        description = _cell(field.description or "")
        doc = next((m for m in field.metadata if isinstance(m, Doc)), None)  # Annotated at field level
        kind = doc.text if doc else _type_text(field.annotation)
        rows.append(f"| `{shown}` | {kind} | {_default_text(field)} | {description} |")
        if inner is not None:
            rows += _rows(inner, f"{shown}.", set())
    return rows


def table(model: type[BaseModel], skip: set[str] | None = None) -> str:
    header = "| Field | Type | Default | Description |\n| --- | --- | --- | --- |\n"
    return header + "\n".join(_rows(model, "", skip or set())) + "\n"


def blocks() -> dict[str, str]:
    """Generated block name -> its markdown."""
    out = {"metadata": table(ObjectMeta)}
    for kind in KINDS:
        out[kind.KIND] = table(kind, _ENVELOPE)
    return out


def render(text: str) -> str:
    """`text` with every generated block brought up to date."""
    generated = blocks()
    missing = set(generated) - {m.group(2) for m in _BLOCK.finditer(text)}
    if missing:
        raise ValueError(f"docs/config.md lacks the blocks: {', '.join(sorted(missing))}")

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in generated:
            raise ValueError(f"unknown generated block {name!r}")
        return f"{match.group(1)}{generated[name]}{match.group(3)}"

    return _BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmesh.config.docs", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if FILE is not current; write nothing")
    args = parser.parse_args(argv)
    current = args.file.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.file} is out of date: run python -m fastmesh.config.docs", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.file.write_text(wanted, encoding="utf-8")
        print(f"wrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
