"""The rollout controller (file mode): moves a route rule's split between stable and canary, step by step.

No Python runs per request: the engine splits by weight; at each step the controller reads the engine's
cumulative per-(route, backend) counters and latency histograms, takes the difference since the step
began, judges the gates, and either advances (the runtime compiles the same snapshot with new weights
and applies it: the hot-reload path), holds (too few canary responses), or rolls back (100 % stable,
phase Failed with the reason). Progress is written atomically to `<config>.rollout-state.json`, read at
start: a restarted proxy resumes at the step it was on (with a fresh window: the engine's counters
restart with it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fastmesh.rollout")

PROGRESSING, PROMOTED, FAILED = "Progressing", "Promoted", "Failed"

# === judging (pure) ===


@dataclass
class Window:
    """Responses of one backend on one route: by failure (5xx) and by latency bucket."""

    requests: int = 0
    failures: int = 0
    buckets: list[int] = field(default_factory=list)
    inf: int = 0

    def minus(self, base: Window) -> Window:
        buckets = [a - (base.buckets[i] if i < len(base.buckets) else 0) for i, a in enumerate(self.buckets)]
        return Window(self.requests - base.requests, self.failures - base.failures, buckets, self.inf - base.inf)

    @property
    def success_rate(self) -> float | None:
        """Percent of responses that are not 5xx; None without responses."""
        return None if self.requests == 0 else 100.0 * (self.requests - self.failures) / self.requests


def window(stats: dict[str, Any], route: str, backend: str) -> Window:
    """The cumulative counters of (route, backend) in the engine's stats document."""
    out = Window(buckets=[0] * len(stats.get("latency_bounds_ms", [])))
    for entry in stats.get("routes", []):
        if entry.get("route") != route or entry.get("backend") != backend:
            continue
        status = entry.get("status", {})
        out.requests += sum(status.values())
        out.failures += status.get("5xx", 0)
        latency = entry.get("latency", {})
        for i, n in enumerate(latency.get("buckets", [])):
            if i < len(out.buckets):
                out.buckets[i] += n
        out.inf += latency.get("inf", 0)
    return out


def quantile(q: float, bounds: list[float], buckets: list[int], inf: int) -> float | None:
    """The q-quantile (ms) of a histogram with non-cumulative `buckets` (one per upper bound in `bounds`)
    and `inf` above the last bound, interpolated linearly within its bucket (Prometheus'
    histogram_quantile). None without observations; +inf when it falls above the last bound."""
    count = sum(buckets) + inf
    if count == 0:
        return None
    rank = q * count
    seen = 0
    lower = 0.0
    for upper, n in zip(bounds, buckets):
        if n and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return math.inf


@dataclass(frozen=True)
class Verdict:
    decision: str  # "pass" | "hold" | "fail"
    reason: str
    figures: dict[str, Any]


def judge(gates: dict[str, Any], bounds: list[float], canary: Window, stable: Window) -> Verdict:
    """Judge a step's window: hold below `min_requests` canary responses, else pass or fail (first failing gate)."""
    c_rate, s_rate = canary.success_rate, stable.success_rate
    c_p99 = quantile(0.99, bounds, canary.buckets, canary.inf)
    s_p99 = quantile(0.99, bounds, stable.buckets, stable.inf)
    figures = {
        "canary_requests": canary.requests, "stable_requests": stable.requests,
        "canary_success_rate": c_rate, "stable_success_rate": s_rate,
        "canary_p99_ms": _finite(c_p99), "stable_p99_ms": _finite(s_p99),
    }
    need = gates["min_requests"]
    if canary.requests < need:
        return Verdict("hold", f"{canary.requests} canary responses, the step needs {need}", figures)
    comparing = gates.get("max_success_rate_drop") is not None or gates.get("max_p99_ratio") is not None
    if comparing and stable.requests == 0:
        return Verdict("hold", "no stable responses to compare with", figures)
    assert c_rate is not None and c_p99 is not None
    problems = []
    if (x := gates.get("min_success_rate")) is not None and c_rate < x:
        problems.append(f"canary success rate {c_rate:.2f}% < minSuccessRate {x}%")
    if (y := gates.get("max_success_rate_drop")) is not None and s_rate is not None and s_rate - c_rate > y:
        problems.append(f"canary success rate {c_rate:.2f}% is {s_rate - c_rate:.2f} points below stable's "
                        f"{s_rate:.2f}% (maxSuccessRateDrop {y})")
    if (z := gates.get("max_p99_ms")) is not None and c_p99 > z:
        problems.append(f"canary p99 {c_p99:.1f} ms > maxP99Ms {z}")
    if (r := gates.get("max_p99_ratio")) is not None and s_p99 is not None and c_p99 > r * s_p99:
        problems.append(f"canary p99 {c_p99:.1f} ms > {r} x stable's {s_p99:.1f} ms (maxP99Ratio)")
    if problems:
        return Verdict("fail", "; ".join(problems), figures)
    return Verdict("pass", "gates passed", figures)


def _finite(value: float | None) -> float | str | None:
    return "+Inf" if value is not None and math.isinf(value) else value


# === controller ===


@dataclass
class Progress:
    """Where one rollout is; `step` indexes the plan's steps."""

    plan: dict[str, Any]
    phase: str = PROGRESSING
    step: int = 0
    reason: str = ""
    started: float | None = None  # monotonic, when the step's window began (None: not yet)
    base_canary: Window | None = None
    base_stable: Window | None = None
    last: Verdict | None = None

    @property
    def key(self) -> list[Any]:
        p = self.plan
        return [p["route"], p["stable"], p["canary"], p["steps"]]

    @property
    def canary_percent(self) -> int:
        if self.phase == FAILED:
            return 0
        if self.phase == PROMOTED:
            return 100
        return int(self.plan["steps"][self.step])

    def persisted(self) -> dict[str, Any]:
        return {"key": self.key, "phase": self.phase, "step": self.step, "reason": self.reason}

    def view(self, now: float) -> dict[str, Any]:
        p = self.plan
        elapsed = 0.0 if self.started is None else now - self.started
        return {
            "name": p["name"], "route": p["route"], "stable": p["stable"], "canary": p["canary"],
            "phase": self.phase, "step": self.step, "steps": p["steps"], "canary_weight": self.canary_percent,
            "interval_s": p["interval_s"], "step_elapsed_s": round(elapsed, 3), "reason": self.reason,
            "gates": p["gates"],
            "last": None if self.last is None else {"decision": self.last.decision, "reason": self.last.reason,
                                                    **self.last.figures},
        }


def state_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".rollout-state.json")


def write_atomically(path: Path, doc: Any) -> None:
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(aside, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, path)


class RolloutController:
    """Drives every Rollout of the config. `reapply` compiles the current snapshot with `weights()` and
    applies it; `stats` reads the engine's counters; `emit` writes an event."""

    def __init__(self, path: Path, stats: Callable[[], dict[str, Any]], reapply: Callable[[], Awaitable[bool]],
                 emit: Callable[..., None], tick_s: float = 0.05) -> None:
        self.path = path
        self.stats = stats
        self.reapply = reapply
        self.emit = emit
        self.tick_s = tick_s
        self.rollouts: dict[str, Progress] = {}
        self._saved = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("cannot read rollout state %s: %s; rollouts start over", self.path, e)
            return {}
        return doc.get("rollouts", {}) if isinstance(doc, dict) else {}

    def _save(self) -> None:
        self._saved = {name: p.persisted() for name, p in self.rollouts.items()}
        try:
            write_atomically(self.path, {"rollouts": self._saved})
        except OSError as e:
            log.error("cannot write rollout state %s: %s", self.path, e)

    def configure(self, plans: list[dict[str, Any]]) -> None:
        """The Rollouts of a config just compiled: unchanged ones go on, new ones start (or resume from
        the state file), removed ones are forgotten. Call before applying the snapshot."""
        current = {}
        for plan in plans:
            name = plan["name"]
            known = self.rollouts.get(name)
            if known is not None and known.key == Progress(plan).key:
                known.plan = plan
                current[name] = known
                continue
            progress = Progress(plan)
            saved = self._saved.get(name)
            if saved is not None and saved.get("key") == progress.key and saved.get("phase") in (
                    PROGRESSING, PROMOTED, FAILED):
                progress.phase, progress.step, progress.reason = saved["phase"], int(saved["step"]), saved["reason"]
                self.emit("rollout", name=name, decision="resumed", phase=progress.phase, step=progress.step,
                          canary_weight=progress.canary_percent)
            else:
                self.emit("rollout", name=name, decision="started", phase=progress.phase, step=0,
                          canary_weight=progress.canary_percent)
            current[name] = progress
        self.rollouts = current
        self._save()

    def applied(self) -> None:
        """The engine now serves `weights()`: the windows of steps that begin start here."""
        waiting = [p for p in self.rollouts.values() if p.phase == PROGRESSING and p.started is None]
        if not waiting:
            return
        stats, now = self.stats(), time.monotonic()
        for p in waiting:
            p.started = now
            p.base_canary = window(stats, p.plan["route"], p.plan["canary"])
            p.base_stable = window(stats, p.plan["route"], p.plan["stable"])

    def weights(self) -> dict[str, dict[str, int]]:
        """route name -> backend -> weight, for every rollout."""
        out: dict[str, dict[str, int]] = {}
        for p in self.rollouts.values():
            canary = p.canary_percent
            out.setdefault(p.plan["route"], {}).update({p.plan["stable"]: 100 - canary, p.plan["canary"]: canary})
        return out

    def view(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [p.view(now) for p in self.rollouts.values()]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s if self.rollouts else 0.5)
            await self.tick()

    async def tick(self) -> None:
        now = time.monotonic()
        stats: dict[str, Any] | None = None
        for p in list(self.rollouts.values()):
            if p.phase != PROGRESSING:
                continue
            if p.started is not None and now - p.started < p.plan["interval_s"]:
                continue
            stats = stats if stats is not None else self.stats()
            canary = window(stats, p.plan["route"], p.plan["canary"])
            stable = window(stats, p.plan["route"], p.plan["stable"])
            if p.started is None or p.base_canary is None or p.base_stable is None:
                p.started, p.base_canary, p.base_stable = now, canary, stable
                continue
            verdict = judge(p.plan["gates"], stats.get("latency_bounds_ms", []),
                            canary.minus(p.base_canary), stable.minus(p.base_stable))
            p.last = verdict
            await self._decide(p, verdict, now)

    async def _decide(self, p: Progress, verdict: Verdict, now: float) -> None:
        name, step = p.plan["name"], p.step
        fields = {"name": name, "step": step, "canary_weight": p.canary_percent, **verdict.figures}
        if verdict.decision == "hold":
            p.started = now  # judged again one interval on, over the whole window since the step began
            self.emit("rollout", decision="hold", reason=verdict.reason, **fields)
            return
        if verdict.decision == "fail":
            p.phase, p.reason = FAILED, f"step {step} ({p.plan['steps'][step]}%): {verdict.reason}"
            decision = "rolled_back"
        elif step + 1 >= len(p.plan["steps"]) - 1:  # the last step (100 %) is the promotion
            p.phase, p.step, p.reason = PROMOTED, len(p.plan["steps"]) - 1, "every step passed"
            decision = "promoted"
        else:
            p.step += 1
            decision = "advanced"
        p.started = p.base_canary = p.base_stable = None  # the next window begins once applied
        self._save()
        applied = await self.reapply()
        log.info("rollout %s: %s at step %d: %s", name, decision, step, p.reason or verdict.reason)
        self.emit("rollout", decision=decision, reason=p.reason if p.phase == FAILED else verdict.reason,
                  phase=p.phase, next_step=p.step, next_canary_weight=p.canary_percent, applied=applied, **fields)


def override_weights(snapshot_json: str, weights: dict[str, dict[str, int]]) -> str:
    """The snapshot JSON with the weights of the named routes' backends replaced."""
    if not weights:
        return snapshot_json
    snapshot = json.loads(snapshot_json)
    for vhost in snapshot.get("vhosts", []):
        for route in vhost.get("routes", []):
            wanted = weights.get(route.get("name"))
            if wanted is None:
                continue
            for backend in route.get("backends", []):
                if backend.get("backend") in wanted:
                    backend["weight"] = wanted[backend["backend"]]
    return json.dumps(snapshot, separators=(",", ":"))
