"""Pydantic's validation errors, reworded for someone editing YAML: what is wrong and what was found."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validated the mapping at `loc` (for suggesting field names)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str):
                return None
            field = next((f for f in current.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_field(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    name = str(loc[-1])
    message = f"unknown field {name!r}"
    parent = _model_at(model, loc[:-1])
    if parent is not None:
        known = [f.alias for f in parent.model_fields.values() if f.alias]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        else:
            message += f" (allowed: {', '.join(known)})"
    return message


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
    "datetime_type": "an RFC 3339 timestamp",
    "datetime_parsing": "an RFC 3339 timestamp",
    "datetime_from_date_parsing": "an RFC 3339 timestamp",
}


def describe(model: type[BaseModel], error: ErrorDetails) -> str:
    """One pydantic error as a problem message (the field path is reported separately)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "fastmesh":
        return str(ctx["message"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, error["loc"])
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {_shown(got)})"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {_shown(got)})"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s) (got {ctx.get('actual_length', 0)})"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items (got {ctx.get('actual_length')})"
    if kind == "string_too_short":
        return f"must be at least {ctx['min_length']} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long (got {len(str(got))})"
    message = error["msg"]
    return f"{message[:1].lower()}{message[1:]} (got {_shown(got)})"
