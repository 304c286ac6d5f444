"""The profile-guided build of the engine that `make engine` ships (issue 3, bench/README.md "PGO").

    .venv/bin/python -m bench.pgo -- .venv/bin/maturin develop --release -q -E test,ext

1. llvm-profdata of rustc's own LLVM version: rustup's `llvm-tools` component (installed once per
   toolchain); else Debian's llvm-<major>.
2. The instrumented engine: the maturin command with `-Cprofile-generate` (own cargo target dir).
3. Training: `fastmesh proxy` with that engine in front of the bench's nginx upstream: h2load
   HTTP/1.1 and h2c, a POST with a body, 1 MiB responses, and curl over mTLS to the STRICT listener.
4. `llvm-profdata merge` into $CARGO_TARGET_DIR/pgo-profiles/engine-<sha256>.profdata (the name changes with the
   content, so cargo rebuilds when the profile does).
5. The maturin command again with `-Cprofile-use` (own cargo target dir): the engine installed.

When step 1-5 fails, it says why in a banner and runs the maturin command as given (the plain
release build); `--require` makes that a failure instead. Either way the kind of build made is
written to --record (make: .venv/.engine-build), which `make test` prints.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
# Per mode: (h2load arguments, requests). About 10 s of training on this machine.
LOADS = [
    (["--h1", "-c", "50"], 40000),
    (["-c", "10", "-m", "10"], 40000),
]
TLS_REQUESTS = 30
LARGE_REQUESTS = 20
POST_REQUESTS = 2000


class PgoError(RuntimeError):
    """A step of the profile-guided build failed; the message says which and why."""


def say(msg: str) -> None:
    print(f"==> pgo: {msg}", flush=True)


def run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    try:
        done = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PgoError(f"{' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PgoError(f"{' '.join(argv)} exited {done.returncode}:\n{tail}")
    return done.stdout


# === 1. llvm-profdata ===


def rustc_llvm() -> tuple[str, str]:
    """(LLVM version of rustc, e.g. '22.1.2', host triple)."""
    out = run(["rustc", "-vV"])
    version = re.search(r"^LLVM version: (\S+)", out, re.M)
    host = re.search(r"^host: (\S+)", out, re.M)
    if not version or not host:
        raise PgoError(f"rustc -vV names no LLVM version or host:\n{out}")
    return version.group(1), host.group(1)


def profdata_version(tool: Path) -> str | None:
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    found = re.search(r"LLVM version (\d+[.\d]*)", out)
    return found.group(1) if found else None


def find_profdata(install: bool = True) -> Path:
    """An llvm-profdata whose LLVM major version is rustc's (an older one cannot read the raw
    profiles: their format version moves with LLVM). Not copied to the cache: rustup's links
    against the toolchain's libLLVM; the toolchain (rustup) or the Debian package is its cache,
    keyed by version, and installing it is once per rustc version."""
    version, host = rustc_llvm()
    major = version.split(".")[0]
    sysroot = Path(run(["rustc", "--print", "sysroot"]).strip())
    rustup_tool = sysroot / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
    debian_tool = Path(f"/usr/lib/llvm-{major}/bin/llvm-profdata")
    tried = []
    for tool, fetch in ((rustup_tool, ["rustup", "component", "add", "llvm-tools"]),
                        (debian_tool, [*_sudo(), "apt-get", "install", "-y", "-qq", f"llvm-{major}"])):
        if not tool.exists() and install and shutil.which(fetch[0] if fetch[0] != "sudo" else fetch[1]):
            say(f"{' '.join(fetch)}")
            try:
                run(fetch, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900)
            except PgoError as e:
                tried.append(str(e).splitlines()[0])
        found = profdata_version(tool) if tool.exists() else None
        if found and found.split(".")[0] == major:
            return tool
        tried.append(f"{tool}: {'LLVM ' + found if found else 'missing'}")
    raise PgoError(f"no llvm-profdata of LLVM {major} (rustc's {version}); tried: {'; '.join(tried)}")


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


# === 2./5. the builds ===


def build(maturin: Sequence[str], rustflags: str, target_dir: Path, what: str) -> None:
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    env["RUSTFLAGS"] = " ".join(f for f in (os.environ.get("RUSTFLAGS", ""), rustflags) if f)
    say(f"{what}: RUSTFLAGS='{env['RUSTFLAGS']}' CARGO_TARGET_DIR={target_dir} {' '.join(maturin)}")
    t0 = time.monotonic()
    run(maturin, env=env)
    say(f"{what}: {time.monotonic() - t0:.0f} s")


def installed_engine() -> Path:
    found = sorted((REPO / "src" / "fastmesh").glob("_engine*.so"))
    if not found:
        raise PgoError(f"no engine in {REPO / 'src' / 'fastmesh'} after the build")
    return found[0]


def instrumented(so: Path) -> bool:
    """Whether an engine carries -Cprofile-generate's counters (the ELF section `__llvm_prf_cnts`):
    the instrumented build must, the one installed at the end must not."""
    return b"__llvm_prf_cnts" in so.read_bytes()


# === 3. training ===


def train(profiles: Path, workdir: Path) -> None:
    """Load through `fastmesh proxy` with the instrumented engine; every process that loads the
    engine writes <profiles>/engine-<pid>-<sig>.profraw when it exits."""
    # Imported here: the instrumented build has just installed what they need (PyYAML) in the venv.
    from bench import tls
    from bench.procs import BenchError, Registry
    from bench.targets import LARGE_PATH, Context, EngineBuild, Fastmesh, Upstream, fastmesh_env

    os.environ["LLVM_PROFILE_FILE"] = str(profiles / "engine-%p-%m.profraw")  # ca commands and the proxy
    registry = Registry()
    try:
        pki = tls.make_pki(workdir / "pki", fastmesh_env())
        ctx = Context(workdir, registry, pki=pki)
        Upstream("upstream").start(ctx)
        proxy = Fastmesh(EngineBuild("train"))
        proxy.start(ctx)
        base = f"http://127.0.0.1:{proxy.h1_port}"
        body = workdir / "body.bin"
        body.write_bytes(b"b" * 4096)
        for args, n in LOADS:
            say(f"training: h2load {' '.join(args)} -n {n}")
            out = run(["h2load", *args, "-n", str(n), f"{base}/"], timeout=300)
            _check_h2load(out, n)
        say(f"training: h2load --h1 POST 4 KiB x {POST_REQUESTS}, GET {LARGE_PATH} x {LARGE_REQUESTS}")
        _check_h2load(run(["h2load", "--h1", "-c", "10", "-n", str(POST_REQUESTS), "-d", str(body), f"{base}/"],
                          timeout=300), POST_REQUESTS)
        _check_h2load(run(["h2load", "--h1", "-c", "2", "-n", str(LARGE_REQUESTS), f"{base}{LARGE_PATH}"],
                          timeout=300), LARGE_REQUESTS)
        say(f"training: curl over mTLS x {TLS_REQUESTS}")
        for _ in range(TLS_REQUESTS):
            run(["curl", "-sSf", "-k", "-o", "/dev/null", "--cert", str(pki.client_chain), "--key",
                 str(pki.client_key), f"https://127.0.0.1:{proxy.tls_port}/"], timeout=30)
        proxy.stop(ctx)  # SIGTERM: it drains and exits, and the engine writes its profile on the way out
    except BenchError as e:
        raise PgoError(f"training: {e}") from e
    finally:
        registry.stop_all()
        os.environ.pop("LLVM_PROFILE_FILE", None)


def _check_h2load(out: str, n: int) -> None:
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not done or int(done.group(2)) != n:
        raise PgoError(f"training load: {n} requests wanted, h2load says:\n{out[-800:]}")


# === 4. merge ===


def merge(profdata: Path, profiles: Path, out_dir: Path) -> Path:
    raw = sorted(profiles.glob("*.profraw"))
    if not raw or max(p.stat().st_size for p in raw) == 0:
        raise PgoError(f"training left no raw profile in {profiles}")
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = out_dir / "merged.profdata"
    run([str(profdata), "merge", "-o", str(merged), *map(str, raw)])
    digest = hashlib.sha256(merged.read_bytes()).hexdigest()[:16]
    for old in out_dir.glob("engine-*.profdata"):  # earlier builds' profiles
        old.unlink()
    out = merged.rename(out_dir / f"engine-{digest}.profdata")
    say(f"merged {len(raw)} raw profile(s), {sum(p.stat().st_size for p in raw) >> 10} KiB -> {out}")
    return out


# === the whole ===


def pgo_build(maturin: Sequence[str], target_dir: Path, install: bool = True, keep: bool = False) -> str:
    """Steps 1-5; returns what was built."""
    t0 = time.monotonic()
    profdata = find_profdata(install)
    say(f"llvm-profdata: {profdata} (LLVM {profdata_version(profdata)})")
    workdir = Path(tempfile.mkdtemp(prefix="fastmesh-pgo-"))
    workdir.chmod(0o755)  # nginx workers (nobody) read the 1 MiB file from it
    # A fixed path: it is in RUSTFLAGS, so the next instrumented build reuses the compiled crates.
    # Beside the builds' own target dirs (one per checkout here), not in the shared cache.
    profiles = target_dir / "pgo-raw"
    try:
        build(maturin, f"-Cprofile-generate={profiles}", target_dir / "pgo-generate", "instrumented build")
        if not instrumented(installed_engine()):
            raise PgoError(f"the instrumented build installed {installed_engine()} without profile counters "
                           "(RUSTFLAGS overridden by a cargo config?)")
        shutil.rmtree(profiles, ignore_errors=True)  # build scripts ran instrumented too
        profiles.mkdir(parents=True)
        train(profiles, workdir)
        profile = merge(profdata, profiles, target_dir / "pgo-profiles")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    build(maturin, f"-Cprofile-use={profile}", target_dir / "pgo-use", "optimised build")
    if instrumented(installed_engine()):
        raise PgoError(f"the optimised build left an instrumented engine: {installed_engine()}")
    return f"pgo {profile.name} ({time.monotonic() - t0:.0f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("FASTMESH_CACHE", Path.home() / ".cache/fastmesh")))
    p.add_argument("--record", type=Path, help="file to write the kind of build made to")
    p.add_argument("--require", action="store_true", help="fail instead of falling back to the plain build")
    p.add_argument("--no-install", action="store_true", help="do not install llvm-profdata (rustup, apt-get)")
    p.add_argument("--keep", action="store_true", help="keep the training directory (configs, logs)")
    p.add_argument("maturin", nargs="+", help="the maturin command of the plain release build")
    args = p.parse_args(argv)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", args.cache / "cargo-target"))
    if args.record:  # a build that fails half-way (an instrumented engine installed) is recorded as none
        args.record.unlink(missing_ok=True)
    try:
        made = pgo_build(args.maturin, target_dir, not args.no_install, args.keep)
    except Exception as e:  # whatever broke (a tool, the training load), the plain build is made
        why = str(e) if isinstance(e, PgoError) else f"{type(e).__name__}: {e}"
        then = "failing (--require)" if args.require else "building the plain release engine instead"
        banner = "=" * 78
        print(f"{banner}\n==> pgo: PROFILE-GUIDED BUILD FAILED, {then}\n{why}\n{banner}", flush=True)
        if args.require:
            return 1
        try:
            run(args.maturin)
        except PgoError as plain:
            print(f"==> pgo: the plain build failed too: {plain}", flush=True)
            return 1
        made = f"release (plain: the profile-guided build failed: {why.splitlines()[0]})"
    say(f"engine built: {made}")
    if args.record:
        args.record.write_text(made + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
