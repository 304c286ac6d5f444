"""Regexes: Python `re` syntax errors and the constructs the engine's Rust regex crate lacks."""

from __future__ import annotations

import pytest

from fastmesh.config.regex import regex_problem

# Shared with test_engine_accepts.py, which checks the engine agrees.
ACCEPTED = [
    r"/api/v[0-9]+/.*", r"(?i)/API", r"[^/]+\.(png|jpe?g)", r"a{2,3}?", r"\d+", r"[(?=]x", r"(?P<id>[0-9]+)",
    r"\\1", r"a*?b+?", r"(?:x|y)", r"(?x) a b", r"\pL+", r"\p{Greek}", r"[\pL\d]", r"abc\z", r"\x41", r"[]a]",
]
REJECTED = [
    (r"/(?=api)", "look-ahead (?=...)"),
    (r"/(?!admin)", "look-ahead (?!...)"),
    (r"(?<=a)b", "look-behind (?<=...)"),
    (r"(?<!a)b", "look-behind (?<!...)"),
    (r"(a)\1", "backreference or octal escape \\1"),
    (r"[\1]", "backreference or octal escape \\1"),
    (r"\0", "backreference or octal escape \\0"),
    (r"(?P<x>a)(?P=x)", "backreference (?P=name)"),
    (r"(?>ab)", "atomic group"),
    (r"(a)?(?(1)b|c)", "conditional group"),
    (r"(?#note)a", "comment group"),
    (r"(?a)\w", "inline flag 'a'"),
    (r"abc\Z", "\\Z"),
    (r"\N{DIGIT ONE}", "\\N"),
    (r"a{,3}", "repetition {,n}"),
]


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None


@pytest.mark.parametrize(("pattern", "construct"), REJECTED)
def test_rust_unsupported(pattern: str, construct: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and construct in problem and "not supported by the engine" in problem


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("[a-", "unterminated character set at position 0"), ("(ab", "missing ), unterminated subpattern at position 0"),
     ("a**", "multiple repeat at position 2"), (r"\q", "bad escape \\q at position 0")],
)
def test_python_syntax_error(pattern: str, message: str) -> None:
    assert regex_problem(pattern) == f"invalid regular expression: {message} (got {pattern!r})"
