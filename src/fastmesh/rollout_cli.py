"""`fastmesh rollout status|start|pause|resume|abort|promote`: the rollouts of a running proxy, through its
admin API (`GET /rollouts`, `POST /rollouts/<namespace>/<name>/<action>` with the admin bearer token)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

BAR = 20
_GATE_NAMES = {"min_success_rate": "minSuccessRate", "max_success_rate_drop": "maxSuccessRateDrop",
               "max_p99_ms": "maxP99Ms", "max_p99_ratio": "maxP99Ratio", "min_requests": "minRequests"}


def add_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    rollout = commands.add_parser("rollout", help="progressive canary rollouts (see docs/config.md, Rollout)",
                                  formatter_class=formatter)
    actions = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="each rollout's steps, progress and gate figures",
                                formatter_class=formatter)
    _admin_argument(status)
    status.add_argument("--json", action="store_true", help="print the admin API's JSON as it is")
    status.add_argument("--watch", action="store_true",
                        help="refresh until every rollout is finished (exit 0 when all succeeded, else 1)")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="with --watch: seconds between refreshes (default 1)")
    status.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    helps = {"start": "start a rollout declared `paused: true` (Pending, 0 %% canary) at its first step",
             "pause": "hold the current step: weights stay, nothing is judged",
             "resume": "go on with a paused rollout (the step is judged over a fresh window)",
             "abort": "send 100 %% to stable now and mark the rollout Aborted",
             "promote": "send 100 %% to canary now, skipping the gates, and mark the rollout Succeeded"}
    for verb, text in helps.items():
        action = actions.add_parser(verb, help=text, formatter_class=formatter)
        action.add_argument("name", metavar="NAME", help="the rollout, NAMESPACE/NAME (NAME alone: default/NAME)")
        _admin_argument(action)
        action.add_argument("--token-file", metavar="FILE", default=os.environ.get("FASTMESH_ADMIN_TOKEN_FILE"),
                            help="the admin bearer token (spec.admin.tokenFile; default $FASTMESH_ADMIN_TOKEN_FILE)")
        action.add_argument("--kubernetes", action="store_true",
                            help="the Rollout is in a cluster: ask its controller through the object (annotation "
                                 "fastmesh.io/rollout-action) and wait for status.lastAction")
        _kube_arguments(action)
        action.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                            help="with --kubernetes: how long to wait for the controller (default 30)")


    controller = actions.add_parser(
        "controller", formatter_class=formatter,
        help="drive the Rollouts of a cluster: judge the proxies' metrics, write HTTPRoute weights, Rollout "
             "status and Events (until SIGTERM)")
    controller.add_argument("--kubernetes", action="store_true", required=True,
                            help="the Rollouts live in the cluster (the only mode: in file mode the proxy drives them)")
    _kube_arguments(controller)
    controller.add_argument("--kube-namespace", metavar="NAME", help="only this namespace (default: all)")
    controller.add_argument("--proxy-admin", action="append", default=[], metavar="IP:PORT",
                            help="a proxy's admin API whose /metrics are judged (repeatable: the counters are summed)")
    controller.add_argument("--proxy-selector", metavar="LABELS",
                            help="also judge the Running Pods matching this label selector (e.g. app=fastmesh), "
                                 "at their podIP and --proxy-admin-port (in --kube-namespace, else all)")
    controller.add_argument("--proxy-admin-port", type=int, default=15000, metavar="PORT",
                            help="with --proxy-selector: the proxies' admin port (default 15000)")
    controller.add_argument("--admin-address", default="127.0.0.1:15090", metavar="IP:PORT",
                            help="serve GET /rollouts here, for `fastmesh rollout status --admin` (default "
                                 "127.0.0.1:15090; port 0: any free port)")


def _kube_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help="with --kubernetes: kubeconfig (default $KUBECONFIG, ~/.kube/config, else in-cluster)")
    parser.add_argument("--kube-context", metavar="NAME", help="with --kubernetes: kubeconfig context (default: current)")


def _admin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", default="127.0.0.1:15000", metavar="IP:PORT",
                        help="the proxy's admin API (default 127.0.0.1:15000)")


def _call(admin: str, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import http.client  # here: the proxy process parses the same command line and never needs it

    host, _, port = admin.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def fetch(admin: str) -> list[dict[str, Any]]:
    status, body = _call(admin, "GET", "/rollouts")
    if status != 200:
        raise OSError(f"GET /rollouts answered {status}: {body[:200]!r}")
    rollouts: list[dict[str, Any]] = json.loads(body)["rollouts"]
    return rollouts


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


FINISHED = ("Succeeded", "Failed", "Aborted")


def render(r: dict[str, Any]) -> str:
    steps, step, phase = r["steps"], r["step"], r["phase"]
    lines = [f"{r['name']}  {phase}  weights: stable {100 - r['canary_weight']}% canary {r['canary_weight']}%"
             f"  ({r['canary']} vs stable {r['stable']})"]
    for i, percent in enumerate(steps):
        if phase == "Succeeded" or i < step:
            mark, bar = "passed", _bar(1.0)
        elif i == step and phase == "Progressing":
            elapsed, interval = r["step_elapsed_s"], r["interval_s"]
            mark = f"{elapsed:.1f}s/{interval:g}s, {max(0.0, interval - elapsed):.1f}s left"
            bar = _bar(elapsed / interval if interval else 1.0)
        elif i == step and phase in ("Failed", "Aborted", "Paused", "Pending"):
            mark, bar = phase.upper(), _bar(0.0)
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


def frame(rollouts: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps({"rollouts": rollouts}, indent=1)
    return "\n\n".join(render(r) for r in rollouts) if rollouts else "no rollouts"


def run(args: argparse.Namespace) -> int:
    if args.rollout_command == "controller":
        return controller(args)
    if args.rollout_command != "status":
        return act(args)
    out: TextIO = sys.stdout
    tty = out.isatty()
    shown = 0
    while True:
        try:
            rollouts = fetch(args.admin)
        except (OSError, ValueError, KeyError) as e:
            print(f"fastmesh rollout status: cannot read http://{args.admin}/rollouts: {e}", file=sys.stderr)
            return 1
        text = frame(rollouts, args.json)
        if not args.watch:
            print(text)
            return 0
        if tty:  # redraw in place
            out.write("\x1b[H\x1b[2J" + text + "\n")
        else:  # a log: one frame after the other
            out.write(f"--- {time.strftime('%H:%M:%S')}\n{text}\n")
        out.flush()
        shown += 1
        if rollouts and all(r["phase"] in FINISHED for r in rollouts):
            return 0 if all(r["phase"] == "Succeeded" for r in rollouts) else 1
        if args.count is not None and shown >= args.count:
            return 0
        time.sleep(args.interval)


def act(args: argparse.Namespace) -> int:
    import urllib.parse

    verb, name = args.rollout_command, args.name if "/" in args.name else f"default/{args.name}"
    if args.kubernetes:
        return act_in_cluster(args, verb, name)
    headers = {}
    if args.token_file:
        try:
            with open(args.token_file) as f:
                headers["authorization"] = f"Bearer {f.read().strip()}"
        except OSError as e:
            print(f"fastmesh rollout {verb}: cannot read the token file {args.token_file}: {e.strerror}",
                  file=sys.stderr)
            return 2
    path = f"/rollouts/{urllib.parse.quote(name)}/{verb}"
    try:
        status, body = _call(args.admin, "POST", path, headers)
    except OSError as e:
        print(f"fastmesh rollout {verb}: cannot reach http://{args.admin}: {e}", file=sys.stderr)
        return 1
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"error": body.decode(errors="replace").strip()}
    if status != 200:
        print(f"fastmesh rollout {verb} {name}: {status}: {doc.get('error', doc)}", file=sys.stderr)
        return 1
    print(render(doc))
    return 0


def _client(args: argparse.Namespace) -> Any:
    """A fastmesh.kube Client from --kubeconfig/--kube-context; KubeConfigError if it cannot be had."""
    from pathlib import Path

    from fastmesh.kube.kubeconfig import connect
    from fastmesh.kube.source import Client

    return Client(connect(Path(args.kubeconfig) if args.kubeconfig else None, args.kube_context))


def controller(args: argparse.Namespace) -> int:
    from fastmesh.kube.kubeconfig import KubeConfigError
    from fastmesh.kube.rollouts import run_controller
    from fastmesh.runtime import EventWriter, setup_logging

    if not args.proxy_admin and not args.proxy_selector:
        print("fastmesh rollout controller: say which proxies to judge: --proxy-admin IP:PORT or --proxy-selector "
              "LABELS", file=sys.stderr)
        return 2
    setup_logging()
    try:
        client = _client(args)
    except KubeConfigError as e:
        print(f"fastmesh rollout controller: {e}", file=sys.stderr)
        return 2
    return run_controller(client, args.kube_namespace, args.proxy_admin, EventWriter(sys.stdout),
                          admin_address=args.admin_address, proxy_selector=args.proxy_selector,
                          proxy_admin_port=args.proxy_admin_port)


def act_in_cluster(args: argparse.Namespace, verb: str, name: str) -> int:
    """Set the action annotation on the Rollout; wait until the controller has taken it (status.lastAction)."""
    from fastmesh.kube import KubeError
    from fastmesh.kube.kubeconfig import KubeConfigError
    from fastmesh.kube.rollouts import ACTION_ANNOTATION, ROLLOUTS
    from fastmesh.kube.source import collection_path

    namespace, _, short = name.partition("/")
    path = f"{collection_path(ROLLOUTS[1], ROLLOUTS[2], namespace)}/{short}"
    try:
        client = _client(args)
        conn = client.open()
        try:
            status, answer = client.call(conn, path, "PATCH", {"metadata": {"annotations": {ACTION_ANNOTATION: verb}}},
                                         "application/merge-patch+json")
            if status != 200:
                print(f"fastmesh rollout {verb} {name}: {status}: {answer.get('message', answer)}", file=sys.stderr)
                return 1
            asked = answer["metadata"]["resourceVersion"]
            deadline = time.monotonic() + args.wait
            while time.monotonic() < deadline:
                status, obj = client.call(conn, path)
                annotations = obj.get("metadata", {}).get("annotations") or {}
                last = (obj.get("status") or {}).get("lastAction") or {}
                if status == 200 and ACTION_ANNOTATION not in annotations and last.get("action") == verb and \
                        int(obj["metadata"]["resourceVersion"]) > int(asked):
                    now = obj["status"]
                    where = f" (phase {now['phase']}, canary {now.get('canaryWeight')}%)" if "phase" in now else ""
                    print(f"{name}: {verb}: {last['result']}{': ' + last['message'] if last.get('message') else ''}"
                          f"{where}")
                    return 0 if last["result"] == "Done" else 1
                time.sleep(0.2)
        finally:
            conn.close()
    except (KubeConfigError, KubeError) as e:
        print(f"fastmesh rollout {verb}: {e}", file=sys.stderr)
        return 2
    print(f"fastmesh rollout {verb} {name}: the controller did not take the action within {args.wait:g}s "
          "(is `fastmesh rollout controller --kubernetes` running?)", file=sys.stderr)
    return 1
