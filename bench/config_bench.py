#!/usr/bin/env python3
"""The Python side of fastmesh: config compile time by route count, and idle RSS of `fastmesh proxy`.

    .venv/bin/python bench/config_bench.py                         # everything below (~1 min)
    .venv/bin/python bench/config_bench.py --sizes 1000 --rounds 1 --no-rss
    .venv/bin/python bench/config_bench.py --profile mesh:10000     # cProfile of one load + compile

Compile: generated configs go through the phases of `load_text` + `compile_snapshot` one after the
other (YAML, schema, checks, compile), then the JSON the engine is handed; each phase is timed with
`perf_counter`, the median over `--rounds` is reported. Variants (N = size):
- `mesh`: N Services, each with an EndpointSlice and an HTTPRoute attached to it (GAMMA), 2 rules;
- `hosts`: N HTTPRoutes with one hostname each (N virtual hosts), one Service behind them;
- `star`: N HTTPRoutes without hostnames, prefix `/r<i>` (all on the `*` vhost: bench `routes10k`).

Idle RSS: `python -m fastmesh proxy` with port-0 overrides on the demo config (examples/demo.yaml),
the bench config (bench/targets.py) and the bench config with 1,000 and 10,000 extra routes; after
the `ready` event and a settle time, VmRSS (and its anonymous/file split, PSS) summed over the
process tree, then again after one scrape of /metrics and /config. "ready after" is the time from
start to the `ready` event, which includes the config compiler's own process (fastmesh.compiler).
Writes bench/results/<date>-config-compile.md (or --out) and prints it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import json
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench import machine  # noqa: E402
from bench.procs import LOOPBACK, Proc, Registry, process_tree, read_proc  # noqa: E402
from bench.targets import fastmesh_config  # noqa: E402
from fastmesh.config import compile_snapshot, load_text  # noqa: E402
from fastmesh.config.gcpause import paused_gc  # noqa: E402
from fastmesh.config.loader import check_parsed, parse_documents  # noqa: E402
from fastmesh.config.yamlfile import read_documents  # noqa: E402

RESULTS = REPO / "bench" / "results"
PHASES = ("yaml", "schema", "checks", "compile", "json")
VARIANTS = ("mesh", "hosts", "star")
TARGETS_MB = {"demo": 30, "bench + 1000 routes": 40}  # issue 3
SETTLE_S = 1.0
UNUSED_PORT = 9  # the upstream of the bench config: nothing needs to listen for an idle proxy

# === generated configs ===

_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
  - addresses: ["10.{a}.{b}.1", "10.{a}.{b}.2"]
    conditions: {{ready: true}}
---
"""

_MESH_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {name}, port: 8080}}]
  rules:
    - matches:
        - path: {{type: PathPrefix, value: /api}}
          headers: [{{name: x-canary, value: "true"}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{set: [{{name: x-route, value: {name}}}]}}
      backendRefs: [{{name: {name}, port: 8080, weight: 90}}]
    - backendRefs: [{{name: {name}, port: 8080}}]
---
"""

_LISTENER_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}}}
spec:
  {hostnames}rules:
    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
      backendRefs: [{{name: web, port: 8080}}]
---
"""


def generate(variant: str, n: int) -> str:
    """A config of `n` routes of the variant (see the module docstring)."""
    out = io.StringIO()
    if variant == "mesh":
        for i in range(n):
            ns = f"ns{i % 10}"
            out.write(_SERVICE.format(name=f"svc-{i}", ns=ns, a=i // 256 % 256, b=i % 256))
            out.write(_MESH_ROUTE.format(name=f"svc-{i}", ns=ns))
        return out.getvalue()
    out.write(_SERVICE.format(name="web", ns="default", a=0, b=1))
    for i in range(n):
        if variant == "hosts":
            out.write(_LISTENER_ROUTE.format(i=i, hostnames=f"hostnames: [h{i}.example.com]\n  ", path="/"))
        elif variant == "star":
            out.write(_LISTENER_ROUTE.format(i=i, hostnames="", path=f"/r{i}"))
        else:
            raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    return out.getvalue()


# === compile time ===


def run_phases(text: str) -> dict[str, float]:
    """Seconds per phase of one load + compile, the phases `load_text` runs (under its GC pause)."""
    with paused_gc():
        t0 = time.perf_counter()
        raw = read_documents(text, "<bench>")
        t1 = time.perf_counter()
        parsed = parse_documents(raw, "<bench>")
        t2 = time.perf_counter()
        cfg = check_parsed(parsed)
        t3 = time.perf_counter()
    snapshot = compile_snapshot(cfg)
    t4 = time.perf_counter()
    json.dumps({"version": 1, **snapshot}, separators=(",", ":"))
    t5 = time.perf_counter()
    return dict(zip(PHASES, [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4], strict=True))


def run_public(text: str) -> float:
    """Seconds of `load_text` + `compile_snapshot` + the JSON for the engine: what the runtime does."""
    t0 = time.perf_counter()
    snapshot = compile_snapshot(load_text(text, "<bench>"))
    json.dumps({"version": 1, **snapshot}, separators=(",", ":"))
    return time.perf_counter() - t0


@dataclass
class CompileRow:
    variant: str
    size: int
    documents: int
    yaml_bytes: int
    phases: dict[str, float]  # median seconds
    total: float  # median seconds of load_text + compile_snapshot + json.dumps, through the public API


def measure_compile(variant: str, size: int, rounds: int) -> CompileRow:
    text = generate(variant, size)
    samples: list[dict[str, float]] = []
    totals: list[float] = []
    for _ in range(rounds):
        gc.collect()
        samples.append(run_phases(text))
        gc.collect()
        totals.append(run_public(text))
    phases = {p: statistics.median(s[p] for s in samples) for p in PHASES}
    total = statistics.median(totals)
    return CompileRow(variant, size, text.count("\n---\n"), len(text.encode()), phases, total)


def profile(variant: str, size: int, top: int = 30) -> str:
    text = generate(variant, size)
    prof = cProfile.Profile()
    prof.runcall(run_phases, text)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    out.write("\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# === idle RSS ===


@dataclass
class RssRow:
    name: str
    ready_s: float
    rss_kb: int
    anon_kb: int
    file_kb: int
    pss_kb: int
    threads: int
    scraped_rss_kb: int  # after one /metrics and one /config request


def _status_kb(text: str, name: str) -> int:
    m = re.search(rf"^{name}:\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()


def measure_rss(name: str, config_text: str, workdir: Path, registry: Registry) -> RssRow:
    conf = workdir / f"{name.replace(' ', '-').replace('+', 'plus')}.yaml"
    conf.write_text(config_text)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "fastmesh", "proxy", "--config", str(conf),
            "--admin-address", f"{LOOPBACK}:0", "--listener", f"outbound={LOOPBACK}:0"]
    started = time.monotonic()
    proc = registry.add(Proc(name, argv, workdir / f"{conf.stem}.log", env=env, cwd=REPO))
    try:
        ready = proc.wait_event("ready", timeout=120)
        ready_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        pids = process_tree(proc.pid)
        statuses = read_proc(pids, lambda t: t, "status")
        rollups = read_proc(pids, lambda t: t, "smaps_rollup")
        row = RssRow(
            name, ready_s,
            rss_kb=sum(_status_kb(s, "VmRSS") for s in statuses),
            anon_kb=sum(_status_kb(s, "RssAnon") for s in statuses),
            file_kb=sum(_status_kb(s, "RssFile") + _status_kb(s, "RssShmem") for s in statuses),
            pss_kb=sum(_status_kb(r, "Pss") for r in rollups),
            threads=sum(_status_kb(s, "Threads") for s in statuses),
            scraped_rss_kb=0,
        )
        admin = f"http://{ready['admin']}"
        _get(f"{admin}/metrics")
        _get(f"{admin}/config")
        time.sleep(0.2)
        row.scraped_rss_kb = sum(_status_kb(s, "VmRSS") for s in read_proc(process_tree(proc.pid), lambda t: t,
                                                                            "status"))
        return row
    finally:
        registry.stop(proc)


def demo_config(workdir: Path) -> str:
    """The demo's client sidecar (examples/demo.yaml: mTLS, identity), with its CA made in `workdir`."""
    from fastmesh.ca import CA
    from fastmesh.demo import CLIENT_FILE, plan

    demo = plan(REPO / "examples", workdir)
    CA.init(demo.client.ca_dir, demo.client.trust_domain)
    return (REPO / "examples" / CLIENT_FILE).read_text()


# === report ===


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if seconds >= 0.1 else f"{seconds * 1000:,.1f}"


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def render(rows: Sequence[CompileRow], rss: Sequence[RssRow], argv: Sequence[str]) -> str:
    info = {**machine.machine(), **machine.versions()}
    lines = [
        f"# Config compile time and idle RSS — {datetime.date.today().isoformat()}",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/config_bench.py', *argv])}`  ",
        f"commit {info.get('commit') or '?'}, Python {info['python']}, {info['cpu']} ({info['nproc']} CPUs), "
        f"{info['os']}, load average {os.getloadavg()[0]:.2f}",
        "",
    ]
    if rows:
        lines += [
            "## Load + compile (ms, median)",
            "",
            "| variant | routes | documents | YAML KiB | " + " | ".join(PHASES) + " | **total** | µs/route |",
            "|---|---:|---:|---:|" + "---:|" * len(PHASES) + "---:|---:|",
        ]
        for r in rows:
            cells = " | ".join(_ms(r.phases[p]) for p in PHASES)
            lines.append(f"| {r.variant} | {r.size:,} | {r.documents:,} | {r.yaml_bytes / 1024:,.0f} | {cells} | "
                         f"**{_ms(r.total)}** | {r.total / r.size * 1e6:,.0f} |")
        lines += [
            "",
            "Phases (one instrumented run each): `yaml` read_documents, `schema` pydantic models, `checks` "
            "cross-document checks, `compile` compile_snapshot, `json` the string handed to the engine. "
            "**total**: a separate run of `load_text` + `compile_snapshot` + `json.dumps`, the public API. "
            "Target (issue 3): 10,000 routes under 2 s, growing linearly (µs/route flat).",
            "",
        ]
    if rss:
        lines += [
            "## Idle RSS of `fastmesh proxy` (MiB)",
            "",
            "| config | ready after (s) | **VmRSS** | anon | file | PSS | threads | after /metrics + /config | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in rss:
            target = TARGETS_MB.get(m.name)
            verdict = "" if target is None else (f"≤ {target}: " + ("met" if m.rss_kb <= target * 1024 else "MISSED"))
            lines.append(f"| {m.name} | {m.ready_s:.2f} | **{_mb(m.rss_kb)}** | {_mb(m.anon_kb)} | {_mb(m.file_kb)} | "
                         f"{_mb(m.pss_kb)} | {m.threads} | {_mb(m.scraped_rss_kb)} | {verdict} |")
        lines += [
            "",
            f"VmRSS summed over the process tree {SETTLE_S:g} s after the `ready` event (port-0 overrides, "
            "no traffic); anon/file from /proc/PID/status (RssAnon, RssFile+RssShmem), PSS from smaps_rollup. "
            "The last column is VmRSS after one scrape of /metrics and one GET /config.",
            "",
        ]
    return "\n".join(lines)


# === command line ===


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_csv, default=["100", "1000", "10000"], help="route counts (default 100,1000,10000)")
    p.add_argument("--variants", type=_csv, default=list(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=3, help="runs per (variant, size); the median is reported")
    p.add_argument("--no-compile", action="store_true", help="skip the compile-time table")
    p.add_argument("--no-rss", action="store_true", help="skip the idle RSS table")
    p.add_argument("--profile", metavar="VARIANT:SIZE", help="print a cProfile of one run and exit")
    p.add_argument("--out", type=Path, help="report path (default bench/results/<date>-config-compile.md)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    if args.profile:
        variant, _, size = args.profile.partition(":")
        print(profile(variant, int(size or 10000)))
        return 0
    say: Callable[[str], Any] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows: list[CompileRow] = []
    if not args.no_compile:
        for variant in args.variants:
            for size in map(int, args.sizes):
                row = measure_compile(variant, size, args.rounds)
                say(f"  compile {variant} {size}: {row.total * 1000:,.0f} ms")
                rows.append(row)
    rss: list[RssRow] = []
    if not args.no_rss:
        registry = Registry()
        try:
            with tempfile.TemporaryDirectory(prefix="fastmesh-config-bench-") as tmp:
                for name, text in (("demo", demo_config(Path(tmp))),
                                   ("bench", fastmesh_config(UNUSED_PORT)),
                                   ("bench + 1000 routes", fastmesh_config(UNUSED_PORT, 1000)),
                                   ("bench + 10000 routes", fastmesh_config(UNUSED_PORT, 10000))):
                    row_rss = measure_rss(name, text, Path(tmp), registry)
                    say(f"  idle RSS {name}: {row_rss.rss_kb / 1024:.1f} MiB")
                    rss.append(row_rss)
        finally:
            registry.stop_all()
    report = render(rows, rss, raw_argv)
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}-config-compile.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    print(report)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
