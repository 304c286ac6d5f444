#!/usr/bin/env python3
"""Kubernetes at scale (issue 6): a synthetic cluster through the config compiler, full and incremental.

    .venv/bin/python bench/kube_scale.py                      # 10,000 Services, 100,000 endpoints (~1 min)
    .venv/bin/python bench/kube_scale.py --services 1000 --endpoints 10000 --changes 50 --no-baseline
    .venv/bin/python bench/kube_scale.py --profile full       # cProfile of the full compile (or: change)

The cluster (bench/synthetic_cluster.py): Services in 20 namespaces, EndpointSlices of at most 100
endpoints (one Service in 100 has ten times the average and spans several slices), GAMMA HTTPRoutes
with a canary split, TrafficPolicies. Objects are dicts as the API serves them, as a watch hands them over.

Measured, in this process (which holds the objects as a watch cache would, plus the compiler):
- full: `IncrementalCompiler.apply` of every object (project, schema, checks, compile, snapshot JSON),
  wall and CPU time (the machine is shared: CPU time is the steadier figure); median of `--rounds`;
- change: `apply` of ONE changed EndpointSlice (`--changes` of them, random, each a scale up/down or
  readiness flip), p50/p99/max;
- RSS: VmHWM (peak) and VmRSS of this process after the full compile and the changes;
- baseline (unless `--no-baseline`): what `fastmesh proxy --kubernetes` did for any change before the
  incremental compiler: render every object to text, then `python -m fastmesh.config.worker --cluster`
  in a child process (YAML, schema, checks, compile), wall time and the child's peak RSS.
Writes bench/results/<date>-kube-scale.md (or --out) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import gc
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench import machine  # noqa: E402
from bench.synthetic_cluster import changed_slice, cluster  # noqa: E402
from fastmesh.compiler import child_env  # noqa: E402
from fastmesh.config import fastpath  # noqa: E402
from fastmesh.config.incremental import IncrementalCompiler  # noqa: E402
from fastmesh.kube.source import documents, render  # noqa: E402

RESULTS = REPO / "bench" / "results"
SOURCE = "kubernetes https://127.0.0.1:6443"
TARGETS = {"full_s": 2.0, "change_ms": 50.0, "rss_mb": 500.0}  # issue 6


def _status_mb(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, CPU s, result)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    listed = cluster(args.services, args.endpoints, args.routes, args.policies)
    objects = [(kind, obj) for kind, objs in listed.items() for obj in objs]
    out: dict[str, Any] = {
        "services": len(listed["Service"]), "slices": len(listed["EndpointSlice"]),
        "endpoints": sum(len(s["endpoints"]) for s in listed["EndpointSlice"]),
        "routes": len(listed["HTTPRoute"]), "policies": len(listed["TrafficPolicy"]),
        "generate_s": time.perf_counter() - t0,
    }
    # With the Cython modules of ext/ (when built) and, in the same run, without them (--no-compare-ext:
    # only the default path); the rounds alternate which goes first.
    built = fastpath.ON  # built and not switched off by FASTMESH_NO_EXT
    modes = [True, False] if built and args.compare_ext else [built]
    fulls: dict[bool, list[tuple[float, float]]] = {mode: [] for mode in modes}
    compiler = None
    snapshots = {}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            fastpath.use_ext(mode)
            compiler = None  # the previous round's state is freed before the next is built
            gc.collect()
            compiler = IncrementalCompiler(SOURCE, freeze_gc=True)
            wall, cpu, result = timed(lambda c=compiler: c.apply(objects))
            fulls[mode].append((wall, cpu))
            snapshots[mode] = result.snapshot_json
    assert compiler is not None
    assert len(set(snapshots.values())) == 1, "ext/ and the pure-Python path compiled different snapshots"
    out["ext"] = modes[0]
    out["full_wall_s"] = statistics.median(w for w, _ in fulls[modes[0]])
    out["full_cpu_s"] = statistics.median(c for _, c in fulls[modes[0]])
    out["full_rounds"] = fulls[modes[0]]
    out["snapshot_bytes"] = len(result.snapshot_json)
    out["rss_after_full_mb"] = _status_mb("VmRSS")
    rng = random.Random(6)
    before_last = result.snapshot_json
    generation = 0
    for mode in modes:  # the last compiler, changed with each path in turn
        fastpath.use_ext(mode)
        walls, cpus = [], []
        for _ in range(args.changes):
            generation += 1
            before_last = result.snapshot_json
            changed = changed_slice(listed, rng, generation)
            wall, cpu, result = timed(lambda: compiler.apply([("EndpointSlice", changed)]))
            assert result.incremental, "an EndpointSlice change took the full compile"
            walls.append(wall * 1000)
            cpus.append(cpu * 1000)
        change = {"p50": pct(walls, 50), "p99": pct(walls, 99), "max": max(walls),
                  "cpu_p50": pct(cpus, 50), "cpu_p99": pct(cpus, 99)}
        if mode == modes[0]:
            out["change_ms"] = change
        else:
            out["python"] = {"full_wall_s": statistics.median(w for w, _ in fulls[mode]),
                             "full_cpu_s": statistics.median(c for _, c in fulls[mode]),
                             "full_rounds": fulls[mode], "change_ms": change}
    fastpath.use_ext(built)
    out["full_compiles"] = compiler.full_compiles
    out["changes"] = args.changes
    out["rss_mb"] = _status_mb("VmRSS")
    out["hwm_mb"] = _status_mb("VmHWM")
    # After the RSS: the engine is not ours.
    out["engine_first_apply_ms"], out["engine_apply_ms"] = engine_apply(before_last, result.snapshot_json)
    if args.baseline:
        out["baseline"] = baseline(listed)
    return out


def engine_apply(before: str, after: str, rounds: int = 6) -> tuple[float, list[float]]:
    """Wall ms of `Engine.apply_json` of the whole snapshot: the first apply, then `rounds` applies
    alternating the snapshots before and after the last EndpointSlice change (what every change costs
    the proxy after the compile); (0, []) when the engine is not built."""
    try:
        from fastmesh.compiler import with_version
        from fastmesh.engine import Engine
        from fastmesh.overrides import Overrides

        engine = Engine.start(1)
    except Exception:  # noqa: BLE001 - no engine: nothing to measure
        return 0.0, []

    def local(snapshot_json: str) -> str:
        snapshot = json.loads(snapshot_json)
        Overrides(listeners={name["name"]: "127.0.0.1:0" for name in snapshot["listeners"]}).apply(snapshot)
        return json.dumps(snapshot, separators=(",", ":"))

    texts = [local(before), local(after)]
    times = []

    async def run() -> None:
        for version in range(1, rounds + 2):
            t0 = time.perf_counter()
            await engine.apply_json(with_version(texts[version % 2], version))
            times.append((time.perf_counter() - t0) * 1000)

    import asyncio

    asyncio.run(run())
    return times[0], times[1:]


def baseline(listed: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The path before: every object rendered to text, compiled by the worker in a child process."""
    wall, cpu, content = timed(lambda: render(documents(listed)))
    argv = [sys.executable, "-c",
            "import resource, sys, fastmesh.config.worker as w; w.main(); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
            f"--source={SOURCE}", "--cluster"]
    t0 = time.perf_counter()
    child = subprocess.run(argv, input=content, capture_output=True, env=child_env(), check=True)
    child_s = time.perf_counter() - t0
    header = json.loads(child.stdout[: child.stdout.index(b"\n")])
    assert "settings" in header, header
    return {"render_s": wall, "worker_s": child_s, "worker_rss_mb": int(child.stderr.split()[-1]) / 1024,
            "text_mb": len(content) / 1e6}


# === through a real kube-apiserver (--apiserver) ===


def _create_all(conn_client: Any, listed: dict[str, list[dict[str, Any]]], deadline: float,
                threads: int = 4) -> tuple[list[str], float]:
    """POST every object (namespaces first) with `threads` connections, until `deadline`;
    (the paths of the objects created, seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.kube_load import jobs as create_jobs
    from bench.kube_load import namespaces_of

    t0 = time.perf_counter()
    conn = conn_client.open()
    for ns in namespaces_of(listed):
        status, body = conn_client.call(conn, "/api/v1/namespaces", "POST", {"metadata": {"name": ns}})
        assert status in (201, 409), body
    conn.close()
    jobs = create_jobs(listed)

    def post(share: list[tuple[str, dict[str, Any]]]) -> list[str]:
        done, conn = [], conn_client.open()
        try:
            for path, body in share:
                if time.perf_counter() > deadline:
                    break
                status, answer = conn_client.call(conn, path, "POST", body)
                assert status in (201, 409), (path, status, answer.get("message"))
                done.append(f"{path}/{body['metadata']['name']}")
        finally:
            conn.close()
        return done

    with ThreadPoolExecutor(threads) as pool:  # one kind's objects before the next's, in each share
        created = [path for done in pool.map(post, [jobs[i::threads] for i in range(threads)]) for path in done]
    return created, time.perf_counter() - t0


def _tree_rss_mb(pid: int) -> float:
    from bench.procs import process_tree

    total = 0
    for child in process_tree(pid):
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class _ProxyProcess:
    """`fastmesh proxy` and the times its JSON events came."""

    def __init__(self, argv: list[str], stderr: Any = subprocess.DEVNULL) -> None:
        import threading

        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=child_env(), cwd=REPO)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with contextlib.suppress(ValueError), self.cond:
                self.events.append((time.perf_counter(), json.loads(line)))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, kind: str, after: int, timeout: float) -> float:
        """When the first `kind` event after the first `after` came."""
        end = time.perf_counter() + timeout
        with self.cond:
            while True:
                for at, event in self.events[after:]:
                    if event.get("event") == kind:
                        return at
                if time.perf_counter() > end or self.popen.poll() is not None:
                    raise RuntimeError(f"no {kind} event in {timeout} s: {self.events[-3:]}")
                self.cond.wait(0.5)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def through_apiserver(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster created in a test kube-apiserver, `fastmesh proxy --kubernetes` on it: time to ready,
    then EndpointSlice patches until the proxy's `reloaded` event (watch, debounce, compile, engine)."""
    import tempfile

    from deploy.testcluster import cluster as testcluster
    from fastmesh.kube.kubeconfig import connect
    from fastmesh.kube.source import Client

    scale = args.apiserver_services / args.services
    out: dict[str, Any] = {"services": args.apiserver_services}
    listed = cluster(args.apiserver_services, round(args.endpoints * scale), round(args.routes * scale),
                     round(args.policies * scale))
    out["objects"] = sum(len(v) for v in listed.values())
    out["endpoints"] = sum(len(s["endpoints"]) for s in listed["EndpointSlice"])
    with tempfile.TemporaryDirectory(prefix="kube-scale-") as tmp:
        tc = testcluster.start(Path(tmp) / "cluster")
        proxies: list[_ProxyProcess] = []
        try:
            api = Client(connect(tc.kubeconfig), timeout_s=60)
            created, seconds = _create_all(api, listed, time.perf_counter() + args.apiserver_timeout)
            out.update(created=len(created), create_s=seconds)
            if len(created) < out["objects"]:
                out["note"] = f"bulk create stopped at the {args.apiserver_timeout:g} s bound"
            done = set(created)
            listed["EndpointSlice"] = [  # the slices that made it (patched below)
                s for s in listed["EndpointSlice"]
                if f"/apis/discovery.k8s.io/v1/namespaces/{s['metadata']['namespace']}/endpointslices/"
                   f"{s['metadata']['name']}" in done]
            argv = [sys.executable, "-m", "fastmesh", "proxy", "--kubernetes", "--kubeconfig", tc.kubeconfig,
                    "--admin-address", "127.0.0.1:0", "--listener", "outbound=127.0.0.1:0", "--no-kube-status"]
            t0 = time.perf_counter()
            proxies = [_ProxyProcess(argv) for _ in range(args.apiserver_proxies)]
            ready = [px.wait("ready", 0, 900) for px in proxies]
            out["proxies"] = len(proxies)
            out["ready_s"] = max(ready) - t0
            time.sleep(2)  # the watches' first sync (a full list again: no change, no reload)
            out["rss_ready_mb"] = _tree_rss_mb(proxies[0].popen.pid)
            rng = random.Random(6)
            every: list[float] = []
            last: list[float] = []
            conn = api.open()
            for generation in range(1, args.apiserver_changes + 1):
                changed = changed_slice(listed, rng, generation)
                path = (f"/apis/discovery.k8s.io/v1/namespaces/{changed['metadata']['namespace']}"
                        f"/endpointslices/{changed['metadata']['name']}")
                marks = [px.mark() for px in proxies]
                sent = time.perf_counter()
                status, answer = api.call(conn, path, "PATCH", {"endpoints": changed["endpoints"]},
                                          content_type="application/merge-patch+json")
                assert status == 200, answer
                applied = [(px.wait("reloaded", mark, 60) - sent) * 1000 for px, mark in zip(proxies, marks)]
                every += applied
                last.append(max(applied))
                time.sleep(0.3)
            conn.close()
            out["change_ms"] = {"p50": pct(every, 50), "p99": pct(every, 99), "max": max(every), "n": len(last),
                                "all_p50": pct(last, 50), "all_p99": pct(last, 99)}
            out["rss_mb"] = _tree_rss_mb(proxies[0].popen.pid)
        finally:
            for px in proxies:
                px.stop()
            tc.stop()
    return out


def profile(args: argparse.Namespace, what: str, top: int = 30) -> str:
    listed = cluster(args.services, args.endpoints, args.routes, args.policies)
    objects = [(kind, obj) for kind, objs in listed.items() for obj in objs]
    compiler = IncrementalCompiler(SOURCE, freeze_gc=True)
    prof = cProfile.Profile()
    if what == "full":
        prof.runcall(compiler.apply, objects)
    else:
        compiler.apply(objects)
        rng = random.Random(6)
        for generation in range(1, 51):
            prof.runcall(compiler.apply, [("EndpointSlice", changed_slice(listed, rng, generation))])
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def _verdict(value: float, target: float) -> str:
    return f"≤ {target:g}: " + ("met" if value <= target else "MISSED")


def _with(m: dict[str, Any]) -> str:
    return ", with ext/ (Cython)" if m.get("ext") else ", pure Python (ext/ not built, or FASTMESH_NO_EXT set)"


def _gain(before: float, after: float) -> str:
    return f"{(before - after) / before * 100:.0f} %"


def _paired(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> str:
    """The median of the CPU saved within each round, and its range: steadier than two medians on a
    shared machine, where the load moves between rounds."""
    saved = sorted((b[1] - a[1]) / b[1] * 100 for b, a in zip(before, after))
    return f"median {statistics.median(saved):.0f} % CPU ({saved[0]:.0f} to {saved[-1]:.0f} %)"


def report(m: dict[str, Any], argv: Sequence[str]) -> str:
    c = m["change_ms"]
    p = m.get("python", {})
    lines = [
        f"# Kubernetes at scale: config compile — {datetime.date.today().isoformat()}",
        "",
        f"Command: `.venv/bin/python bench/kube_scale.py {' '.join(argv)}`".replace("  ", " "),
        "",
        f"Cluster: {m['services']:,} Services, {m['slices']:,} EndpointSlices with {m['endpoints']:,} endpoints, "
        f"{m['routes']:,} HTTPRoutes, {m['policies']:,} TrafficPolicies (bench/synthetic_cluster.py); "
        f"snapshot {m['snapshot_bytes'] / 1e6:.1f} MB of JSON.",
        "",
        "| measure | wall | CPU | target (issue 6) |",
        "|---|---|---|---|",
        f"| full compile (`IncrementalCompiler.apply`, all objects; median of {len(m['full_rounds'])}){_with(m)} | "
        f"{m['full_wall_s']:.2f} s | {m['full_cpu_s']:.2f} s | {_verdict(m['full_cpu_s'], TARGETS['full_s'])} (CPU) |",
        *([f"| full compile, pure Python (ext/ switched off, same run; median of {len(p['full_rounds'])}) | "
           f"{p['full_wall_s']:.2f} s | {p['full_cpu_s']:.2f} s | {_verdict(p['full_cpu_s'], TARGETS['full_s'])} "
           f"(CPU); ext/ saves {_gain(p['full_cpu_s'], m['full_cpu_s'])} CPU, "
           f"{_gain(p['full_wall_s'], m['full_wall_s'])} wall (medians); round by round (each round compiles "
           f"with and without, in turn): {_paired(p['full_rounds'], m['full_rounds'])} |"] if p else []),
        f"| one EndpointSlice change, p50 | {c['p50']:.2f} ms | {c['cpu_p50']:.2f} ms | |",
        f"| one EndpointSlice change, p99 (of {m['changes']}) | {c['p99']:.2f} ms | "
        f"{c['cpu_p99']:.2f} ms | {_verdict(c['p99'], TARGETS['change_ms'])} (wall, compile only) |",
        f"| one EndpointSlice change, max | {c['max']:.2f} ms | | |",
        *([f"| one EndpointSlice change, pure Python, p50 / p99 (of {m['changes']}) | {pc['p50']:.2f} / "
           f"{pc['p99']:.2f} ms | {pc['cpu_p50']:.2f} / {pc['cpu_p99']:.2f} ms | |"] if (pc := p.get("change_ms")) else []),
        f"| RSS after full compile + changes (objects + compiler) | {m['rss_mb']:.0f} MB | | "
        f"{_verdict(m['rss_mb'], TARGETS['rss_mb'])} |",
        f"| peak RSS (VmHWM) | {m['hwm_mb']:.0f} MB | | {_verdict(m['hwm_mb'], TARGETS['rss_mb'])} |",
        *([f"| the engine's `apply_json` of the whole snapshot after one EndpointSlice change (Rust; every "
           f"proxy pays it) | {statistics.median(m['engine_apply_ms']):.0f} ms (median of "
           f"{len(m['engine_apply_ms'])}; first apply {m['engine_first_apply_ms']:.0f} ms) | | |"]
          if m.get("engine_apply_ms") else []),
        "",
        f"Full compiles run: {m['full_compiles']} per compiler (every change took the incremental path). "
        f"Rounds (wall s, CPU s): {', '.join(f'({w:.2f}, {c:.2f})' for w, c in m['full_rounds'])}"
        + (f"; pure Python: {', '.join(f'({w:.2f}, {c:.2f})' for w, c in p['full_rounds'])}" if p else "") + ".",
    ]
    if "baseline" in m:
        b = m["baseline"]
        lines += [
            "",
            "Before (any change): render every object to text "
            f"({b['text_mb']:.1f} MB) {b['render_s']:.2f} s, then the worker in a child process "
            f"{b['worker_s']:.2f} s (peak RSS {b['worker_rss_mb']:.0f} MB): "
            f"{b['render_s'] + b['worker_s']:.1f} s per change.",
        ]
    if "apiserver" in m:
        a = m["apiserver"]
        lines += ["", f"Through a real kube-apiserver (deploy/testcluster/, `--apiserver`), {a['services']:,} Services "
                  f"and {a['endpoints']:,} endpoints (a bulk create of the full size does not fit a bounded "
                  f"run here): {a['created']:,} of {a['objects']:,} objects created in {a['create_s']:.0f} s "
                  f"({a['created'] / a['create_s']:.0f}/s, 4 connections)"
                  + (f" — {a['note']}" if "note" in a else "") + f". {a['proxies']} `fastmesh proxy --kubernetes`"
                  f" started together, all ready after {a['ready_s']:.1f} s (list, full compile, engine); one "
                  f"proxy + its compiler child: RSS {a['rss_ready_mb']:.0f} MB at ready, {a['rss_mb']:.0f} MB "
                  "after the changes. One EndpointSlice PATCH to a proxy's `reloaded` event (watch, 100 ms "
                  f"debounce, incremental compile, snapshot applied by the engine), {a['change_ms']['n']} patches "
                  f"x {a['proxies']} proxies: p50 {a['change_ms']['p50']:.0f} ms, p99 {a['change_ms']['p99']:.0f} ms, "
                  f"max {a['change_ms']['max']:.0f} ms; applied by all {a['proxies']}: p50 "
                  f"{a['change_ms']['all_p50']:.0f} ms, p99 {a['change_ms']['all_p99']:.0f} ms. (Each proxy watches the "
                  "apiserver itself: the control plane that will stream views to proxies is not there yet.)"]
    box = machine.machine()
    commit = machine._run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    lines += ["", f"Machine: {box['nproc']} CPUs ({box['cpu']}), {box['memory']}, {box['os']}; Python "
              f"{sys.version.split()[0]}; commit {commit}; load average at the end "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine).", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--endpoints", type=int, default=100_000)
    p.add_argument("--routes", type=int, default=1_000)
    p.add_argument("--policies", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3, help="full compiles (median reported)")
    p.add_argument("--changes", type=int, default=200, help="single EndpointSlice changes")
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--no-compare-ext", dest="compare_ext", action="store_false",
                   help="only the default path (with ext/ when built), not also the pure-Python one")
    p.add_argument("--profile", choices=("full", "change"))
    p.add_argument("--apiserver", action="store_true",
                   help="also: create the cluster in a test kube-apiserver and run fastmesh proxy --kubernetes on it")
    p.add_argument("--apiserver-services", type=int, default=2_000,
                   help="Services created in the apiserver (endpoints, routes, policies in proportion)")
    p.add_argument("--apiserver-timeout", type=float, default=300.0, help="bound of the bulk create (s)")
    p.add_argument("--apiserver-changes", type=int, default=20, help="EndpointSlice patches through the API")
    p.add_argument("--apiserver-proxies", type=int, default=10, help="proxies watching the apiserver")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.profile:
        print(profile(args, args.profile))
        return 0
    m = measure(args)
    if args.apiserver:
        m["apiserver"] = through_apiserver(args)
    text = report(m, raw_argv)
    write_results(text, m, args.out or RESULTS / f"{datetime.date.today().isoformat()}-kube-scale.md")
    return 0


def bench_main(argv: Sequence[str] | None, parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
               run: Callable[[argparse.Namespace], dict[str, Any]], report: Callable[[dict[str, Any], Sequence[str]], str],
               stem: str) -> int:
    """Parse, run, report to bench/results/<date>-<stem>.md (or --out) and its .json."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    m = run(args)
    write_results(report(m, raw_argv), m, args.out or RESULTS / f"{datetime.date.today().isoformat()}-{stem}.md")
    return 0


def write_results(text: str, data: dict[str, Any], out: Path) -> None:
    """The report to `out` (and the figures beside it, .json), and to stdout."""
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(text)
    print(f"written: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
