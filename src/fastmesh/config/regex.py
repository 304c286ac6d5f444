"""Regular expressions in matches: checked here so a bad one fails `validate`, not the engine's apply.

The engine compiles them with the Rust `regex` crate, which guarantees linear-time matching and so
has no look-around, backreferences, atomic groups or conditionals. Python's `re` checks the syntax
(after translating what only Rust spells: `\\z`, `\\p{...}`), and a scan refuses what Python accepts
but Rust does not.
"""

from __future__ import annotations

import re
import warnings

_GROUPS = {
    "=": "look-ahead (?=...)",
    "!": "look-ahead (?!...)",
    "<=": "look-behind (?<=...)",
    "<!": "look-behind (?<!...)",
    "P=": "backreference (?P=name)",
    ">": "atomic group (?>...)",
    "(": "conditional group (?(...)...)",
    "#": "comment group (?#...)",
}
_RUST_FLAGS = set("imsUux-")
_UNICODE_CLASS = re.compile(r"[pP](?:\{[^}]*\}|[A-Za-z])")


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used in a match, or None."""
    python_pattern, construct = _scan(pattern)
    if construct:
        return (
            f"invalid regular expression: {construct} is not supported by the engine's regex syntax"
            f" (Rust regex crate: no look-around or backreferences) (got {pattern!r})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": fine for Rust
            re.compile(python_pattern)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        return f"invalid regular expression: {e.msg}{where} (got {pattern!r})"
    return None


def _scan(pattern: str) -> tuple[str, str | None]:
    """(the pattern as Python spells it, the first construct the Rust crate lacks or None)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt.isdigit():
                return pattern, f"backreference or octal escape \\{nxt}"
            if nxt == "Z":
                return pattern, "\\Z (use \\z, or nothing: patterns match the whole value)"
            if nxt == "N":
                return pattern, "\\N{...}"
            if nxt == "z":
                out.append(r"\Z")
                i += 2
                continue
            unicode_class = _UNICODE_CLASS.match(pattern, i + 1)
            if unicode_class:
                out.append("x")  # any single character stands in for the class
                i = unicode_class.end()
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            start = i
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":  # a leading ']' is literal
                i += 1
            out.append(pattern[start:i])
            in_class = True
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 :]
            for prefix, construct in _GROUPS.items():
                if rest.startswith(prefix):
                    return pattern, construct
            flags = re.match(r"([a-zA-Z-]*)[:)]", rest)  # (?flags) or (?flags:...)
            bad = set(flags.group(1)) - _RUST_FLAGS if flags else set()
            if bad:
                return pattern, f"inline flag {''.join(sorted(bad))!r}"
        if c == "{" and re.match(r"\{,\d+\}", pattern[i:]):
            return pattern, "repetition {,n} (write {0,n})"
        out.append(c)
        i += 1
    return "".join(out), None
