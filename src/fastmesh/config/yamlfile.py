"""Reading the multi-document YAML: syntax errors with line and column, duplicate keys refused."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from fastmesh.config.errors import ConfigError, Problem

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let SafeLoader report it
                continue
            if duplicate:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_documents(text: str, source: str) -> list[tuple[int, Any]]:
    """The documents of `text` as (1-based position, value); empty documents are skipped but counted."""
    docs: list[tuple[int, Any]] = []
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_StrictLoader), start=1):
            if doc is not None:
                docs.append((index, doc))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            where = e.context_mark
            started = f" started at line {where.line + 1}, column {where.column + 1}" if where and where != mark else ""
            problem = f"{problem} ({e.context}{started})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError([Problem(source, f"invalid YAML: {problem}", line=line, column=column)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(source, f"invalid YAML: {e}")]) from None
    return docs
