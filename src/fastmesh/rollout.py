"""The rollout controller: moves a route rule's split between stable and canary, step by step.

No Python runs per request: the engine splits by weight; at each step the controller reads the engine's
cumulative per-(route, backend) counters and latency histograms, takes the difference since the step
began, judges the gates, and either advances (the runtime compiles the same snapshot with new weights
and applies it: the hot-reload path), holds (too few canary responses), or rolls back (100 % stable,
phase Failed with the reason). Operators start (a Rollout declared `paused: true` waits, Pending, at
0 %), pause, resume, abort (100 % stable, Aborted) or promote (100 % canary at once, Succeeded).

Where progress is kept is a `Store`: in file mode `FileStore`, `<config>.rollout-state.json` written
atomically and read at start, so a restarted proxy resumes at the step it was on (with a fresh window:
the engine's counters restart with it); in Kubernetes mode the Rollout's status (fastmesh.kube.rollouts).
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
from typing import Any, Protocol

log = logging.getLogger("fastmesh.rollout")

PENDING, PROGRESSING, PAUSED = "Pending", "Progressing", "Paused"
SUCCEEDED, FAILED, ABORTED = "Succeeded", "Failed", "Aborted"
PHASES = (PENDING, PROGRESSING, PAUSED, SUCCEEDED, FAILED, ABORTED)
FINISHED = (SUCCEEDED, FAILED, ABORTED)
ACTIONS = ("start", "pause", "resume", "abort", "promote")

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
        if self.phase in (FAILED, ABORTED, PENDING):
            return 0
        if self.phase == SUCCEEDED:
            return 100
        return int(self.plan["steps"][self.step])

    def persisted(self) -> dict[str, Any]:
        return {"key": self.key, "phase": self.phase, "step": self.step, "reason": self.reason}

    def restore(self, saved: dict[str, Any] | None) -> bool:
        """Take the phase, step and reason of `saved` when it is of this plan; False if not."""
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return False
        phase = "Succeeded" if saved.get("phase") == "Promoted" else saved.get("phase")  # files of v0.x
        step = saved.get("step")
        if phase not in PHASES or not isinstance(step, int) or not 0 <= step < len(self.plan["steps"]):
            return False
        self.phase, self.step, self.reason = phase, step, str(saved.get("reason", ""))
        return True

    def view(self, now: float) -> dict[str, Any]:
        p = self.plan
        elapsed = 0.0 if self.started is None or self.phase != PROGRESSING else now - self.started
        return {
            "name": p["name"], "route": p["route"], "stable": p["stable"], "canary": p["canary"],
            "phase": self.phase, "step": self.step, "steps": p["steps"], "canary_weight": self.canary_percent,
            "stable_weight": 100 - self.canary_percent, "interval_s": p["interval_s"],
            "step_elapsed_s": round(elapsed, 3), "step_left_s": round(max(0.0, p["interval_s"] - elapsed), 3),
            "reason": self.reason,
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


class Store(Protocol):
    """Where the progress of the rollouts is kept across restarts."""

    def load(self) -> dict[str, Any]:
        """name -> what `Progress.persisted()` gave when last saved."""

    def save(self, rollouts: dict[str, Progress]) -> None:
        """Keep the progress of every current rollout (and only theirs)."""


class FileStore:
    """`<config>.rollout-state.json`, replaced atomically at each change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("cannot read rollout state %s: %s; rollouts start over", self.path, e)
            return {}
        rollouts = doc.get("rollouts", {}) if isinstance(doc, dict) else {}
        return rollouts if isinstance(rollouts, dict) else {}

    def save(self, rollouts: dict[str, Progress]) -> None:
        try:
            write_atomically(self.path, {"rollouts": {name: p.persisted() for name, p in rollouts.items()}})
        except OSError as e:
            log.error("cannot write rollout state %s: %s", self.path, e)


class ActionError(Exception):
    """An operator's action that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RolloutController:
    """Drives every Rollout it is given (`configure`). `reapply` makes the data plane serve `weights()`
    (file mode: the snapshot compiled again; Kubernetes: the HTTPRoutes written); `stats` reads the
    per-(route, backend) counters (the engine's, or the proxies' /metrics summed); `emit` writes an
    event; `store` keeps the progress."""

    def __init__(self, store: Store, stats: Callable[[], dict[str, Any]], reapply: Callable[[], Awaitable[bool]],
                 emit: Callable[..., None], tick_s: float = 0.05) -> None:
        self.store = store
        self.stats = stats
        self.reapply = reapply
        self.emit = emit
        self.tick_s = tick_s
        self.rollouts: dict[str, Progress] = {}
        self._saved = store.load()

    def _save(self) -> None:
        self._saved = {name: p.persisted() for name, p in self.rollouts.items()}
        self.store.save(self.rollouts)

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
            if progress.restore(self._saved.get(name)):
                self.emit("rollout", name=name, decision="restored", phase=progress.phase, step=progress.step,
                          canary_weight=progress.canary_percent)
            elif plan.get("paused"):
                progress.phase = PENDING
                self.emit("rollout", name=name, decision="pending", phase=PENDING, step=0, canary_weight=0,
                          reason="declared paused: waits for `fastmesh rollout start`")
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
            self._begin(p, stats, now)

    @staticmethod
    def _begin(p: Progress, stats: dict[str, Any], now: float) -> None:
        p.started = now
        p.base_canary = window(stats, p.plan["route"], p.plan["canary"])
        p.base_stable = window(stats, p.plan["route"], p.plan["stable"])

    async def act(self, name: str, action: str) -> dict[str, Any]:
        """An operator's action on rollout `name`; its view after. ActionError when it cannot be done:
        start (Pending -> step 0), pause (Progressing -> Paused: no judging, the weights stay), resume
        (Paused -> Progressing, a fresh window), abort (-> 100 % stable, Aborted), promote (-> 100 %
        canary at once, gates skipped, Succeeded)."""
        p = self.rollouts.get(name)
        if p is None:
            known = ", ".join(sorted(self.rollouts)) or "none"
            raise ActionError(404, f"no rollout {name!r} (rollouts: {known})")
        if action not in ACTIONS:
            raise ActionError(400, f"unknown action {action!r} (actions: {', '.join(ACTIONS)})")
        allowed = {"start": (PENDING,), "pause": (PROGRESSING,), "resume": (PAUSED,),
                   "abort": (PENDING, PROGRESSING, PAUSED), "promote": (PENDING, PROGRESSING, PAUSED)}[action]
        if p.phase not in allowed:
            hint = {PENDING: "; it has not started: use start", PAUSED: "; it is paused: use resume",
                    PROGRESSING: "; it is running already"}.get(p.phase, "; it is finished: change its steps or "
                                                                        "backends to roll out again")
            raise ActionError(409, f"cannot {action} rollout {name}: it is {p.phase}{hint}")
        step, before = p.step, p.canary_percent
        if action == "start":
            p.phase, p.step, p.reason = PROGRESSING, 0, ""
        elif action == "pause":
            p.phase, p.reason = PAUSED, f"paused by the operator at step {step}"
        elif action == "resume":
            p.phase, p.reason = PROGRESSING, ""
        elif action == "abort":
            p.phase, p.reason = ABORTED, f"aborted by the operator at step {step} ({before}% canary)"
        else:
            p.phase, p.step = SUCCEEDED, len(p.plan["steps"]) - 1
            p.reason = f"promoted by the operator at step {step} ({before}% canary), gates skipped"
        p.started = p.base_canary = p.base_stable = None
        p.last = None if action in ("start", "resume") else p.last
        self._save()
        applied = True
        if p.canary_percent != before:
            applied = await self.reapply()  # its windows begin in applied()
        elif p.phase == PROGRESSING:
            self._begin(p, self.stats(), time.monotonic())
        decision = {"start": "started", "pause": "paused", "resume": "resumed", "abort": "aborted",
                    "promote": "promoted"}[action]
        log.info("rollout %s: %s by the operator at step %d", name, decision, step)
        self.emit("rollout", name=name, decision=decision, by="operator", phase=p.phase, step=step,
                  canary_weight=before, next_step=p.step, next_canary_weight=p.canary_percent,
                  reason=p.reason, applied=applied)
        return p.view(time.monotonic())

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
        # window_s: how long the judged window ran (one interval, plus the tick that noticed it ended)
        fields = {"name": name, "step": step, "canary_weight": p.canary_percent, "at": round(time.time(), 3),
                  "window_s": round(now - (p.started or now), 3), **verdict.figures}
        if verdict.decision == "hold":
            p.started = now  # judged again one interval on, over the whole window since the step began
            self.emit("rollout", decision="hold", reason=verdict.reason, **fields)
            return
        if verdict.decision == "fail":
            p.phase, p.reason = FAILED, f"step {step} ({p.plan['steps'][step]}%): {verdict.reason}"
            decision = "rolled_back"
        elif step + 1 >= len(p.plan["steps"]) - 1:  # the last step (100 %) is the promotion
            p.phase, p.step, p.reason = SUCCEEDED, len(p.plan["steps"]) - 1, "every step passed"
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
