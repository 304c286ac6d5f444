"""Medians over rounds, ratios to nginx and HAProxy, the markdown report, the plot, the README table."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scenarios import Scenario

COLORS = {"direct": "#9e9e9e", "nginx": "#2e7d32", "haproxy": "#1565c0", "fastmesh": "#e65100"}
# Engine builds compared in one run (bench/run.py --fastmesh-engine): fastmesh-<label>.
ENGINE_COLORS = ["#e65100", "#6a1b9a", "#00838f", "#ad1457", "#827717"]
README_BEGIN, README_END = "<!-- bench:latest:begin -->", "<!-- bench:latest:end -->"


@dataclass
class Sample:
    """One measured run of one target in one scenario and round. CPU figures are totals (us)."""

    scenario: str
    target: str
    round: int
    requests: int
    duration_s: float
    rps: float
    errors: int
    latency_ms: dict[str, float]
    cpu_user_us: float
    cpu_sys_us: float
    upstream_cpu_us: float
    peak_rss_kb: int
    wall_s: float = 0.0

    @property
    def cpu_per_req(self) -> float:
        return (self.cpu_user_us + self.cpu_sys_us) / max(1, self.requests)


@dataclass
class SyscallSample:
    scenario: str
    target: str
    tool: str
    requests: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def per_req(self) -> float:
        return sum(self.counts.values()) / max(1, self.requests)


def sample_line(s: Sample) -> str:
    lat = s.latency_ms
    return (f"{s.rps:9.0f} req/s  p50 {lat.get('p50', float('nan')):.2f} ms  p99 {lat.get('p99', float('nan')):.2f} ms  "
            f"CPU {s.cpu_per_req:6.1f} us/req ({s.cpu_user_us / max(1, s.requests):.1f}/"
            f"{s.cpu_sys_us / max(1, s.requests):.1f})  {s.requests} req" + (f"  {s.errors} ERRORS" if s.errors else ""))


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _row(samples: list[Sample], sys: SyscallSample | None) -> dict[str, Any]:
    n = [max(1, s.requests) for s in samples]
    row: dict[str, Any] = {
        "target": samples[0].target,
        "rounds": len(samples),
        "rps": _median([s.rps for s in samples]),
        "cpu_us": _median([s.cpu_per_req for s in samples]),
        "user_us": _median([s.cpu_user_us / k for s, k in zip(samples, n)]),
        "sys_us": _median([s.cpu_sys_us / k for s, k in zip(samples, n)]),
        "upstream_us": _median([s.upstream_cpu_us / k for s, k in zip(samples, n)]),
        "peak_rss_mb": max(s.peak_rss_kb for s in samples) / 1024,
        "errors": sum(s.errors for s in samples),
        "requests": sum(s.requests for s in samples),
    }
    for p in ("p50", "p99", "p999"):
        row[p] = _median([s.latency_ms[p] for s in samples if p in s.latency_ms])
    if sys is not None:
        row["syscalls_per_req"] = sys.per_req
        row["syscall_tool"] = sys.tool
        top = sorted(sys.counts.items(), key=lambda kv: -kv[1])[:6]
        row["top_syscalls"] = [[name, count / max(1, sys.requests)] for name, count in top]
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _reference(info: dict[str, Any]) -> str:
    """The engine build the others are compared with (bench/run.py --fastmesh-engine: the first)."""
    engines = info.get("engines") or []
    return engines[0]["target"] if engines else ""


def _over_reference(row: dict[str, Any], reference: str, samples: list[Sample]) -> None:
    """CPU/req (and user CPU/req) of the row's target over the reference's, within each round
    (the two ran minutes apart at most, on the same machine load), and the median of those."""
    mine = {s.round: s for s in samples if s.target == row["target"]}
    ref = {s.round: s for s in samples if s.target == reference}
    rounds = sorted(mine.keys() & ref.keys())
    per_round = [mine[k].cpu_per_req / ref[k].cpu_per_req for k in rounds if ref[k].cpu_per_req]
    user = [(mine[k].cpu_user_us / max(1, mine[k].requests)) / (ref[k].cpu_user_us / max(1, ref[k].requests))
            for k in rounds if ref[k].cpu_user_us]
    row["x_reference_rounds"] = per_round
    row["x_reference"] = _median(per_round)
    row["x_reference_user"] = _median(user)


def build(info: dict[str, Any], scenarios: list[Scenario], targets: list[str], samples: list[Sample],
          syscalls: list[SyscallSample], idle_rss: dict[tuple[int, str], int]) -> dict[str, Any]:
    out_scenarios: list[dict[str, Any]] = []
    for sc in scenarios:
        rows = []
        for t in targets:
            mine = [s for s in samples if s.scenario == sc.name and s.target == t]
            if mine:
                sys = next((y for y in syscalls if y.scenario == sc.name and y.target == t), None)
                rows.append(_row(mine, sys))
        by = {r["target"]: r for r in rows}
        for r in rows:
            r["x_nginx"] = _ratio(r["cpu_us"], by.get("nginx", {}).get("cpu_us"))
            r["x_haproxy"] = _ratio(r["cpu_us"], by.get("haproxy", {}).get("cpu_us"))
            direct_p99 = by.get("direct", {}).get("p99")
            r["p99_over_direct"] = r["p99"] - direct_p99 if r["p99"] is not None and direct_p99 is not None else None
        reference = _reference(info)
        if reference in by:
            for r in rows:
                _over_reference(r, reference, [s for s in samples if s.scenario == sc.name])
        out_scenarios.append({"name": sc.name, "title": sc.title, "rate": sc.rate, "routes": sc.routes,
                              "baseline": "", "reference": reference if reference in by else "", "rows": rows})
    # CPU/req over the same target's in the baseline scenario (TLS over plaintext), when it ran.
    by_name = {o["name"]: o for o in out_scenarios}
    for sc, out in zip(scenarios, out_scenarios):
        if sc.baseline in by_name:
            out["baseline"] = sc.baseline
            base = {r["target"]: r["cpu_us"] for r in by_name[sc.baseline]["rows"]}
            for r in out["rows"]:
                r["x_baseline"] = _ratio(r["cpu_us"], base.get(r["target"]))
    result = {
        "info": info,
        "scenarios": out_scenarios,
        "idle_rss_mb": [{"routes": routes, "target": t, "mb": kb / 1024} for (routes, t), kb in sorted(idle_rss.items())],
        "samples": [asdict(s) | {"cpu_per_req": s.cpu_per_req} for s in samples],
    }
    result["checks"] = checks(result)
    return result


def _find(result: dict[str, Any], scenario: str, target: str) -> dict[str, Any] | None:
    for sc in result["scenarios"]:
        if sc["name"] == scenario:
            return next((r for r in sc["rows"] if r["target"] == target), None)
    return None


def checks(result: dict[str, Any]) -> list[str]:
    """The targets of issue 3 that this run can judge, each 'met' or 'MISSED' with its numbers."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    fm, ng, ha = (_find(result, "h1", t) for t in ("fastmesh", "nginx", "haproxy"))
    if fm and ng and ha:
        best = min(ng["cpu_us"], ha["cpu_us"])
        lines.append(f"HTTP/1.1 CPU/req <= 1.0 x the better of nginx and HAProxy: {verdict(fm['cpu_us'] <= best)} "
                     f"({fm['cpu_us']:.1f} vs {best:.1f} us, {fm['cpu_us'] / best:.2f}x)")
    fm, ha = _find(result, "h2c", "fastmesh"), _find(result, "h2c", "haproxy")
    if fm and ha:
        lines.append(f"h2c CPU/req <= 1.0 x HAProxy: {verdict(fm['cpu_us'] <= ha['cpu_us'])} "
                     f"({fm['cpu_us']:.1f} vs {ha['cpu_us']:.1f} us, {fm['cpu_us'] / ha['cpu_us']:.2f}x)")
    for name, rate in (("rate1k", "1,000"), ("rate10k", "10,000")):
        fm, ng = _find(result, name, "fastmesh"), _find(result, name, "nginx")
        if fm and ng and fm["p99_over_direct"] is not None and ng["p99_over_direct"] is not None:
            lines.append(f"added p99 over direct at {rate} req/s <= nginx's: "
                         f"{verdict(fm['p99_over_direct'] <= ng['p99_over_direct'])} "
                         f"({fm['p99_over_direct']:+.3f} vs {ng['p99_over_direct']:+.3f} ms)")
    base, many = _find(result, "h1", "fastmesh"), _find(result, "routes10k", "fastmesh")
    if base and many:
        growth = many["cpu_us"] / base["cpu_us"] - 1
        lines.append(f"CPU/req with 10,000 routes grows <= 10 %: {verdict(growth <= 0.10)} "
                     f"({base['cpu_us']:.1f} -> {many['cpu_us']:.1f} us, {growth:+.0%})")
    for entry in result["idle_rss_mb"]:
        if entry["target"] == "fastmesh" and entry["routes"] == 0:
            lines.append(f"idle RSS of fastmesh proxy (bench config, 1 route) <= 30 MB: "
                         f"{verdict(entry['mb'] <= 30)} ({entry['mb']:.1f} MB)")
        if entry["target"] == "fastmesh" and entry["routes"] == 1000:
            lines.append(f"idle RSS of fastmesh proxy with 1,000 routes <= 40 MB: "
                         f"{verdict(entry['mb'] <= 40)} ({entry['mb']:.1f} MB)")
    return lines


# === markdown ===


def _f(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def scenario_table(sc: dict[str, Any]) -> str:
    fixed_rate = bool(sc["rate"])
    head = ["target", "req/s", "p50 ms", "p99 ms", "p99.9 ms"]
    head += ["p99 over direct ms"] if fixed_rate else []
    head += ["CPU us/req (user/sys)", "× nginx", "× HAProxy"]
    head += [f"× {sc['baseline']}"] if sc.get("baseline") else []
    head += [f"× {sc['reference']} CPU (rounds min–max)", "× user"] if sc.get("reference") else []
    head += ["upstream us/req", "syscalls/req", "peak RSS MB", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sc["rows"]:
        cells = [r["target"], _f(r["rps"], ",.0f"), _f(r["p50"], ".3f"), _f(r["p99"], ".3f"), _f(r["p999"], ".3f")]
        if fixed_rate:
            cells.append(_f(r["p99_over_direct"], "+.3f"))
        cells += [
            f"{r['cpu_us']:.1f} ({r['user_us']:.1f}/{r['sys_us']:.1f})",
            _f(r["x_nginx"], ".2f"), _f(r["x_haproxy"], ".2f"),
            *([_f(r.get("x_baseline"), ".2f")] if sc.get("baseline") else []),
            *(_reference_cells(r) if sc.get("reference") else []), _f(r["upstream_us"], ".1f"),
            _f(r.get("syscalls_per_req"), ".2f"), f"{r['peak_rss_mb']:.1f}", str(r["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reference_cells(r: dict[str, Any]) -> list[str]:
    rounds = r.get("x_reference_rounds") or []
    spread = f" ({min(rounds):.3f}–{max(rounds):.3f})" if rounds else ""
    return [_f(r.get("x_reference"), ".3f") + spread, _f(r.get("x_reference_user"), ".3f")]


def tables(result: dict[str, Any]) -> str:
    parts = []
    for sc in result["scenarios"]:
        parts.append(f"### {sc['name']}: {sc['title']}\n\n{scenario_table(sc)}\n")
    if result["checks"]:
        parts.append("### Targets of issue 3 judged by this run\n\n" + "\n".join(f"- {c}" for c in result["checks"]) + "\n")
    return "\n".join(parts)


def _syscall_breakdown(result: dict[str, Any]) -> str:
    lines = []
    for sc in result["scenarios"]:
        for r in sc["rows"]:
            if r.get("top_syscalls"):
                calls = ", ".join(f"{name} {per:.2f}" for name, per in r["top_syscalls"])
                lines.append(f"- {sc['name']} / {r['target']}: {r['syscalls_per_req']:.2f} per request — {calls}")
    return "\n".join(lines)


def markdown(result: dict[str, Any], png_name: str | None) -> str:
    info = result["info"]
    m, v, s = info["machine"], info["versions"], info["settings"]
    out = [
        f"# Benchmark {info['date']}\n",
        f"Command: `{info['command']}`  ",
        f"Commit: {v['commit'] or 'unknown'}\n",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, kernel {m['kernel']}, {m['os']}; "
        f"load average before {' '.join(info['load_before'])}, after {' '.join(info.get('load_after', []))}  ",
        f"Versions: nginx {v['nginx']}; {v['haproxy']}; {v['wrk']}; {v['h2load']}; {v.get('fortio') or 'fortio not used'}; {v['rustc'] or 'rustc ?'}; "
        f"Python {v['python']}\n",
        f"Method (../shared/PEERS.md): proxies pinned to CPU {s['proxy_cpu']} with one worker/thread and "
        f"upstream keep-alive; upstream nginx and the load generator on CPU {s['load_cpu']}. "
        f"{s['duration_s']:g} s per run after {s['warmup_s']:g} s warm-up, {s['rounds']} round(s) interleaved "
        f"across targets, median reported. CPU us/req = utime+stime of the proxy process(es) from /proc/PID/stat "
        f"over the run / requests completed (for `direct`: the upstream itself). Syscalls: separate short pass "
        f"({s['syscalls']}), not during the measured runs. Peak RSS: VmHWM summed over the target's processes "
        f"(reset before each run).\n",
    ]
    out += [f"> {n}\n" for n in info["notes"]]
    out.append(tables(result))
    if png_name:
        out.append(f"![CPU microseconds per request]({png_name})\n")
    if breakdown := _syscall_breakdown(result):
        out.append(f"### Syscalls per request, most frequent\n\n{breakdown}\n")
    if result["idle_rss_mb"]:
        idle = ", ".join(f"{e['target']} {e['mb']:.1f} MB" + (f" ({e['routes']} routes)" if e["routes"] else "")
                         for e in result["idle_rss_mb"])
        out.append(f"Idle RSS (VmRSS) after start: {idle}\n")
    return "\n".join(out)


def update_readme(readme: Path, result: dict[str, Any], results_name: str) -> None:
    block = f"{README_BEGIN}\nLatest full run: [results/{results_name}](results/{results_name})\n\n{tables(result)}{README_END}"
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{README_BEGIN}\n{README_END}\n"
    if README_BEGIN in text:
        text = re.sub(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    else:
        text += f"\n## Latest table\n\n{block}\n"
    readme.write_text(text)


# === plot ===


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def split_by_scale(scenarios: list[dict[str, Any]], factor: float = 5.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the scenarios, those whose largest CPU/req is over `factor` x the median scenario's largest):
    the latter (a handshake per request) get their own axis so they do not flatten the rest."""
    peak = {sc["name"]: max((r["cpu_us"] for r in sc["rows"]), default=0.0) for sc in scenarios}
    limit = factor * statistics.median(peak.values()) if peak else 0.0
    large = [sc for sc in scenarios if peak[sc["name"]] > limit]
    return [sc for sc in scenarios if sc not in large], large


def _bars(ax: Any, scenarios: list[dict[str, Any]], targets: list[str]) -> None:
    """Grouped bars on one axis: user solid, sys hatched on top, the sum written above."""
    width = 0.8 / max(1, len(targets))
    for i, t in enumerate(targets):
        xs, user, system = [], [], []
        for j, sc in enumerate(scenarios):
            row = next((r for r in sc["rows"] if r["target"] == t), None)
            if row:
                xs.append(j + (i - (len(targets) - 1) / 2) * width)
                user.append(row["user_us"])
                system.append(row["sys_us"])
        color = COLORS.get(t, ENGINE_COLORS[i % len(ENGINE_COLORS)])
        ax.bar(xs, user, width, color=color, label="direct (the upstream itself)" if t == "direct" else t)
        bars = ax.bar(xs, system, width, bottom=user, color=color, alpha=0.55, hatch="//", edgecolor="white")
        for bar, u, s in zip(bars, user, system):
            ax.annotate(f"{u + s:.1f}", (bar.get_x() + bar.get_width() / 2, u + s), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(scenarios)), [sc["name"] for sc in scenarios])
    ax.grid(axis="y", alpha=0.3)


def plot(result: dict[str, Any], png: Path) -> None:
    """Grouped bars: CPU us/request of each target in each scenario, user and sys stacked; scenarios
    an order of magnitude above the rest on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    targets = list(dict.fromkeys(r["target"] for sc in scenarios for r in sc["rows"]))
    small, large = split_by_scale(scenarios)
    panels = [group for group in (small, large) if group]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.8 * len(scenarios) + 2), 4.5), dpi=120,
                             squeeze=False, gridspec_kw={"width_ratios": [len(g) for g in panels]})
    for ax, group in zip(axes[0], panels):
        _bars(ax, group, targets)
    axes[0][0].set_ylabel("CPU µs per request (solid user, hatched sys)")
    info = result["info"]
    commit = (info["versions"]["commit"] or "").split(" ")[0]  # without "(with uncommitted changes)"
    fig.suptitle(f"Proxy CPU per request — {info['date']}, {commit}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
