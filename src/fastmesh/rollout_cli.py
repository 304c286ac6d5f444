"""`fastmesh rollout status`: the rollouts of a running proxy, read from its admin API (`GET /rollouts`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

BAR = 20
_GATE_NAMES = {"min_success_rate": "minSuccessRate", "max_success_rate_drop": "maxSuccessRateDrop",
               "max_p99_ms": "maxP99Ms", "max_p99_ratio": "maxP99Ratio", "min_requests": "minRequests"}


def add_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    rollout = commands.add_parser("rollout", help="progressive canary rollouts (see docs/config.md, Rollout)",
                                  formatter_class=formatter)
    actions = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="each rollout's steps, progress and gate figures",
                                formatter_class=formatter)
    status.add_argument("--admin", default="127.0.0.1:15000", metavar="IP:PORT",
                        help="the proxy's admin API (default 127.0.0.1:15000)")
    status.add_argument("--json", action="store_true", help="print the admin API's JSON as it is")


def fetch(admin: str) -> list[dict[str, Any]]:
    import http.client  # here: the proxy process parses the same command line and never needs it

    host, _, port = admin.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        conn.request("GET", "/rollouts")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"GET /rollouts answered {response.status}: {body[:200]!r}")
    rollouts: list[dict[str, Any]] = json.loads(body)["rollouts"]
    return rollouts


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def render(r: dict[str, Any]) -> str:
    steps, step, phase = r["steps"], r["step"], r["phase"]
    lines = [f"{r['name']}  {phase}  canary {r['canary_weight']}%  ({r['canary']} vs stable {r['stable']})"]
    for i, percent in enumerate(steps):
        if phase == "Promoted" or i < step:
            mark, bar = "passed", _bar(1.0)
        elif i == step and phase == "Progressing":
            mark, bar = f"{r['step_elapsed_s']:.1f}s/{r['interval_s']:g}s", _bar(r["step_elapsed_s"] / r["interval_s"])
        elif i == step and phase == "Failed":
            mark, bar = "FAILED", _bar(0.0)
        else:
            mark, bar = "", _bar(0.0)
        lines.append(f"  step {i} {percent:>3}% {bar} {mark}".rstrip())
    gates = ", ".join(f"{_GATE_NAMES[k]} {v}" for k, v in r["gates"].items() if v is not None)
    lines.append(f"  gates: {gates}")
    last = r.get("last")
    if last is not None:
        lines.append(f"  last window: {last['decision']} ({last['reason']})")
        lines.append(f"    canary {last['canary_requests']} responses, success {_num(last['canary_success_rate'], '%')},"
                     f" p99 {_num(last['canary_p99_ms'], ' ms')}")
        lines.append(f"    stable {last['stable_requests']} responses, success {_num(last['stable_success_rate'], '%')},"
                     f" p99 {_num(last['stable_p99_ms'], ' ms')}")
    if r.get("reason"):
        lines.append(f"  reason: {r['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        rollouts = fetch(args.admin)
    except (OSError, ValueError, KeyError) as e:
        print(f"fastmesh rollout status: cannot read http://{args.admin}/rollouts: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"rollouts": rollouts}, indent=1))
    elif not rollouts:
        print("no rollouts")
    else:
        print("\n\n".join(render(r) for r in rollouts))
    return 0
