"""bench/pgo.py, `make engine`'s profile-guided build: when a step cannot be done it says so and
makes the plain release build, never a silent other one; --require makes that a failure.

The toolchain is faked here (a `rustc` on PATH naming an LLVM no llvm-profdata matches, a
`maturin` command that records its environment): the real build is `make engine`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import pgo

REPO = Path(__file__).resolve().parents[2]


def fake_toolchain(tmp_path: Path, llvm: str) -> dict[str, str]:
    """PATH with a `rustc` reporting LLVM `llvm` and a sysroot without llvm-tools, and no rustup."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rustc = bin_dir / "rustc"
    rustc.write_text(f"""#!/bin/sh
case "$*" in
  -vV) printf 'rustc 9.99.0\\nhost: x86_64-unknown-linux-gnu\\nLLVM version: {llvm}\\n' ;;
  "--print sysroot") echo {tmp_path}/sysroot ;;
esac
""")
    rustc.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")


def maturin_recorder(tmp_path: Path) -> list[str]:
    """A stand-in for the maturin command: appends its RUSTFLAGS to calls.jsonl."""
    script = tmp_path / "maturin.py"
    script.write_text("import json, os, sys\n"
                      f"open({str(tmp_path / 'calls.jsonl')!r}, 'a').write(json.dumps(os.environ.get('RUSTFLAGS', '')) + '\\n')\n")
    return [sys.executable, str(script)]


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_pgo(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.pgo", "--no-install", "--record", str(tmp_path / "built"), *extra, "--",
                           *maturin_recorder(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_without_a_matching_llvm_profdata_the_plain_build_is_made_and_said(tmp_path: Path):
    done = run_pgo(tmp_path, fake_toolchain(tmp_path, "99.0.1"))
    assert done.returncode == 0, done.stderr
    assert "PROFILE-GUIDED BUILD FAILED, building the plain release engine instead" in done.stdout
    assert "no llvm-profdata of LLVM 99 (rustc's 99.0.1)" in done.stdout
    assert calls(tmp_path) == [os.environ.get("RUSTFLAGS", "")]  # once, without -Cprofile-*
    assert (tmp_path / "built").read_text().startswith("release (plain: the profile-guided build failed: no llvm-profdata")


def test_require_fails_instead_of_falling_back(tmp_path: Path):
    (tmp_path / "built").write_text("pgo engine-0123.profdata\n")  # an earlier build's record
    done = run_pgo(tmp_path, fake_toolchain(tmp_path, "99.0.1"), "--require")
    assert done.returncode == 1
    assert "PROFILE-GUIDED BUILD FAILED, failing (--require)" in done.stdout
    assert "no llvm-profdata of LLVM 99" in done.stdout
    assert calls(tmp_path) == [] and not (tmp_path / "built").exists()


def test_llvm_profdata_of_another_major_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Debian's llvm-14 (on PATH here as /usr/bin/llvm-profdata) cannot read LLVM 22's raw profiles:
    only rustc's own major version is taken."""
    tool = tmp_path / "sysroot" / "lib" / "rustlib" / "x86_64-unknown-linux-gnu" / "bin" / "llvm-profdata"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho 'LLVM (http://llvm.org/):'; echo '  LLVM version 21.1.0'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", fake_toolchain(tmp_path, "22.1.2")["PATH"])
    with pytest.raises(pgo.PgoError, match=r"llvm-profdata: LLVM 21\.1\.0"):
        pgo.find_profdata(install=False)
    tool.write_text("#!/bin/sh\necho '  LLVM version 22.1.8'\n")
    assert pgo.find_profdata(install=False) == tool


def test_the_installed_engine_carries_no_profile_counters():
    """The engine `make engine` installed (what `make test` runs): the optimised build, not the
    instrumented one (which writes a .profraw at every exit and runs slower)."""
    engine = pgo.installed_engine()
    sections = subprocess.run(["readelf", "-S", "-W", str(engine)], capture_output=True, text=True, check=True).stdout
    assert ".text" in sections and "__llvm_prf_cnts" not in sections
    assert not pgo.instrumented(engine)


def test_counters_are_found_in_an_instrumented_engine(tmp_path: Path):
    """`instrumented` on a copy of the installed engine with the section name of -Cprofile-generate's
    counters written into its bytes (an instrumented build takes minutes; bench/README.md
    "Build levers" shows `readelf -S` of a real one: __llvm_prf_cnts, _data, _names, _vals, _vnds)."""
    fake = tmp_path / "_engine.abi3.so"
    fake.write_bytes(pgo.installed_engine().read_bytes() + b"\0__llvm_prf_cnts\0")
    assert pgo.instrumented(fake)
