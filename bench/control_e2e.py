#!/usr/bin/env python3
"""The control plane end to end at 10,000 Services / 100,000 endpoints through a real kube-apiserver (issue 6:
"control plane RSS ≤ 500 MB, full compile ≤ 2 s, one EndpointSlice change pushed to connected proxies in
≤ 50 ms").

    .venv/bin/python bench/control_e2e.py                        # 10,000 Services, 5 proxies, 20 changes
    .venv/bin/python bench/control_e2e.py --services 300 --proxies 2 --changes 5      # a smoke run
    .venv/bin/python bench/control_e2e.py --cluster DIR --no-load  # a cluster started and loaded before

1. Starts the test kube-apiserver (deploy/testcluster/, with more requests in flight: bench/kube_load.py) and
   creates the synthetic cluster in it (bench/synthetic_cluster.py: Services, EndpointSlices, HTTPRoutes,
   TrafficPolicies) with concurrent POSTs (HTTP/1.1 with aiohttp, or --http2 with httpx), showing
   progress; objects/s; bounded by --create-timeout.
2. Starts `fastmesh control --kubernetes` and measures its time from start to `synced` (every kind listed,
   the store made) and its RSS (VmHWM: peak; VmRSS: steady, after the proxies connected and after the
   changes).
3. Starts --proxies `fastmesh proxy --control-plane` (tokens of --views namespaces, so that many views): time
   to ready (the full state streamed, compiled, applied by the engine) and RSS (with the compiler child).
4. --changes EndpointSlice PATCHes through the API, one at a time; for each, on one clock (time.time()):
   the PATCH sent -> the control plane's watch event (`pushed` event: `watched_at`) -> the deltas queued
   (`queued_at`) -> written to every proxy's stream (`sent` event: `sent_at`) -> received by each proxy
   (its /stats `control_plane.last_message_at`) -> applied by its engine (its `reloaded` event).
   "Pushed to connected proxies" (the issue's ≤ 50 ms) is watched_at -> sent_at.
Writes bench/results/<date>-control-e2e.md (and .json) or --out. `run()` is also the smoke test's path
(tests/kube/test_control_e2e.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench import machine  # noqa: E402
from bench.control_scale import _cpu_s, _mem_available_mb, _stop_all, token_files  # noqa: E402
from bench.kube_load import APISERVER_FLAGS, count, create_all, renamespaced  # noqa: E402
from bench.kube_scale import _ProxyProcess, bench_main, pct  # noqa: E402
from bench.synthetic_cluster import changed_slice, cluster  # noqa: E402

TARGETS = {"push_ms": 50.0, "control_rss_mb": 500.0, "synced_s": 2.0}  # issue 6


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _tree(pid: int, field: str) -> float:
    """`field` (VmRSS, VmHWM) of the process and its descendants (a proxy and its compiler child), MB."""
    from bench.procs import process_tree

    return sum(_status_mb(p, field) for p in process_tree(pid))


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _received_at(admin: str) -> float:
    """When the proxy last received a message from the control plane (its /stats; 24 MB, ~6 s at 10k
    Services, the engine's per-upstream stats: asked of every proxy at once)."""
    return float(_get_json(f"{admin}/stats", timeout=120)["orchestrator"]["control_plane"]["last_message_at"])


class Timed(_ProxyProcess):
    """A fastmesh process whose stdout events are kept with the wall-clock time they were read."""

    OFFSET = time.time() - time.perf_counter()

    def wall(self, kind: str, after: int, timeout: float) -> tuple[float, dict[str, Any]]:
        """(time.time() it was read, the event) of the first `kind` event after the first `after`."""
        at = self.wait(kind, after, timeout)
        event = next(e for t, e in self.events[after:] if t == at and e.get("event") == kind)
        return at + self.OFFSET, event

    def find(self, after: int, timeout: float, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            for _, event in self.events[after:]:
                if match(event):
                    return event
            if time.monotonic() > end or self.popen.poll() is not None:
                raise RuntimeError(f"no matching event in {timeout} s: {self.events[-3:]}")
            with self.cond:
                self.cond.wait(0.2)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values), "n": len(values)}


def run(args: argparse.Namespace, progress: TextIO = sys.stderr) -> dict[str, Any]:
    from deploy.testcluster import cluster as testcluster
    from fastmesh.ca import CA
    from fastmesh.kube.kubeconfig import connect
    from fastmesh.kube.source import Client

    def say(text: str) -> None:
        print(f"control_e2e: {text}", file=progress, flush=True)

    deadline = time.monotonic() + args.timeout
    listed = cluster(args.services, args.endpoints, args.routes, args.policies)
    if args.namespace_prefix:
        listed = renamespaced(listed, args.namespace_prefix)
    out: dict[str, Any] = {"services": args.services, "objects": sum(len(v) for v in listed.values()),
                           "slices": len(listed["EndpointSlice"]),
                           "endpoints": sum(len(s["endpoints"]) for s in listed["EndpointSlice"]),
                           "routes": len(listed["HTTPRoute"]), "policies": len(listed["TrafficPolicy"]),
                           "load_start": os.getloadavg(), "mem_available_start_mb": _mem_available_mb()}
    with tempfile.TemporaryDirectory(prefix="control-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        own = args.cluster is None
        tc = (testcluster.start(tmp / "cluster", extra_args=APISERVER_FLAGS) if own
              else testcluster.Cluster.load(Path(args.cluster)))
        control: Timed | None = None
        proxies: list[Timed] = []
        try:
            if args.load:
                say(f"creating {out['objects']:,} objects ({out['services']:,} Services, {out['endpoints']:,} "
                    f"endpoints) with {args.streams} requests in flight over {args.connections} "
                    f"{'HTTP/2' if args.http2 else 'HTTP/1.1'} connections")
                loaded = create_all(tc.kubeconfig, listed, timeout_s=args.create_timeout, streams=args.streams,
                                    connections=args.connections, http2=args.http2, headless=args.headless,
                                    progress=progress)
                out["create"] = {"objects": loaded.created, "seconds": loaded.seconds, "per_s": loaded.rate,
                                 "retries": loaded.retries, "streams": args.streams, "http2": args.http2,
                                 "headless": args.headless, "connections": args.connections}
                say(f"created {loaded.created:,} objects in {loaded.seconds:.0f} s ({loaded.rate:.0f}/s)"
                    + (f"; answers retried: {loaded.answers}" if loaded.answers else ""))
                out["create"]["answers"] = loaded.answers
            found = count(tc.kubeconfig, listed)
            out["found"] = found
            missing = {kind: len(objs) - found.get(kind, 0) for kind, objs in listed.items()
                       if found.get(kind, 0) < len(objs)}
            if missing:
                raise RuntimeError(f"the apiserver holds fewer objects than the cluster has: {missing} missing")
            api = Client(connect(tc.kubeconfig), timeout_s=60)
            tokens = token_files(api, sorted({o["metadata"]["namespace"] for o in listed["Service"]})[:args.views], tmp)
            CA.init(tmp / "ca", "cluster.local")

            # The control plane: start to synced.
            started = time.time()
            control = Timed([sys.executable, "-m", "fastmesh", "control", "--kubernetes", "--kubeconfig",
                             tc.kubeconfig, "--listen", "127.0.0.1:0", "--ca-dir", str(tmp / "ca"),
                             "--admin", "127.0.0.1:0"], stderr=(tmp / "control.log").open("wb"))
            ready_at, ready = control.wall("ready", 0, 60)
            synced_at, synced = control.wall("synced", 0, max(60.0, deadline - time.monotonic()))
            out["control"] = {"ready_s": ready_at - started, "synced_s": synced_at - started,
                              "documents": synced["documents"], "cpu_synced_s": _cpu_s([control.popen.pid]),
                              "hwm_synced_mb": _status_mb(control.popen.pid, "VmHWM"),
                              "rss_synced_mb": _status_mb(control.popen.pid, "VmRSS")}
            say(f"control plane synced {out['control']['synced_s']:.1f} s after its start "
                f"({synced['documents']:,} documents), RSS {out['control']['rss_synced_mb']:.0f} MB")
            url, admin = f"https://{ready['address']}", f"http://{ready['admin']}"

            # The proxies.
            stopped_by = ""
            for i in range(args.proxies):
                if _mem_available_mb() < args.min_free_mb:
                    stopped_by = f"MemAvailable {_mem_available_mb():.0f} MB < {args.min_free_mb} MB"
                    break
                t0 = time.time()
                px = Timed([sys.executable, "-m", "fastmesh", "proxy", "--control-plane", url,
                            "--ca-bundle", str(tmp / "ca" / "bundle.pem"), "--token-file", str(tokens[i % len(tokens)]),
                            "--admin-address", "127.0.0.1:0", "--listener", "outbound=127.0.0.1:0"])
                proxies.append(px)
                at, _ = px.wall("ready", 0, max(60.0, deadline - time.monotonic()))
                px.ready_s = at - t0  # type: ignore[attr-defined]
                say(f"proxy {i + 1} ready after {at - t0:.1f} s, MemAvailable {_mem_available_mb():.0f} MB")
            if not proxies:
                raise RuntimeError(f"no proxy started: {stopped_by}")
            time.sleep(2)
            admins = [f"http://{px.find(0, 5, lambda e: e.get('event') == 'ready')['admin']}" for px in proxies]
            cstats = _get_json(f"{admin}/stats")
            out["proxies"] = {"n": len(proxies), "stopped_by": stopped_by, "views": len(cstats["views"]),
                              "ready_s": summary([px.ready_s for px in proxies])}  # type: ignore[attr-defined]
            out["control"]["rss_connected_mb"] = _status_mb(control.popen.pid, "VmRSS")

            # The changes.
            rng = random.Random(6)
            rows: list[dict[str, Any]] = []
            pool = ThreadPoolExecutor(len(proxies))
            control_cpu = _cpu_s([control.popen.pid])
            for generation in range(1, args.changes + 1):
                if time.monotonic() > deadline:
                    out["note"] = f"stopped at the {args.timeout:g} s bound after {generation - 1} changes"
                    break
                changed = changed_slice(listed, rng, generation)
                meta = {**changed["metadata"], "namespace": args.namespace_prefix + changed["metadata"]["namespace"]}
                cmark, marks = control.mark(), [px.mark() for px in proxies]
                conn = api.open()  # a new connection each time: the apiserver closes idle ones
                called = time.time()
                status, answer = api.call(
                    conn, f"/apis/discovery.k8s.io/v1/namespaces/{meta['namespace']}/endpointslices/{meta['name']}",
                    "PATCH", {"endpoints": changed["endpoints"]}, content_type="application/merge-patch+json")
                returned = time.time()
                conn.close()
                assert status == 200, answer
                pushed = control.find(cmark, 60, lambda e: e.get("event") == "pushed")
                change = pushed["change"]
                sent = control.find(cmark, 60, lambda e: e.get("event") == "sent" and e["change"] == change)
                applied = [px.wall("reloaded", mark, 120)[0] for px, mark in zip(proxies, marks)]
                received = list(pool.map(_received_at, admins))
                row = {"called": called, "returned": returned, "watched_at": pushed["watched_at"],
                       "queued_at": pushed["queued_at"], "sent_at": sent["sent_at"], "views": pushed["views"],
                       "subscribers": sent["subscribers"], "received": received, "applied": applied}
                rows.append(row)
                say(f"change {generation}: watched {(row['watched_at'] - called) * 1e3:.0f} ms after the PATCH, "
                    f"sent to {sent['subscribers']} proxies {(row['sent_at'] - row['watched_at']) * 1e3:.1f} ms "
                    f"later, applied by all {(max(applied) - called) * 1e3:.0f} ms after the PATCH")
                time.sleep(args.pause)
            pool.shutdown()
            out["control"]["cpu_per_change_ms"] = (_cpu_s([control.popen.pid]) - control_cpu) / max(1, len(rows)) * 1e3
            if not rows:
                raise RuntimeError("no change was measured")
            ms = 1000.0
            out["changes"] = {
                "n": len(rows),
                "patch_ms": summary([(r["returned"] - r["called"]) * ms for r in rows]),
                "watch_ms": summary([(r["watched_at"] - r["called"]) * ms for r in rows]),
                "queue_ms": summary([(r["queued_at"] - r["watched_at"]) * ms for r in rows]),
                "push_ms": summary([(r["sent_at"] - r["watched_at"]) * ms for r in rows]),
                "received_ms": summary([(t - r["called"]) * ms for r in rows for t in r["received"]]),
                "received_after_sent_ms": summary([(t - r["sent_at"]) * ms for r in rows for t in r["received"]]),
                "applied_ms": summary([(t - r["called"]) * ms for r in rows for t in r["applied"]]),
                "applied_all_ms": summary([(max(r["applied"]) - r["called"]) * ms for r in rows]),
                "applied_after_received_ms": summary([(a - t) * ms for r in rows
                                                      for a, t in zip(r["applied"], r["received"])]),
            }
            out["rows"] = rows
            out["control"].update(rss_end_mb=_status_mb(control.popen.pid, "VmRSS"),
                                  hwm_end_mb=_status_mb(control.popen.pid, "VmHWM"))
            rss = sorted(_tree(px.popen.pid, "VmRSS") for px in proxies)
            hwm = sorted(_tree(px.popen.pid, "VmHWM") for px in proxies)
            out["proxies"].update(rss_p50_mb=pct(rss, 50), rss_max_mb=rss[-1], hwm_max_mb=hwm[-1],
                                  reload_failed=sum(e.get("event") == "reload_failed"
                                                    for px in proxies for _, e in px.events))
            out["load_end"] = os.getloadavg()
            out["mem_available_end_mb"] = _mem_available_mb()
        finally:
            _stop_all(proxies + ([control] if control is not None else []))
            if own:
                tc.stop()
    return out


def _row(name: str, s: dict[str, float], target: str = "") -> str:
    return f"| {name} | {s['p50']:.1f} ms | {s['p99']:.1f} ms | {s['max']:.1f} ms | {target} |"


def report(m: dict[str, Any], argv: Sequence[str]) -> str:
    c, ctl, px = m["changes"], m["control"], m["proxies"]
    def verdict(value: float, target: float) -> str:
        return "met" if value <= target else "MISSED"

    lines = [f"# The control plane end to end at {m['services']:,} Services — {datetime.date.today().isoformat()}",
             "", f"Command: `.venv/bin/python bench/control_e2e.py {' '.join(argv)}`".replace(" `", "`"), ""]
    if "create" in m:
        cr = m["create"]
        lines += [f"Cluster (bench/synthetic_cluster.py) in a real kube-apiserver (deploy/testcluster/, "
                  f"{' '.join(APISERVER_FLAGS)}): {m['services']:,} Services, {m['slices']:,} EndpointSlices with "
                  f"{m['endpoints']:,} endpoints, {m['routes']:,} HTTPRoutes, {m['policies']:,} TrafficPolicies: "
                  f"{cr['objects']:,} objects (with the namespaces) created in {cr['seconds']:.0f} s, "
                  f"**{cr['per_s']:.0f} objects/s** ({cr['streams']} POSTs in flight over {cr['connections']} "
                  f"{'HTTP/2' if cr['http2'] else 'HTTP/1.1'} connections, bench/kube_load.py; {cr['retries']} "
                  "retried" + ("; headless Services: no ClusterIP to allocate, fastmesh does not read it"
                               if cr["headless"] else "") + ").", ""]
    lines += [
        f"`fastmesh control --kubernetes`: ready {ctl['ready_s']:.1f} s after its start, **synced** (every kind "
        f"listed, {ctl['documents']:,} documents in the store) **{ctl['synced_s']:.1f} s** after its start "
        f"({ctl['cpu_synced_s']:.1f} s of CPU: the machine is shared, CPU time is the steadier figure). "
        f"{px['n']} `fastmesh proxy --control-plane` in {px['views']} views (namespaces), started one after "
        f"the other, each ready (full state streamed, compiled, applied by its engine) in "
        f"{px['ready_s']['p50']:.1f} s (p50), {px['ready_s']['max']:.1f} s (max)"
        + (f"; stopped adding proxies: {px['stopped_by']}" if px["stopped_by"] else "") + ".",
        "",
        f"{c['n']} EndpointSlice PATCHes (API, merge patch of the endpoints: a scale up/down or a readiness flip), "
        "one at a time; times on one clock from the PATCH sent (control plane: its `pushed`/`sent` events; "
        "proxy: /stats `last_message_at` and its `reloaded` event):",
        "",
        "| stage | p50 | p99 | max | target (issue 6) |",
        "|---|---|---|---|---|",
        _row("PATCH answered by the apiserver", c["patch_ms"]),
        _row("PATCH sent → control plane watch event", c["watch_ms"]),
        _row("control plane: watch event → deltas queued", c["queue_ms"]),
        _row(f"**control plane: watch event → written to all {px['n']} proxies' streams**", c["push_ms"],
             f"≤ {TARGETS['push_ms']:g} ms: {verdict(c['push_ms']['p99'], TARGETS['push_ms'])} (p99)"
             + (f"; CPU {ctl['cpu_per_change_ms']:.1f} ms a change" if "cpu_per_change_ms" in ctl else "")),
        _row("written → received by a proxy (its stream read, replica updated)", c["received_after_sent_ms"]),
        _row("PATCH sent → received by a proxy", c["received_ms"]),
        _row("received → applied by the proxy's engine (`reloaded`)", c["applied_after_received_ms"]),
        _row("PATCH sent → applied by a proxy", c["applied_ms"]),
        _row(f"PATCH sent → applied by all {px['n']} proxies", c["applied_all_ms"]),
        "",
        "| RSS | | target (issue 6) |",
        "|---|---|---|",
        f"| control plane at synced (VmRSS) | {ctl['rss_synced_mb']:.0f} MB | |",
        f"| control plane with {px['n']} proxies connected (VmRSS) | {ctl['rss_connected_mb']:.0f} MB | |",
        f"| control plane after the changes (VmRSS, steady) | {ctl['rss_end_mb']:.0f} MB | "
        f"≤ {TARGETS['control_rss_mb']:g} MB: {verdict(ctl['rss_end_mb'], TARGETS['control_rss_mb'])} |",
        f"| control plane peak (VmHWM) | {ctl['hwm_end_mb']:.0f} MB | "
        f"≤ {TARGETS['control_rss_mb']:g} MB: {verdict(ctl['hwm_end_mb'], TARGETS['control_rss_mb'])} |",
        f"| one proxy with its compiler child, p50 / max (VmRSS) | {px['rss_p50_mb']:.0f} MB / "
        f"{px['rss_max_mb']:.0f} MB | |",
        f"| one proxy with its compiler child, peak (sum of VmHWM), max | {px['hwm_max_mb']:.0f} MB | |",
        "",
        f"Reloads refused: {px['reload_failed']}. Full compile target (≤ {TARGETS['synced_s']:g} s): the control "
        f"plane's start to synced took {ctl['synced_s']:.1f} s wall, {ctl['cpu_synced_s']:.1f} s CPU "
        f"({verdict(ctl['cpu_synced_s'], TARGETS['synced_s'])} in CPU; it includes the interpreter's start and "
        f"listing {ctl['documents']:,} objects from the apiserver).",
    ]
    if m.get("note"):
        lines += ["", m["note"]]
    lines += ["", machine.footer(m["load_start"], m["load_end"], f"; MemAvailable {m['mem_available_start_mb']:.0f} "
                                 f"MB at the start, {m['mem_available_end_mb']:.0f} MB at the end"), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--endpoints", type=int, help="default: ten per Service")
    p.add_argument("--routes", type=int, help="default: one per ten Services")
    p.add_argument("--policies", type=int, help="default: one per twenty Services")
    p.add_argument("--proxies", type=int, default=5)
    p.add_argument("--views", type=int, default=5, help="namespaces the proxies' tokens are of (one view each)")
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--pause", type=float, default=0.5, help="seconds between changes")
    p.add_argument("--streams", type=int, default=48, help="POSTs in flight while creating the cluster")
    p.add_argument("--connections", type=int, default=8, help="connections to the apiserver")
    p.add_argument("--http2", action="store_true",
                   help="create over HTTP/2 (httpx) instead of HTTP/1.1 (aiohttp): ~4x the client's CPU a request")
    p.add_argument("--no-headless", dest="headless", action="store_false",
                   help="Services with a ClusterIP (the apiserver allocates one: ~2 ms more CPU a Service)")
    p.add_argument("--create-timeout", type=float, default=900.0, help="bound of the bulk create (s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="bound of the whole run (s)")
    p.add_argument("--min-free-mb", type=int, default=3000, help="start no more proxies below this MemAvailable")
    p.add_argument("--cluster", help="a test cluster already running there (cluster.py start --dir DIR)")
    p.add_argument("--no-load", dest="load", action="store_false", help="the cluster holds the objects already")
    p.add_argument("--namespace-prefix", default="", help="the synthetic cluster's namespaces start with this")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.endpoints = args.services * 10 if args.endpoints is None else args.endpoints
    args.routes = max(1, args.services // 10) if args.routes is None else args.routes
    args.policies = max(1, args.services // 20) if args.policies is None else args.policies
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, report, "control-e2e")


if __name__ == "__main__":
    sys.exit(main())
