"""Two engine builds in one benchmark run (bench/run.py --fastmesh-engine): each is its own target,
runs its own copy of its engine with its own environment, and the report gives its CPU/req over
the first build's within each round.

The last two tests start real `python -m fastmesh proxy` processes and a real nginx upstream on
loopback and send real load (h2load)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run
from bench.procs import Registry
from bench.report import Sample, build, tables
from bench.scenarios import select
from bench.targets import REPO, Context, EngineBuild, Fastmesh, Upstream, fastmesh_available, parse_engine_build


def built_engine() -> Path:
    if why := fastmesh_available():
        pytest.fail(f"the engine is not built: {why}")
    return next((REPO / "src" / "fastmesh").glob("_engine*.so"))


# === parsing ===


def test_engine_spec_label_path_and_environment(tmp_path: Path):
    so = tmp_path / "a.so"
    so.write_bytes(b"")
    e = parse_engine_build(f"pgo={so},MIMALLOC_PURGE_DELAY=0,X=a=b")
    assert (e.label, e.path, e.env, e.target) == ("pgo", so, {"MIMALLOC_PURGE_DELAY": "0", "X": "a=b"}, "fastmesh-pgo")
    assert parse_engine_build("plain=built") == EngineBuild("plain", None, {})
    assert parse_engine_build("plain=").path is None


@pytest.mark.parametrize("spec, says", [
    ("nolabel", "expected LABEL=PATH"),
    ("=built", "expected LABEL=PATH"),
    ("a b=built", "expected LABEL=PATH"),
    ("a=/nonexistent/_engine.so", "is not a file"),
    ("a=built,NOVALUE", "'NOVALUE' is not NAME=VALUE"),
])
def test_bad_engine_spec_is_refused_with_the_reason(spec: str, says: str):
    with pytest.raises(ValueError, match=says):
        parse_engine_build(spec)


def test_engine_builds_take_the_place_of_fastmesh_and_leave_the_readme_alone(capsys: pytest.CaptureFixture[str]):
    args = run.parse_args(["--fastmesh-engine", "a=built", "--fastmesh-engine", "b=built"])
    assert run.target_names(args.targets, args.engines) == ["direct", "nginx", "haproxy", "fastmesh-a", "fastmesh-b"]
    assert args.update_readme is False and args.name == "engines"
    assert run.target_names("nginx,fastmesh", []) == ["nginx", "fastmesh"]
    with pytest.raises(SystemExit):
        run.parse_args(["--fastmesh-engine", "a=built", "--fastmesh-engine", "a=built"])
    assert "every build needs its own LABEL" in capsys.readouterr().err


# === the report ===


def _sample(target: str, rnd: int, user: float, system: float, requests: int = 1000) -> Sample:
    return Sample(scenario="h1", target=target, round=rnd, requests=requests, duration_s=1.0, rps=float(requests),
                  errors=0, latency_ms={"p50": 0.1, "p99": 0.5}, cpu_user_us=user * requests,
                  cpu_sys_us=system * requests, upstream_cpu_us=0.0, peak_rss_kb=1024)


def test_ratio_to_the_first_build_is_taken_within_each_round():
    # Round 2 ran on a busier machine: both builds slower, their ratio the same.
    samples = [_sample("fastmesh-plain", 0, 4.0, 12.0), _sample("fastmesh-pgo", 0, 3.0, 12.0),
               _sample("fastmesh-plain", 1, 8.0, 24.0), _sample("fastmesh-pgo", 1, 6.4, 24.0),
               _sample("fastmesh-plain", 2, 4.0, 12.0), _sample("fastmesh-pgo", 2, 3.2, 11.2)]
    info = {"engines": [{"target": "fastmesh-plain"}, {"target": "fastmesh-pgo"}]}
    result = build(info, select("h1"), ["fastmesh-plain", "fastmesh-pgo"], samples, [], {})
    plain, pgo = result["scenarios"][0]["rows"]
    assert plain["x_reference_rounds"] == [1.0, 1.0, 1.0]
    assert pgo["x_reference_rounds"] == pytest.approx([15 / 16, 30.4 / 32, 14.4 / 16])
    assert pgo["x_reference"] == pytest.approx(15 / 16)
    assert pgo["x_reference_user"] == pytest.approx(0.8)  # rounds: 0.75, 0.8, 0.8
    table = tables(result)
    assert "× fastmesh-plain CPU (rounds min–max)" in table
    assert "| 0.938 (0.900–0.950) | 0.800 |" in table


def test_without_engine_builds_there_is_no_reference_column():
    samples = [_sample("nginx", 0, 3.0, 12.0), _sample("fastmesh", 0, 4.0, 12.0)]
    result = build({}, select("h1"), ["nginx", "fastmesh"], samples, [], {})
    assert "x_reference" not in result["scenarios"][0]["rows"][1]
    assert "rounds min–max" not in tables(result)


# === real processes ===


def test_each_build_runs_its_own_engine_copy_with_its_environment(tmp_path: Path):
    engine = built_engine()
    other = tmp_path / "other" / "_engine.abi3.so"
    other.parent.mkdir()
    shutil.copyfile(engine, other)
    tmp_path.chmod(0o755)
    registry = Registry()
    try:
        ctx = Context(tmp_path, registry)
        Upstream("upstream").start(ctx)
        a = Fastmesh(EngineBuild("a", None, {"MIMALLOC_PURGE_DELAY": "0"}))
        b = Fastmesh(EngineBuild("b", other, {}))
        for t in (a, b):
            t.start(ctx)
        for t, env_has in ((a, True), (b, False)):
            assert t.proc is not None
            maps = Path(f"/proc/{t.proc.pid}/maps").read_text()
            assert f"{tmp_path}/engine-{t.build.label}/fastmesh/_engine.abi3.so" in maps  # type: ignore[union-attr]
            assert str(engine) not in maps and str(other) not in maps
            environ = Path(f"/proc/{t.proc.pid}/environ").read_bytes().split(b"\0")
            assert (b"MIMALLOC_PURGE_DELAY=0" in environ) is env_has
            out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{t.h1_port}/"], capture_output=True, text=True,
                                 timeout=30)
            assert out.stdout == "hello world\n"
    finally:
        registry.stop_all()


def test_a_short_run_reports_both_builds_and_their_ratio(tmp_path: Path):
    built_engine()
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--scenarios", "h1", "--targets", "fastmesh", "--syscalls", "off",
         "--no-install", "--duration", "1", "--warmup", "0.3", "--rounds", "2", "--results-dir", str(tmp_path),
         "--fastmesh-engine", "plain=built", "--fastmesh-engine", "purge0=built,MIMALLOC_PURGE_DELAY=0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(next(tmp_path.glob("*-engines.json")).read_text())
    assert result["info"]["engines"][1] == {"target": "fastmesh-purge0", "path": "built",
                                            "env": {"MIMALLOC_PURGE_DELAY": "0"}}
    rows = {r["target"]: r for r in result["scenarios"][0]["rows"]}
    assert set(rows) == {"fastmesh-plain", "fastmesh-purge0"}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows.values())
    assert len(rows["fastmesh-purge0"]["x_reference_rounds"]) == 2
    assert "× fastmesh-plain CPU (rounds min–max)" in done.stdout
