#!/usr/bin/env python3
"""`make bench`: the upstream directly, nginx, HAProxy and fastmesh side by side, in one run.

    .venv/bin/python bench/run.py                    # h1 + h2c, 10 s, 3 interleaved rounds, median
    .venv/bin/python bench/run.py --quick            # 2 s, 1 round: proves the harness works
    .venv/bin/python bench/run.py --scenarios all    # every scenario of issue 3 (see bench/README.md)
    .venv/bin/python bench/run.py --targets fastmesh --fastmesh-engine plain=/tmp/a.so --fastmesh-engine pgo=/tmp/b.so
                                                     # two engine builds, interleaved, ratios to the first

Method: ../shared/PEERS.md. Writes bench/results/<date>-<name>.{md,json,png} and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import deps, fortio, machine, report, syscalls, tls  # noqa: E402
from bench.measure import CpuTicks, cpu_ticks, peak_rss_kb, rss_kb, ticks_to_us  # noqa: E402
from bench.procs import LOAD_CPU, PROXY_CPU, BenchError, Registry, pinned  # noqa: E402
from bench.report import Sample, SyscallSample  # noqa: E402
from bench.scenarios import Scenario, access_log, select, with_fortio, with_pki  # noqa: E402
from bench.targets import (  # noqa: E402
    Context, Direct, EngineBuild, Fastmesh, HAProxy, Nginx, Target, Upstream, fastmesh_available, fastmesh_env,
    parse_engine_build,
)

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
TARGET_ORDER = ["direct", "nginx", "haproxy", "fastmesh"]
IDLE_ROUTES = 1000


def say(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 s per run, 1 s warm-up, 1 round")
    p.add_argument("--scenarios", help="comma-separated names or 'all' (default: h1,h2c)")
    p.add_argument("--targets", default=",".join(TARGET_ORDER), help="subset of direct,nginx,haproxy,fastmesh")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 10, quick 2)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each run (default 2, quick 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds, median reported (default 3, quick 1)")
    p.add_argument("--syscalls", choices=["auto", "perf", "strace", "off"], default="auto",
                   help="separate short pass counting the proxy's syscalls (default: perf if usable, else strace)")
    p.add_argument("--name", help="results file name: <date>-<name>.md (default: quick or full)")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help=f"where the report goes (default {RESULTS})")
    p.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing tools")
    p.add_argument("--require-fastmesh", action="store_true", help="fail instead of skipping an unbuilt engine")
    p.add_argument("--keep", action="store_true", help="keep the temp dir with the generated configs and logs")
    p.add_argument("--fastmesh-engine", action="append", default=[], metavar="LABEL=PATH[,NAME=VALUE...]",
                   help="repeatable: measure this engine build (_engine*.so; PATH 'built' or empty: the one in "
                        "src/fastmesh/, copied at start) as target fastmesh-LABEL, with NAME=VALUE added to its "
                        "environment; replaces the target fastmesh; the tables give each build's CPU/req over "
                        "the first's, per round (min-max) and median; the README table is left alone")
    p.add_argument("--update-readme", action=argparse.BooleanOptionalAction, default=None,
                   help="put the table in bench/README.md (default: on for full runs)")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    try:
        args.engines = [parse_engine_build(spec) for spec in args.fastmesh_engine]
    except ValueError as e:
        p.error(str(e))
    if len({e.label for e in args.engines}) != len(args.engines):
        p.error("--fastmesh-engine: every build needs its own LABEL")
    args.name = args.name or ("engines" if args.engines else "quick" if args.quick else "full")
    if args.update_readme is None:
        args.update_readme = not args.quick and not args.engines
    return args


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _on_signal(signum: int, _frame: object) -> None:
    say(f"==> {signal.Signals(signum).name}: stopping every process of the run")
    raise SystemExit(128 + signum)


class Bench:
    """One run: starts the upstream and targets per configuration, measures, stops everything."""

    def __init__(self, args: argparse.Namespace, workdir: Path, registry: Registry, syscall_tool: str | None) -> None:
        self.args = args
        self.workdir = workdir
        self.registry = registry
        self.syscall_tool = syscall_tool
        self.samples: list[Sample] = []
        self.syscalls: list[SyscallSample] = []
        self.idle_rss: dict[tuple[int, str], int] = {}
        self.upstream = Upstream("upstream")
        self.ctx = Context(workdir, registry)
        self.pki: tls.Pki | None = None  # made when a scenario needs it

    def make_targets(self, names: Sequence[str]) -> list[Target]:
        made: dict[str, Target] = {"direct": Direct(self.upstream), "nginx": Nginx(), "haproxy": HAProxy(),
                                   "fastmesh": Fastmesh()}
        made.update((e.target, Fastmesh(e)) for e in self.args.engines)
        return [made[n] for n in names]

    def run(self, scenarios: list[Scenario], names: list[str]) -> None:
        say(f"==> upstream nginx on CPU {LOAD_CPU}")
        self.upstream.start(self.ctx)
        # One set of processes per configuration: extra routes, TLS listeners or not.
        for routes, with_tls in sorted({(s.routes, s.pki) for s in scenarios}):
            group = [s for s in scenarios if (s.routes, s.pki) == (routes, with_tls)]
            self.ctx.routes = routes
            self.ctx.pki = self.pki if with_tls else None
            targets = self.make_targets(names)
            for t in targets:
                say(f"==> starting {t.name}" + (f" ({routes} extra routes)" if routes else ""))
                t.start(self.ctx)
                self._check_pinning(t)
                # With TLS listeners and an identity (fastmesh issues its certificate in-process)
                # a proxy idles bigger: kept apart from the plain figure issue 3 judges.
                self.idle_rss[(routes, t.name + ("+tls" if with_tls else ""))] = rss_kb(t.pids())
            try:
                self._measure(group, targets)
                if self.syscall_tool:
                    self._syscall_pass(group, targets)
            finally:
                for t in targets:
                    t.stop(self.ctx)
        if "fastmesh" in names:
            self._idle_fastmesh(IDLE_ROUTES)

    def _idle_fastmesh(self, routes: int) -> None:
        """Idle RSS of `fastmesh proxy` with many routes (issue 3: 1,000 routes <= 40 MB)."""
        self.ctx.routes, self.ctx.pki = routes, None
        fm = Fastmesh()
        say(f"==> idle RSS of fastmesh with {routes} extra routes")
        fm.start(self.ctx)
        try:
            self.idle_rss[(routes, fm.name)] = rss_kb(fm.pids())
        finally:
            fm.stop(self.ctx)

    def _check_pinning(self, target: Target) -> None:
        want = {int(PROXY_CPU)} if not isinstance(target, Direct) else {int(LOAD_CPU)}
        for pid in target.pids():
            got = os.sched_getaffinity(pid)
            if got != want:
                raise BenchError(f"{target.name} pid {pid} runs on CPUs {sorted(got)}, expected {sorted(want)}")

    def _measure(self, group: list[Scenario], targets: list[Target]) -> None:
        rounds = self.args.rounds
        for r in range(rounds):
            for scenario in group:
                # Rotate the order every round so no target always runs right after another.
                order = targets[r % len(targets):] + targets[: r % len(targets)]
                for t in _serving(scenario, order):
                    sample = self._one(scenario, t, r)
                    self.samples.append(sample)
                    say(f"  [{scenario.name} round {r + 1}/{rounds}] {t.name:9s} {report.sample_line(sample)}")

    def _load(self, scenario: Scenario, target: Target, duration: float, log: Path,
              wrap: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        url = target.url(scenario.h2c, scenario.path, scenario.tls)
        argv = [*wrap, *scenario.command(url, duration, self.args.quick, log)]
        for appended in (log, access_log(log)):  # h2load --log-file and fortio -access-log-file append
            appended.unlink(missing_ok=True)
        done = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, text=True, timeout=duration * 6 + 120)
        if done.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def _one(self, scenario: Scenario, target: Target, rnd: int) -> Sample:
        log = self.workdir / "h2load-requests.log"
        if self.args.warmup > 0:
            self._load(scenario, target, self.args.warmup, log)
        pids, up_pids = target.pids(), self.upstream.pids()
        _reset_peak_rss(pids)
        before, up_before = cpu_ticks(pids), cpu_ticks(up_pids)
        t0 = time.monotonic()
        done = self._load(scenario, target, self.args.duration, log)
        wall = time.monotonic() - t0
        cpu, up_cpu = cpu_ticks(pids) - before, cpu_ticks(up_pids) - up_before
        result = scenario.parse(done.stdout, log)
        return Sample(scenario=scenario.name, target=target.name, round=rnd, requests=result.requests,
                      duration_s=result.duration_s, rps=result.rps, errors=result.errors,
                      latency_ms=result.latency_ms, cpu_user_us=ticks_to_us(cpu.user),
                      cpu_sys_us=ticks_to_us(cpu.system), upstream_cpu_us=ticks_to_us(_total(up_cpu)),
                      peak_rss_kb=peak_rss_kb(pids), wall_s=wall)

    def _syscall_pass(self, group: list[Scenario], targets: list[Target]) -> None:
        duration = 1.0 if self.args.quick else 3.0
        for scenario in group:
            for t in _serving(scenario, targets):
                log = self.workdir / "h2load-requests.log"
                try:
                    counts, stdout = self._count_syscalls(scenario, t, duration, log)
                    requests = scenario.parse(stdout, log).requests
                except (BenchError, ValueError) as e:
                    say(f"  [{scenario.name} syscalls] {t.name}: failed: {str(e).splitlines()[0]}")
                    continue
                self.syscalls.append(SyscallSample(scenario.name, t.name, self.syscall_tool or "", requests, counts))
                per = sum(counts.values()) / max(1, requests)
                say(f"  [{scenario.name} syscalls/{self.syscall_tool}] {t.name:9s} {per:.2f}/req over {requests} req")

    def _count_syscalls(self, scenario: Scenario, target: Target, duration: float,
                        log: Path) -> tuple[dict[str, int], str]:
        counter = syscalls.COUNTERS[self.syscall_tool or "perf"]
        return counter(target.pids(), self.workdir / "syscalls.txt",
                       lambda wrap: self._load(scenario, target, duration, log, wrap).stdout)


def target_names(targets: str, engines: Sequence[EngineBuild]) -> list[str]:
    """The targets of the run in table order; engine builds take the place of `fastmesh`."""
    names = [n for n in TARGET_ORDER if n in targets.split(",")]
    if engines:
        names = [n for n in names if n != "fastmesh"] + [e.target for e in engines]
    return names


def _serving(scenario: Scenario, targets: Sequence[Target]) -> list[Target]:
    """The targets a scenario runs against: those with a TLS listener for the TLS scenarios
    (`direct`, the plaintext upstream, has none)."""
    return [t for t in targets if t.tls_port or not scenario.tls]


def _total(t: CpuTicks) -> int:
    return t.user + t.system


def _reset_peak_rss(pids: Sequence[int]) -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS, so each run reports its own peak."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def _syscall_tool(choice: str) -> str | None:
    if choice == "off":
        return None
    if choice in ("auto", "perf") and deps.perf_syscalls_usable():
        return "perf"
    if choice == "perf":
        raise SystemExit("perf cannot count syscalls tracepoints here (try --syscalls strace)")
    return "strace" if shutil.which("strace") else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select(args.scenarios)
    names = target_names(args.targets, args.engines)
    if not args.no_install:
        deps.ensure_tools(optional=args.syscalls != "off")
    has_plot = deps.ensure_matplotlib() if not args.no_install else report.has_matplotlib()
    notes: list[str] = []
    if any(e.path is None for e in args.engines) and (why := fastmesh_available()):
        raise SystemExit(f"--fastmesh-engine ...=built: {why}")
    if "fastmesh" in names and (why := fastmesh_available()):
        if args.require_fastmesh:
            raise SystemExit(f"fastmesh cannot run: {why}")
        say(f"==> fastmesh skipped: {why}")
        notes.append(f"fastmesh was not measured: {why}")
        names.remove("fastmesh")
    if any(s.tool == "fortio" for s in scenarios):
        fortio_path, why = fortio.ensure_fortio(install=not args.no_install)
        if fortio_path is None:
            say(f"==> fortio unavailable: {why}; the rate scenarios fall back to h2load --rps")
            if any(s.rate for s in scenarios):
                notes.append(f"fortio could not be had ({why}): the rate scenarios ran h2load --rps instead, whose "
                             "requests leave in bursts and are timed from when they are sent (coordinated omission)")
            if dropped := [s.name for s in scenarios if s.pki]:
                say(f"==> and the TLS scenarios ({', '.join(dropped)}) are skipped")
                notes.append(f"fortio could not be had ({why}): the TLS scenarios ({', '.join(dropped)}) did not run "
                             "(no other load generator here presents a client certificate)")
        scenarios = with_fortio(scenarios, fortio_path)
    if not scenarios:
        raise SystemExit("no scenario left to run")
    syscall_tool = _syscall_tool(args.syscalls)
    _raise_fd_limit()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    info = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join([Path(sys.executable).name, "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine.machine(),
        "versions": machine.versions(),
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                     "syscalls": syscall_tool or "off", "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU},
        "notes": notes,
        "engines": [{"target": e.target, "path": str(e.path or "built"), "env": e.env} for e in args.engines],
    }
    workdir = Path(tempfile.mkdtemp(prefix="fastmesh-bench-"))
    workdir.chmod(0o755)  # nginx workers (nobody) read the 1 MiB file from it
    registry = Registry()
    bench = Bench(args, workdir, registry, syscall_tool)
    say(f"==> {len(scenarios)} scenario(s) x {len(names)} target(s) x {args.rounds} round(s), "
        f"{args.duration:g} s each (+{args.warmup:g} s warm-up); work dir {workdir}")
    try:
        if any(s.pki for s in scenarios):
            say("==> TLS key material: fastmesh ca init, ca issue (server, client)")
            bench.pki = tls.make_pki(workdir / "pki", fastmesh_env())
            scenarios = with_pki(scenarios, bench.pki.client_chain, bench.pki.client_key)
        bench.run(scenarios, names)
    except BenchError as e:
        say(f"error: {e}\n(logs and configs kept in {workdir})")
        args.keep = True
        return 1
    finally:
        registry.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = Path("/proc/loadavg").read_text().split()[:3]

    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"{info['date']}-{args.name}"
    result = report.build(info, scenarios, names, bench.samples, bench.syscalls, bench.idle_rss)
    png = stem.with_suffix(".png")
    if has_plot:
        report.plot(result, png)
    text = report.markdown(result, png.name if has_plot else None)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    say("")
    say(report.tables(result))
    say(f"==> wrote {stem.with_suffix('.md')}" + (f", {png.name}" if has_plot else "") + f", {stem.name}.json")
    if args.update_readme:
        report.update_readme(README, result, stem.with_suffix(".md").name)
        say(f"==> updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
