"""Rollouts in a cluster: `fastmesh rollout controller --kubernetes` (Flagger's and Argo Rollouts' shape: one
controller beside the proxies, not inside them). `KubeRolloutController` is a class so that the control plane
(`fastmesh control`) can embed it later.

- It lists the Rollouts, HTTPRoutes, Services and EndpointSlices of its namespace (or all) every `poll_s`
  and checks them as a proxy in cluster mode does (fastmesh.config.cluster): an invalid Rollout is left
  out and says so in its `Accepted` condition.
- The steps are driven by the same `RolloutController` as in file mode. Its windows are judged from the
  proxies' own per-(route, backend) counters and latency histograms, scraped from each proxy's admin
  `/metrics` (`Scraper`: summed over the proxies, a proxy's counter reset read as a restart). The
  proxies are given (`--proxy-admin IP:PORT`) and/or found as the Running Pods matching a label
  selector (`--proxy-selector`, their `podIP` and `--proxy-admin-port`), listed at each sync.
- New weights are written into the HTTPRoute rule's two backendRefs (a merge patch carrying the
  resourceVersion read, retried on a conflict); the proxies watching the cluster pick them up, and the
  step's window begins once every scraped proxy serves them (its admin `/config`).
- Progress lives in the Rollout's status (`KubeStore`, through the status subresource): `phase`,
  `currentStep`, `canaryWeight`, `stableWeight`, `reason`, `plan` (what a restart must find again to
  resume), `lastJudgement` (the figures of the window that last moved it), and conditions `Accepted`,
  `Progressing`, `Succeeded`, `Failed`. A restarted controller resumes at the step the status says.
  Deleting a Rollout leaves its HTTPRoute's weights as they are.
- Every decision but a hold is an Event (events.k8s.io/v1) regarding the Rollout, and a JSON line on
  stdout as in file mode.
- Operators act through the Rollout object (as `kubectl argo rollouts` does): `fastmesh rollout
  start|pause|resume|abort|promote NAME --kubernetes` sets the annotation `fastmesh.io/rollout-action`;
  the controller does it at its next sync, removes the annotation and records the outcome in
  `status.lastAction` (an action that cannot be done, e.g. resume of a rollout that is not paused,
  is refused there and in a Warning Event).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from fastmesh.kube import KubeError
from fastmesh.kube.source import RESOURCES, Client, collection_path, documents, project, render
from fastmesh.rollout import (ABORTED, FAILED, PAUSED, PENDING, PROGRESSING, SUCCEEDED, ActionError, Progress,
                              RolloutController)

log = logging.getLogger("fastmesh.rollout")

ROLLOUTS = ("Rollout", "fastmesh.io/v1alpha1", "rollouts")
ROUTES = "gateway.networking.k8s.io/v1", "httproutes"
REPORTER = "fastmesh.io/rollout-controller"
ACTION_ANNOTATION = "fastmesh.io/rollout-action"
_EVENT_REASONS = {"started": "Started", "pending": "Pending", "restored": "Restored", "advanced": "StepAdvanced",
                  "promoted": "Promoted", "rolled_back": "RolledBack", "paused": "Paused", "resumed": "Resumed",
                  "aborted": "Aborted", "refused": "ActionRefused"}

# === metrics: the proxies' /metrics, summed ===


def _get(address: str, path: str, timeout_s: float) -> bytes:
    import http.client

    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"GET http://{address}{path}: {response.status}")
    return body


def parse_metrics(text: str) -> dict[tuple[str, ...], float]:
    """The request counters and latency buckets of one proxy's exposition: (kind, route, backend, label)
    -> value, kind "requests" (label: the code class) or "bucket" (label: `le`, in seconds, cumulative)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families  # what /metrics serves

    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "fastmesh_requests_total":
                out[("requests", labels["route"], labels["backend"], labels["code_class"])] = sample.value
            elif sample.name == "fastmesh_request_duration_seconds_bucket":
                out[("bucket", labels["route"], labels["backend"], labels["le"])] = sample.value
    return out


def stats_document(series: dict[tuple[str, ...], float]) -> dict[str, Any]:
    """Series (as `parse_metrics` gives, summed) as the engine's stats document, which `rollout.window` reads."""
    finite = sorted({float(k[3]) for k in series if k[0] == "bucket" and k[3] != "+Inf"})
    bounds_ms = [round(b * 1000.0, 6) for b in finite]
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for (kind, route, backend, label), value in series.items():
        entry = routes.setdefault((route, backend), {"route": route, "backend": backend, "status": {},
                                                     "cumulative": {}})
        if kind == "requests":
            entry["status"][label] = int(value)
        else:
            entry["cumulative"][math.inf if label == "+Inf" else float(label)] = value
    for entry in routes.values():
        cumulative = entry.pop("cumulative")
        buckets, below = [], 0.0
        for bound in finite:
            at = cumulative.get(bound, below)
            buckets.append(int(at - below))
            below = at
        entry["latency"] = {"buckets": buckets, "inf": int(cumulative.get(math.inf, below) - below)}
    return {"latency_bounds_ms": bounds_ms, "routes": list(routes.values())}


class Scraper:
    """Reads the proxies' /metrics and sums them. Counters only grow: a value below the last one read
    of the same proxy means the proxy restarted, and the last value is kept as an offset (Prometheus'
    `increase`). An unreachable proxy counts as it was last read."""

    def __init__(self, admins: list[str], timeout_s: float = 2.0) -> None:
        self.admins = admins
        self.timeout_s = timeout_s
        self._last: dict[str, dict[tuple[str, ...], float]] = {}
        self._offset: dict[str, dict[tuple[str, ...], float]] = {}

    def read(self, admin: str, text: str) -> None:
        last, offset = self._last.setdefault(admin, {}), self._offset.setdefault(admin, {})
        for key, value in parse_metrics(text).items():
            if value < last.get(key, 0.0):
                offset[key] = offset.get(key, 0.0) + last[key]
            last[key] = value

    def stats(self) -> dict[str, Any]:
        for admin in self.admins:
            try:
                self.read(admin, _get(admin, "/metrics", self.timeout_s).decode())
            except (OSError, ValueError) as e:
                log.warning("cannot scrape proxy %s: %s", admin, e)
        summed: dict[tuple[str, ...], float] = {}
        for admin, last in self._last.items():
            offset = self._offset[admin]
            for key, value in last.items():
                summed[key] = summed.get(key, 0.0) + value + offset.get(key, 0.0)
        return stats_document(summed)

    def serving(self, route: str, weights: dict[str, int]) -> bool:
        """Whether every proxy serves `weights` (backend -> weight) on engine route `route`."""
        for admin in self.admins:
            try:
                snapshot = json.loads(_get(admin, "/config", self.timeout_s))["snapshot"]
            except (OSError, ValueError, KeyError) as e:
                log.warning("cannot read the config of proxy %s: %s", admin, e)
                return False
            served = {b["backend"]: b["weight"] for v in snapshot.get("vhosts", []) for r in v.get("routes", [])
                      if r.get("name") == route for b in r.get("backends", [])}
            if any(served.get(backend) != weight for backend, weight in weights.items()):
                return False
        return True


# === progress in the Rollout's status ===


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message[:32000],
            "observedGeneration": generation, "lastTransitionTime": _now()}


def conditions(p: Progress, generation: int) -> list[dict[str, Any]]:
    """Accepted, Progressing, Succeeded, Failed of a rollout in phase `p.phase`."""
    phase, reason = p.phase, p.reason
    running = phase in (PENDING, PROGRESSING, PAUSED)
    succeeded_reason = "PromotedByOperator" if "by the operator" in reason else "AllStepsPassed"
    failed_reason = {FAILED: "GateFailed", ABORTED: "Aborted"}.get(phase, phase)
    step = f"step {p.step} of {len(p.plan['steps'])} ({p.canary_percent}% canary)"
    return [
        _condition("Accepted", True, "Accepted", "", generation),
        _condition("Progressing", phase == PROGRESSING, phase, step if running else reason, generation),
        _condition("Succeeded", phase == SUCCEEDED, succeeded_reason if phase == SUCCEEDED else phase,
                   reason if phase == SUCCEEDED else "", generation),
        _condition("Failed", phase in (FAILED, ABORTED), failed_reason, reason if phase in (FAILED, ABORTED) else "",
                   generation),
    ]


def _same_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in items]

    return strip(a) == strip(b)


class KubeStore:
    """The progress of each Rollout in its own status (status subresource), written when it changes."""

    def __init__(self, client: Client, listed: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.client = client
        self.listed = listed  # name ("namespace/name") -> the Rollout object as last listed
        self._written: dict[str, dict[str, Any]] = {}

    def load(self) -> dict[str, Any]:
        saved = {}
        for name, obj in self.listed().items():
            status = obj.get("status") or {}
            if "plan" in status:
                saved[name] = {"key": status["plan"], "phase": status.get("phase"), "step": status.get("currentStep"),
                               "reason": status.get("reason", "")}
            if status:
                self._written[name] = status
        return saved

    def save(self, rollouts: dict[str, Progress]) -> None:
        objects = self.listed()
        for name, p in rollouts.items():
            obj = objects.get(name)
            if obj is None:
                continue
            generation = int(obj["metadata"].get("generation", 0))
            body: dict[str, Any] = {"phase": p.phase, "currentStep": p.step, "canaryWeight": p.canary_percent,
                    "stableWeight": 100 - p.canary_percent, "reason": p.reason, "plan": p.key,
                    "observedGeneration": generation, "conditions": conditions(p, generation),
                    # the window that moved it last (holds are not written: a write per interval)
                    "lastJudgement": None if p.last is None else {
                        "decision": p.last.decision, "reason": p.last.reason, **p.last.figures}}
            held = self._written.get(name) or {}
            if {k: v for k, v in body.items() if k != "conditions"} == {
                    k: held.get(k) for k in body if k != "conditions"} and _same_conditions(
                    body["conditions"], held.get("conditions") or []):
                continue
            before = {c["type"]: c for c in held.get("conditions") or []}
            for c in body["conditions"]:  # a condition whose status did not change keeps its transition time
                old = before.get(c["type"])
                if old is not None and old.get("status") == c["status"]:
                    c["lastTransitionTime"] = old.get("lastTransitionTime", c["lastTransitionTime"])
            namespace, _, short = name.partition("/")
            path = f"{collection_path(ROLLOUTS[1], ROLLOUTS[2], namespace)}/{short}/status"
            try:
                conn = self.client.open()
                try:
                    status, answer = self.client.call(conn, path, "PATCH", {"status": body},
                                                      "application/merge-patch+json")
                finally:
                    conn.close()
            except KubeError as e:
                log.error("rollout %s: status not written: %s", name, e)
                continue
            if status >= 300:
                log.error("rollout %s: status not written: PATCH %s: %s %s", name, path, status,
                          answer.get("message", answer))
                continue
            self._written[name] = body


# === the controller ===


class KubeRolloutController:
    """Drives the Rollouts of a cluster (one namespace, or all). `admins`: the proxies' admin addresses
    (IP:PORT) whose /metrics are judged; `emit` writes the JSON event lines."""

    def __init__(self, client: Client, namespace: str | None, admins: list[str], emit: Callable[..., None],
                 poll_s: float = 1.0, tick_s: float = 0.05, serve_timeout_s: float = 20.0,
                 proxy_selector: str | None = None, proxy_admin_port: int = 15000) -> None:
        self.client = client
        self.namespace = namespace
        self.admins = list(admins)
        self.proxy_selector = proxy_selector
        self.proxy_admin_port = proxy_admin_port
        self.scraper = Scraper(list(admins))
        self.write_event = emit
        self.poll_s = poll_s
        self.serve_timeout_s = serve_timeout_s
        self.objects: dict[str, dict[str, Any]] = {}  # the Rollouts as last listed
        self.routes: dict[str, dict[str, Any]] = {}  # the HTTPRoutes as last listed
        self.store = KubeStore(client, lambda: self.objects)
        self.controller: RolloutController | None = None
        self.tick_s = tick_s
        self.instance = socket.gethostname()
        self._writing = asyncio.Lock()  # one reapply at a time: a step's decision and a sync may both want one

    # --- listing and checking ---

    def _list(self) -> dict[str, list[dict[str, Any]]]:
        listed: dict[str, list[dict[str, Any]]] = {}
        for kind, api_version, plural in (*[r for r in RESOURCES if r[0] in (
                "Service", "EndpointSlice", "HTTPRoute")], ROLLOUTS):
            found = self.client.list_with_version(api_version, plural, self.namespace)
            listed[kind] = found[0] if found is not None else []
        return listed

    def _proxy_pods(self) -> list[str]:
        """IP:PORT of the admin API of each Running Pod the selector matches (none without a selector)."""
        if not self.proxy_selector:
            return []
        path = collection_path("v1", "pods", self.namespace) + "?" + urllib.parse.urlencode(
            {"labelSelector": self.proxy_selector})
        conn = self.client.open()
        try:
            status, listed = self.client.call(conn, path)
        finally:
            conn.close()
        if status != 200:
            raise KubeError(f"GET {path}: {status} {listed.get('message', listed)}")
        found = []
        for pod in listed.get("items") or []:
            ip = (pod.get("status") or {}).get("podIP")
            if ip and pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
                found.append(f"[{ip}]:{self.proxy_admin_port}" if ":" in ip else f"{ip}:{self.proxy_admin_port}")
        return sorted(found)

    def plans(self, listed: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The plans of the valid Rollouts; an invalid one gets `Accepted: False` in its status."""
        from fastmesh.config.cluster import load_cluster_text
        from fastmesh.config.errors import ConfigError
        from fastmesh.config.snapshot.rollouts import rollout_plans

        docs = documents(listed) + [d for d in (project(ROLLOUTS[0], ROLLOUTS[1], o) for o in listed["Rollout"]) if d]
        try:
            cfg, reports = load_cluster_text(render(docs).decode(), f"kubernetes {self.client.connection.server}")
        except ConfigError as e:
            log.error("%s", e)
            return []
        for report in reports:
            if report.kind == "Rollout" and report.left_out:
                self._refuse(f"{report.namespace}/{report.name}", [
                    f"{p.path}: {p.message}" if p.path else p.message for p in report.problems])
        return rollout_plans(cfg)

    def _refuse(self, name: str, problems: list[str]) -> None:
        obj = self.objects.get(name)
        if obj is None:
            return
        text = "; ".join(problems)
        held = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Accepted" and c.get("status") == "False" and c.get("message") == text for c in held):
            return
        namespace, _, short = name.partition("/")
        body = {"status": {"conditions": [_condition("Accepted", False, "Invalid", text,
                                                     int(obj["metadata"].get("generation", 0)))]}}
        conn = self.client.open()
        try:
            self.client.call(conn, f"{collection_path(ROLLOUTS[1], ROLLOUTS[2], namespace)}/{short}/status",
                             "PATCH", body, "application/merge-patch+json")
        finally:
            conn.close()
        log.error("rollout %s left out: %s", name, text)

    async def sync(self) -> None:
        """List, check, and hand the plans over; write the weights the rollouts need."""
        listed = await asyncio.to_thread(self._list)
        if self.proxy_selector:
            self.scraper.admins = self.admins + [a for a in await asyncio.to_thread(self._proxy_pods)
                                                 if a not in self.admins]
        self.objects = {f"{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}": o
                        for o in listed["Rollout"]}
        self.routes = {f"{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}": o
                       for o in listed["HTTPRoute"]}
        plans = await asyncio.to_thread(self.plans, listed)
        if self.controller is None:
            self.controller = RolloutController(self.store, self.scraper.stats, self.reapply, self.emit,
                                                tick_s=self.tick_s)
        self.controller.configure(plans)
        for name, obj in list(self.objects.items()):
            verb = (obj["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION)
            if verb is not None:  # an invalid (left out) rollout is refused: not known to the controller
                await self._act(name, str(verb))
        waiting = any(p.phase == PROGRESSING and p.started is None for p in self.controller.rollouts.values())
        if waiting or self._routes_differ():
            await self.reapply()

    async def _act(self, name: str, verb: str) -> None:
        """Do the action an operator asked for in the annotation; record it; remove the annotation."""
        assert self.controller is not None
        try:
            await self.controller.act(name, verb)
            outcome = {"action": verb, "result": "Done", "message": "", "time": _now()}
        except ActionError as e:
            outcome = {"action": verb, "result": "Refused", "message": str(e), "time": _now()}
            p = self.controller.rollouts.get(name)
            self.emit("rollout", name=name, decision="refused", action=verb, step=p.step if p else None,
                      canary_weight=p.canary_percent if p else None, reason=str(e))
        namespace, _, short = name.partition("/")
        path = f"{collection_path(ROLLOUTS[1], ROLLOUTS[2], namespace)}/{short}"
        conn = self.client.open()
        try:
            self.client.call(conn, f"{path}/status", "PATCH", {"status": {"lastAction": outcome}},
                             "application/merge-patch+json")
            self.client.call(conn, path, "PATCH", {"metadata": {"annotations": {ACTION_ANNOTATION: None}}},
                             "application/merge-patch+json")
        finally:
            conn.close()

    # --- weights ---

    def _routes_differ(self) -> bool:
        assert self.controller is not None
        for p in self.controller.rollouts.values():
            if self._route_patch(p) is not None:
                return True
        return False

    def _route_patch(self, p: Progress) -> dict[str, Any] | None:
        """The merge patch that gives `p`'s weights to its HTTPRoute, or None when it has them."""
        t = p.plan["target"]
        route = self.routes.get(f"{t['namespace']}/{t['name']}")
        if route is None:
            return None
        rules = json.loads(json.dumps(route["spec"]["rules"]))
        refs = rules[t["rule"]]["backendRefs"]
        canary = p.canary_percent
        if (refs[t["stable_ref"]].get("weight", 1), refs[t["canary_ref"]].get("weight", 1)) == (100 - canary, canary):
            return None
        refs[t["stable_ref"]]["weight"], refs[t["canary_ref"]]["weight"] = 100 - canary, canary
        return {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"]}, "spec": {"rules": rules}}

    def _write_route(self, p: Progress) -> bool:
        t = p.plan["target"]
        path = f"{collection_path(*ROUTES, t['namespace'])}/{t['name']}"
        for _ in range(5):
            patch = self._route_patch(p)
            if patch is None:
                return True
            conn = self.client.open()
            try:
                status, answer = self.client.call(conn, path, "PATCH", patch, "application/merge-patch+json")
                if status == 409:  # changed since read: read it again
                    got, fresh = self.client.call(conn, path)
                    if got == 200:
                        self.routes[f"{t['namespace']}/{t['name']}"] = fresh
                    continue
            finally:
                conn.close()
            if status >= 300:
                log.error("rollout %s: cannot write HTTPRoute %s: %s %s", p.plan["name"], path, status,
                          answer.get("message", answer))
                return False
            self.routes[f"{t['namespace']}/{t['name']}"] = answer
            return True
        return False

    async def reapply(self) -> bool:
        """Write every rollout's weights into its HTTPRoute; once every proxy serves them, the windows of
        the steps that begin start."""
        async with self._writing:
            return await self._reapply()

    async def _reapply(self) -> bool:
        assert self.controller is not None
        ok = True
        for p in list(self.controller.rollouts.values()):
            ok = await asyncio.to_thread(self._write_route, p) and ok
        deadline = time.monotonic() + self.serve_timeout_s
        for p in list(self.controller.rollouts.values()):
            weights = {p.plan["stable"]: 100 - p.canary_percent, p.plan["canary"]: p.canary_percent}
            while not await asyncio.to_thread(self.scraper.serving, p.plan["route"], weights):
                if time.monotonic() > deadline:
                    log.warning("rollout %s: the proxies do not serve %s after %.0fs", p.plan["name"], weights,
                                self.serve_timeout_s)
                    ok = False
                    break
                await asyncio.sleep(0.05)
        self.controller.applied()
        return ok

    # --- events ---

    def emit(self, event: str, **fields: Any) -> None:
        self.write_event(event, **fields)
        decision = fields.get("decision")
        obj = self.objects.get(str(fields.get("name")))
        if event != "rollout" or decision not in _EVENT_REASONS or obj is None:
            return
        meta = obj["metadata"]
        note = str(decision)
        if fields.get("step") is not None:
            note += f" at step {fields['step']} ({fields.get('canary_weight')}% canary)"
        if "next_canary_weight" in fields:
            note += f" -> {fields['next_canary_weight']}% canary"
        if fields.get("reason"):
            note += f": {fields['reason']}"
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            # named as client-go's recorder names them (the apiserver refuses a generateName ending in '.')
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta.get("namespace", "default")},
            "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTER, "reportingInstance": self.instance[:128],
            "action": decision, "reason": _EVENT_REASONS[decision],
            "type": "Warning" if decision in ("rolled_back", "aborted", "refused") else "Normal",
            "regarding": {"apiVersion": ROLLOUTS[1], "kind": "Rollout", "namespace": meta.get("namespace", "default"),
                          "name": meta["name"], "uid": meta.get("uid", "")},
            "note": note[:1024],
        }
        path = collection_path("events.k8s.io/v1", "events", meta.get("namespace", "default"))
        try:
            conn = self.client.open()
            try:
                status, answer = self.client.call(conn, path, "POST", body)
            finally:
                conn.close()
            if status >= 300:
                log.warning("event not written: %s %s", status, answer.get("message", answer))
        except KubeError as e:
            log.warning("event not written: %s", e)

    # --- running ---

    async def run(self) -> None:
        """List and sync every `poll_s`; judge every tick. Runs until cancelled."""
        ticker: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    await self.sync()
                except KubeError as e:
                    log.warning("rollouts not synced: %s", e)
                if ticker is None and self.controller is not None:
                    ticker = asyncio.ensure_future(self.controller.run())
                await asyncio.sleep(self.poll_s)
        finally:
            if ticker is not None:
                ticker.cancel()


def run_controller(client: Client, namespace: str | None, admins: list[str], emit: Callable[..., None],
                   admin_address: str = "127.0.0.1:15090", **options: Any) -> int:
    """`fastmesh rollout controller --kubernetes`: runs until SIGTERM/SIGINT; `options` go to the controller.
    `admin_address` serves `GET /rollouts` (the same document as a proxy's, for `fastmesh rollout status`)."""
    import signal

    import uvloop

    from fastmesh import http1
    from fastmesh.http1 import Request, Response

    async def main() -> int:
        controller = KubeRolloutController(client, namespace, admins, emit, **options)

        async def handle(request: Request) -> Response:
            if request.path != "/rollouts":
                return Response(404, f"not found: {request.path}\n".encode())
            if request.method not in ("GET", "HEAD"):
                return Response(405, b"method not allowed\n", headers=[("allow", "GET, HEAD")])
            view = controller.controller.view() if controller.controller is not None else []
            return Response(200, (json.dumps({"rollouts": view}, indent=2) + "\n").encode(), "application/json")

        try:
            server, bound = await http1.start_server(handle, admin_address)
        except (ValueError, OSError) as e:
            log.error("admin API: cannot listen on %s: %s", admin_address, e)
            return 1
        task = asyncio.ensure_future(controller.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        emit("ready", namespace=namespace, proxies=admins, proxy_selector=options.get("proxy_selector"), admin=bound)
        await stop.wait()
        task.cancel()
        server.close()
        return 0

    return uvloop.run(main())


__all__ = ["KubeRolloutController", "KubeStore", "Scraper", "parse_metrics", "run_controller", "stats_document"]
