"""h2spec, the HTTP/2 conformance suite (RFC 7540/9113 and HPACK) run against the proxy by
tests/engine/test_h2spec.py: built with `go install` from the Go module proxy, once per version,
into ~/.cache/fastmesh/h2spec-<version>/ (as fortio). The module proxy serves v2.2.1+incompatible
(the v2.6.0 tag's module is refused: 403); `h2spec --version` prints 2.0.0 for it.
`python -m bench.h2spec` builds it (make h2spec) and prints its path."""

from __future__ import annotations

from pathlib import Path

from bench.fortio import CACHE, ensure_go_tool

VERSION = "v2.2.1+incompatible"
PACKAGE = "github.com/summerwind/h2spec/cmd/h2spec"


def binary(version: str = VERSION, cache: Path = CACHE) -> Path:
    return cache / f"h2spec-{version.split('+')[0]}" / "h2spec"


def ensure_h2spec(install: bool = True, version: str = VERSION, cache: Path = CACHE) -> tuple[Path | None, str]:
    """(path of h2spec, "") when it is there or was just built; (None, why) when it cannot be had."""
    return ensure_go_tool("h2spec", PACKAGE, version, install, binary(version, cache))


def main() -> int:
    path, why = ensure_h2spec()
    print(f"==> h2spec: {path}" if path else f"==> h2spec unavailable: {why}", flush=True)
    return 0 if path else 1


if __name__ == "__main__":
    raise SystemExit(main())
