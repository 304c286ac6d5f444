"""What a run measures, and the parsers of the tools' output (wrk, h2load, fortio, /proc, perf, strace)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import read_proc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTicks:
    """utime and stime of a process (all its threads, the dead ones too), in clock ticks."""

    user: int
    system: int

    def __add__(self, other: CpuTicks) -> CpuTicks:
        return CpuTicks(self.user + other.user, self.system + other.system)

    def __sub__(self, other: CpuTicks) -> CpuTicks:
        return CpuTicks(self.user - other.user, self.system - other.system)


def parse_proc_stat(text: str) -> CpuTicks:
    """Fields 14 and 15 of /proc/PID/stat; the command name (field 2) may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field n is rest[n - 3].
    return CpuTicks(user=int(rest[11]), system=int(rest[12]))


def parse_status_kb(status: str, name: str = "VmHWM") -> int:
    """A memory line of /proc/PID/status in kB: VmHWM (peak resident set) or VmRSS (current);
    0 when absent (kernel threads)."""
    m = re.search(rf"^{name}:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


def cpu_ticks(pids: Sequence[int]) -> CpuTicks:
    total = CpuTicks(0, 0)
    for ticks in read_proc(pids, parse_proc_stat, "stat"):
        total += ticks
    return total


def peak_rss_kb(pids: Sequence[int]) -> int:
    """Sum of VmHWM over the processes (nginx master + worker; one process for the others)."""
    return sum(read_proc(pids, parse_status_kb, "status"))


def rss_kb(pids: Sequence[int]) -> int:
    """Sum of the current VmRSS over the processes."""
    return sum(read_proc(pids, lambda text: parse_status_kb(text, "VmRSS"), "status"))


def ticks_to_us(ticks: int) -> float:
    return ticks * 1e6 / CLOCK_TICKS


# === load generators ===


@dataclass
class LoadResult:
    """One run of a load generator: completed requests, rate, latency, errors."""

    requests: int
    duration_s: float
    rps: float
    errors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p99", "p999"


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> LoadResult:
    """wrk's report (with --latency), plus the BENCH line of bench/wrk_report.lua when present."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    if not m:
        raise ValueError(f"not a wrk report:\n{text}")
    requests, duration_s = int(m.group(1)), _ms(m.group(2), m.group(3)) / 1e3
    rps_m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    rps = float(rps_m.group(1)) if rps_m else requests / duration_s
    errors = 0
    if se := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(g) for g in se.groups())
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(non2xx.group(1))
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        latency[f"p{pct}"] = _ms(value, unit)
    if bench := re.search(r"^BENCH (\{.*\})\s*$", text, re.M):
        doc = json.loads(bench.group(1))
        latency.update({k: doc[f"{k}_us"] / 1e3 for k in ("p50", "p90", "p99", "p999")})
    return LoadResult(requests, duration_s, rps, errors, latency)


def parse_h2load(text: str) -> LoadResult:
    """h2load's summary: 'finished in', 'requests:' and 'status codes:' lines."""
    fin = re.search(r"^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text, re.M)
    req = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout", text, re.M)
    if not fin or not req:
        raise ValueError(f"not an h2load report:\n{text}")
    # h2load counts in "failed" both the errored/timed-out requests and the 4xx/5xx responses.
    done, failed = int(req.group(3)), int(req.group(5))
    return LoadResult(done, _ms(fin.group(1), fin.group(2)) / 1e3, float(fin.group(3)), failed)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def h2load_log_latency(path: Path) -> dict[str, float]:
    """p50/p99/p999 in ms from h2load --log-file lines: start-us TAB status TAB duration-us."""
    durations = sorted(int(line.split("\t")[2]) / 1e3 for line in path.read_text().splitlines() if line.strip())
    return {name: percentile(durations, q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}


def fortio_access_log_latency(path: Path) -> dict[str, float]:
    """p50/p90/p99/p999 in ms, nearest rank, from `fortio load -access-log-file` (JSON lines, one per
    request, "latency" in seconds to the microsecond): exact where fortio's own percentiles are
    interpolated within its histogram's buckets."""
    durations = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            durations.append(float(json.loads(line)["latency"]) * 1e3)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a fortio access log line ({e}): {line[:200]}") from e
    if not durations:
        raise ValueError(f"{path}: no requests logged")
    durations.sort()
    return {name: percentile(durations, q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}


FORTIO_PERCENTILES = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p999"}


def parse_fortio_json(text: str) -> LoadResult:
    """`fortio load -json FILE`: requests made, their rate, non-200 answers and socket errors
    (RetCodes "-1") as errors, and the latency percentiles fortio computed from its histogram
    (asked for with -p; interpolated within buckets of -r resolution)."""
    try:
        doc = json.loads(text)
        hist = doc["DurationHistogram"]
        requests, duration_s = int(hist["Count"]), doc["ActualDuration"] / 1e9
        codes = {str(code): int(n) for code, n in doc.get("RetCodes", {}).items()}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a fortio JSON result ({e}):\n{text[:500]}") from e
    latency = {FORTIO_PERCENTILES[p["Percentile"]]: p["Value"] * 1e3
               for p in hist.get("Percentiles", []) if p["Percentile"] in FORTIO_PERCENTILES}
    errors = requests - codes.get("200", 0)
    return LoadResult(requests, duration_s, requests / duration_s if duration_s else 0.0, errors, latency)


# === syscalls ===


def parse_perf_syscalls(text: str) -> dict[str, int]:
    """`perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_<name>,...` output: count per
    syscall named, plus "other" (the raw total less the named ones); zero counts left out."""
    counts: dict[str, int] = {}
    total = None
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            continue  # comments, blank lines, "<not counted>"
        if parts[2] == "raw_syscalls:sys_enter":
            total = int(parts[0])
        elif parts[2].startswith("syscalls:sys_enter_") and int(parts[0]) > 0:
            counts[parts[2].removeprefix("syscalls:sys_enter_")] = int(parts[0])
    if total is not None and total > sum(counts.values()):
        counts["other"] = total - sum(counts.values())
    return counts


def parse_strace_summary(text: str) -> dict[str, int]:
    """`strace -c` table: count per syscall."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) in (5, 6) and parts[0].replace(".", "", 1).isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts
