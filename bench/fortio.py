"""fortio, the fixed-rate load generator of the rate scenarios: built from the Go module proxy with
`go install`, once per version, into a cache outside the clone (~/.cache/fastmesh/fortio-<version>/).
`ensure_go_tool` builds other Go tools the same way (h2spec, `bench/h2spec.py`).

v1.68.2 is the newest fortio whose dependencies the module proxy serves here: from v1.69 on it
needs grol.io/grol, and fetching that module's zip is refused (403).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

VERSION = "v1.68.2"
MODULE = "fortio.org/fortio"
CACHE = Path(os.environ.get("FASTMESH_CACHE", Path.home() / ".cache" / "fastmesh"))
BUILD_TIMEOUT_S = 1200  # a first build downloads and compiles grpc and protobuf: minutes on 2 cores


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def binary(version: str = VERSION, cache: Path = CACHE) -> Path:
    return cache / f"fortio-{version}" / "fortio"


def ensure_fortio(install: bool, version: str = VERSION, cache: Path = CACHE) -> tuple[Path | None, str]:
    """(path of fortio, "") when it is there or was just built; (None, why) when it cannot be had."""
    return ensure_go_tool("fortio", MODULE, version, install, binary(version, cache))


def ensure_go_tool(name: str, package: str, version: str, install: bool, path: Path) -> tuple[Path | None, str]:
    """`go install package@version` into `path`'s folder (a cache outside the clone, built once):
    (path, "") when it is there or was just built; (None, why) when it cannot be had."""
    if path.is_file() and os.access(path, os.X_OK):
        return path, ""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")  # Go's own tarball
    if go is None:
        return None, f"go is not installed ({name} is built with `go install`)"
    if not install:
        return None, f"{path} is not built (--no-install)"
    _say(f"building {name} {version} with `go install {package}@{version}` into {path.parent} "
         "(once per version; the first build takes a few minutes)")
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{path.parent.name}.", dir=path.parent.parent))
    env = dict(os.environ, GOBIN=str(staging), GOFLAGS="-buildvcs=false")
    try:
        done = _run_with_progress([go, "install", "-v", f"{package}@{version}"], env, staging)
        if done != 0 or not (staging / path.name).is_file():
            return None, f"`go install {package}@{version}` failed (exit {done}; its output is above)"
        if path.parent.exists():
            shutil.rmtree(path.parent)
        staging.rename(path.parent)  # whole or not at all: an interrupted build leaves no binary
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path, ""


def _run_with_progress(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run the build, echoing its output as it comes: `go: downloading` per module and, with -v,
    each package as it is compiled (a first build takes minutes). Killed after BUILD_TIMEOUT_S."""
    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        watchdog = threading.Timer(BUILD_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for n, line in enumerate(proc.stdout, 1):
                print(f"    [{n}] {line.rstrip()}", flush=True)
            return proc.wait()
        finally:
            watchdog.cancel()


def main() -> int:
    """`python -m bench.fortio` (make bench): build fortio unless the cache has it; prints its path."""
    path, why = ensure_fortio(install=True)
    if path is None:
        print(f"==> fortio unavailable: {why}; bench/run.py falls back to h2load --rps for the rate scenarios",
              flush=True)
        return 0  # not fatal: the benchmark runs without it and says so in its report
    print(f"==> fortio: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
