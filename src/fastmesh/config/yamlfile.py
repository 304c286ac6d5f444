"""Reading the multi-document YAML: syntax errors with line and column, duplicate keys refused.

libyaml (PyYAML's C parser, in its wheels) parses, and a lean constructor builds the plain
mappings, sequences and strings configs are made of: a 10,000-route file reads in a fraction of a
second instead of seconds. When the text is not valid YAML it is parsed again with the pure-Python
loader, whose messages (and marks) are the ones users see, so errors read the same either way.
"""

from __future__ import annotations

import inspect
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fastmesh.config.errors import ConfigError, Problem

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
# Scalar tags whose constructor returns the value at once (the others are generators or recurse).
_SCALAR_CONSTRUCTORS = {
    tag: constructor
    for tag, constructor in SafeConstructor.yaml_constructors.items()
    if tag is not None and not inspect.isgeneratorfunction(constructor) and tag not in (_MAP_TAG, _SEQ_TAG)
}


def _duplicate_key(node: Node, key: Any, key_node: Node) -> ConstructorError:
    return ConstructorError(
        "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
    )


class _StrictConstructor:
    """SafeConstructor that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let SafeLoader report it
                continue
            if duplicate:
                raise _duplicate_key(node, key, key_node)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc, no-any-return]


class _StrictLoader(_StrictConstructor, yaml.SafeLoader):
    """The pure-Python loader: the reference for what is accepted, and for error messages."""


class _Fallback(Exception):
    """The document uses something the lean constructor leaves to PyYAML's (merge keys, tags, cycles)."""


if yaml.__with_libyaml__:

    class _FastLoader(_StrictConstructor, yaml.CSafeLoader):
        """libyaml parser; plain trees built directly, anything else by the standard constructor."""

        def construct_document(self, node: Node) -> Any:
            try:
                return self._build(node, set())
            except _Fallback:
                return super().construct_document(node)

        def _build(self, node: Node, building: set[int]) -> Any:
            cls = node.__class__
            if cls is ScalarNode:
                if node.tag == _STR_TAG:
                    return node.value
                constructor = _SCALAR_CONSTRUCTORS.get(node.tag)
                if constructor is None:
                    raise _Fallback
                return constructor(self, node)
            if id(node) in building:  # an alias of a node that contains it
                raise _Fallback
            if cls is SequenceNode and node.tag == _SEQ_TAG:
                building.add(id(node))
                items = [self._build(item, building) for item in node.value]
                building.discard(id(node))
                return items
            if cls is MappingNode and node.tag == _MAP_TAG:
                building.add(id(node))
                mapping: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == _MERGE_TAG:
                        raise _Fallback
                    key = self._build(key_node, building)
                    try:
                        duplicate = key in mapping
                    except TypeError:  # unhashable key: PyYAML's message
                        raise _Fallback from None
                    if duplicate:
                        raise _duplicate_key(node, key, key_node)
                    mapping[key] = self._build(value_node, building)
                building.discard(id(node))
                return mapping
            raise _Fallback

    _LOADER: type[yaml.SafeLoader] = _FastLoader  # type: ignore[assignment]
else:  # pragma: no cover - PyYAML built without libyaml
    _LOADER = _StrictLoader


def _load_all(text: str, loader: type[yaml.SafeLoader]) -> list[tuple[int, Any]]:
    docs: list[tuple[int, Any]] = []
    for index, doc in enumerate(yaml.load_all(text, Loader=loader), start=1):
        if doc is not None:
            docs.append((index, doc))
    return docs


def read_documents(text: str, source: str) -> list[tuple[int, Any]]:
    """The documents of `text` as (1-based position, value); empty documents are skipped but counted."""
    if _LOADER is not _StrictLoader:
        try:
            return _load_all(text, _LOADER)
        except yaml.YAMLError:
            pass  # the pure-Python loader below words the problem, as users have always read it
    try:
        return _load_all(text, _StrictLoader)
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
