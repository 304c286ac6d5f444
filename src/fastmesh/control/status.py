"""Status written back by the control plane (the leader only: fastmesh.control.leader): HTTPRoute
`status.parents` and the fastmesh.io kinds' `status.conditions`, as the direct mode writes them
(fastmesh.kube.status: controller `fastmesh.io/mesh`, `Accepted` / `ResolvedRefs` with reasons,
`observedGeneration`).

The control plane does not compile; it checks (fastmesh.config.cluster.check_cluster) what it serves.
What a proxy's compiler leaves out depends on its view only through its namespace's `Proxy` object
(`spec.externalServices` resolve external backendRefs; `spec.identity` is needed by meshed Services),
so the documents are checked once per *variant*: without a Proxy, and once per distinct
(externalServices, identity) of the valid Proxy objects. Each namespace's callers see one variant.

Per parentRef (GAMMA): a consumer route (parent Service in another namespace) applies to the callers of
its own namespace only, so its conditions come from that namespace's variant; a producer route (parent
in its own namespace) applies to every caller, so it is `Accepted` / `ResolvedRefs` only if it is in
every variant, and the message says for which callers it is not. A Proxy object is checked on its own.

Writes: only when what an object holds differs (`lastTransitionTime` moves only when a status does);
through the status subresource, as a merge patch carrying the resourceVersion read, so a write over a
newer object gets 409: the object is read again and the status recomputed (up to 5 times). A check runs
when a document other than an EndpointSlice changed (slices never change these conditions), and when
this replica becomes the leader. EndpointSlices are not checked at all: no route or policy condition
depends on them, and they are most of a large cluster's documents (at 10,000 Services / 100,000
endpoints, a check without them takes ~1 s, the first one, which parses every document, longer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastmesh.config.cluster import Identity, check_objects
from fastmesh.config.errors import Problem
from fastmesh.config.loader import _identity, _parse
from fastmesh.config.model import KubeObject
from fastmesh.control.protocol import Key
from fastmesh.kube import KubeError
from fastmesh.kube.source import RESOURCES, Client, collection_path
from fastmesh.kube.status import StatusWriter, conditions, object_conditions

log = logging.getLogger("fastmesh.control")

WRITTEN = {kind: (api_version, plural) for kind, api_version, plural in RESOURCES
           if kind == "HTTPRoute" or api_version.startswith("fastmesh.io/")}
"""The kinds that get status: (apiVersion, plural)."""
Variant = str
NO_PROXY: Variant = "-"
RETRIES = 5
Report = dict[str, Any]


@dataclass
class _Parsed:
    text: str
    identity: Identity
    model: KubeObject | None
    problems: list[Problem]


class Checker:
    """The documents the control plane serves, parsed once per content, checked per variant."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parsed: dict[Key, _Parsed] = {}

    def update(self, texts: dict[Key, str]) -> None:
        for key in [k for k in self.parsed if k not in texts]:
            del self.parsed[key]
        for key, text in texts.items():
            held = self.parsed.get(key)
            if held is None or held.text != text:
                doc, problems = json.loads(text), list[Problem]()
                model = _parse(doc, self.source, 0, problems)
                self.parsed[key] = _Parsed(text, _identity(doc), model if isinstance(model, KubeObject) else None,
                                           problems)

    def check(self, keys: Iterable[Key]) -> dict[Key, Report]:
        """The reports (fastmesh.config.cluster.ObjectReport, as JSON) of the documents `keys` taken together."""
        ordered = list(keys)
        _, found = check_objects(self.source, None, [(o.identity, o.model, o.problems)
                                                     for o in map(self.parsed.__getitem__, ordered)])
        by_identity = {(k[0], k[1] or "default", k[2]): k for k in ordered}
        return {by_identity.get((r.kind, r.namespace, r.name), (r.kind, r.namespace, r.name)): r.to_json()
                for r in found}

    def reports(self, texts: dict[Key, str]) -> tuple[dict[str, Variant], dict[Variant, dict[Key, Report]]]:
        """(namespace with a Proxy -> its variant, variant -> reports); namespaces not named see NO_PROXY.
        The Proxy objects' own reports are under their namespace's key in every variant."""
        texts = {k: t for k, t in texts.items() if k[0] != "EndpointSlice"}  # no condition depends on them
        self.update(texts)
        base = [k for k in texts if k[0] != "Proxy"]
        of_namespace: dict[str, Variant] = {}
        chosen: dict[Variant, Key] = {}
        own: dict[Key, Report] = {}
        for key in (k for k in texts if k[0] == "Proxy"):
            own.update(self.check([key]))
            if key in own:
                continue  # invalid: that namespace's proxies run without it
            spec = json.loads(texts[key]).get("spec") or {}
            variant = json.dumps([spec.get("externalServices") or [], bool(spec.get("identity"))], sort_keys=True)
            of_namespace[key[1]] = variant
            chosen.setdefault(variant, key)
        variants = {NO_PROXY: self.check(base)}
        for variant, proxy in chosen.items():
            variants[variant] = self.check([proxy, *base])
        for reports in variants.values():
            reports.update(own)
        return of_namespace, variants


def _callers(of_namespace: dict[str, Variant], variants: list[Variant], most: int = 10) -> str:
    """The callers that see `variants`, in words: `namespaces without a (valid) Proxy object`, `namespace a, b`."""
    parts = ["namespaces without a (valid) Proxy object"] if NO_PROXY in variants else []
    names = sorted(ns for ns, v in of_namespace.items() if v in variants)
    if names:
        more = f" and {len(names) - most} more" if len(names) > most else ""
        parts.append("namespace " + ", ".join(names[:most]) + more)
    return "callers in " + " and in ".join(parts)


def merged(of_namespace: dict[str, Variant], variants: dict[Variant, dict[Key, Report]], key: Key,
           applies_to: list[Variant]) -> Report | None:
    """One report for `key` over the variants it applies to: the worst (left out, then unresolved), naming
    the callers it concerns in its messages when not every variant agrees."""
    found = [(v, variants[v][key]) for v in applies_to if key in variants[v]]
    if not found:
        return None
    worst = max(r["left_out"] for _, r in found)
    report = next(r for _, r in found if r["left_out"] == worst)
    if len(found) == len(applies_to) and all(r == report for _, r in found):
        return report
    callers = _callers(of_namespace, [v for v, r in found if r["left_out"] == worst])
    return {**report, "problems": [{**p, "message": f"for {callers}: {p['message']}"} for p in report["problems"]]}


class ControlStatus:
    """Computes and writes the status of what the control plane serves (blocking: run in a thread)."""

    def __init__(self, client: Client, source: str) -> None:
        self.client = client
        self.checker = Checker(source)
        self.writer = StatusWriter(client)
        self.runs = 0
        self.conflicts = 0
        self._after: dict[Key, tuple[str, dict[str, Any]]] = {}
        """Our last write: object -> (resourceVersion it replaced, the object it made), for as long as the
        watch has not brought it: the reflector's copy is older and must not make us write again."""

    @property
    def writes(self) -> int:
        return self.writer.writes

    def run(self, texts: dict[Key, str], objects: dict[str, list[dict[str, Any]]],
            leading: Callable[[], bool] = lambda: True) -> int:
        """Check `texts` (the documents served) and write the status of `objects` (by kind, as the API
        serves them, status included), while `leading()`; how many writes it made."""
        self.runs += 1
        before = self.writer.writes
        of_namespace, variants = self.checker.reports(texts)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conn = None
        seen: set[Key] = set()
        try:
            for kind, listed in objects.items():
                for obj in listed:
                    if not self.writer.enabled or not leading():  # no RBAC, or the lease was lost meanwhile
                        return self.writer.writes - before
                    meta = obj.get("metadata") or {}
                    key = (kind, str(meta.get("namespace", "default")), str(meta.get("name", "")))
                    seen.add(key)
                    held = self._after.get(key)
                    if held is not None:
                        if meta.get("resourceVersion") == held[0]:
                            obj = held[1]  # the watch has not brought our write yet
                        else:
                            del self._after[key]
                    conn = conn or self.client.open()
                    self._write(conn, kind, key, obj, of_namespace, variants, now)
        except KubeError as e:
            log.warning("status not written: %s", e)
        finally:
            if conn is not None:
                conn.close()
        self._after = {k: v for k, v in self._after.items() if k in seen}  # deleted since: forgotten
        return self.writer.writes - before

    def _body(self, kind: str, key: Key, obj: dict[str, Any], of_namespace: dict[str, Variant],
              variants: dict[Variant, dict[Key, Report]], now: str) -> dict[str, Any] | None:
        generation = int((obj.get("metadata") or {}).get("generation", 0))
        if kind != "HTTPRoute":
            report = variants[of_namespace.get(key[1], NO_PROXY)].get(key)
            return self.writer.object_status(obj, object_conditions(report, generation, now))
        per_ref = []
        for ref in self.writer.parent_refs(obj):
            if ref["namespace"] == key[1]:  # producer route: every caller
                applies_to = list(variants)
            else:  # consumer route: the callers of its own namespace
                applies_to = [of_namespace.get(key[1], NO_PROXY)]
            per_ref.append(conditions(merged(of_namespace, variants, key, applies_to), generation, now))
        return self.writer.route_status(obj, per_ref)

    def _write(self, conn: Any, kind: str, key: Key, obj: dict[str, Any], of_namespace: dict[str, Variant],
               variants: dict[Variant, dict[Key, Report]], now: str) -> None:
        api_version, plural = WRITTEN[kind]
        path = f"{collection_path(api_version, plural, key[1])}/{key[2]}"
        for _ in range(RETRIES):
            body = self._body(kind, key, obj, of_namespace, variants, now)
            if body is None:
                return
            version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            patch = {"metadata": {"resourceVersion": version}, "status": body}
            status, answer = self.writer.patch(conn, f"{path}/status", patch)
            if status == 200:
                self._after[key] = (version, answer)
                log.info("%s %s/%s: status written", *key)
                return
            if status != 409:
                return
            self.conflicts += 1  # changed since read: read it again, and decide again
            status, obj = self.client.call(conn, path)
            if status != 200:
                return
        log.warning("%s %s/%s: status not written: still conflicting after %d tries", *key, RETRIES)


def touches_status(texts: dict[Key, str], upserts: dict[Key, str], deletes: Iterable[Key],
                   replaced: Iterable[str]) -> bool:
    """Whether a change of the served documents (before it is applied to `texts`) may change a status:
    any change but of EndpointSlices."""
    return (any(kind != "EndpointSlice" for kind in replaced)
            or any(k[0] != "EndpointSlice" for k in deletes)
            or any(k[0] != "EndpointSlice" and texts.get(k) != t for k, t in upserts.items()))


class StatusLoop:
    """Runs `ControlStatus` in a thread when due and this replica leads; at most every `pause_s`."""

    def __init__(self, status: ControlStatus, texts: Callable[[], dict[Key, str]],
                 objects: Callable[[], dict[str, list[dict[str, Any]]]], emit: Callable[..., None],
                 pause_s: float = 1.0) -> None:
        self.status, self.texts, self.objects, self.emit = status, texts, objects, emit
        self.pause_s = pause_s
        self.leading = False
        self._due = asyncio.Event()

    def due(self) -> None:
        self._due.set()

    def lead(self, leading: bool) -> None:
        """On the event loop: this replica leads (writes) or not."""
        self.leading = leading
        if leading:
            self._due.set()

    async def run(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            if not self.leading:
                continue
            try:
                writes = await asyncio.to_thread(self.status.run, self.texts(), self.objects(), lambda: self.leading)
            except Exception:  # noqa: BLE001 - one bad object must not stop every later status
                log.exception("computing the status failed")
                writes = 0
            if writes:
                self.emit("status_written", writes=writes, total=self.status.writes)
            await asyncio.sleep(self.pause_s)

    def stats(self) -> dict[str, Any]:
        return {"leading": self.leading, "runs": self.status.runs, "writes": self.status.writes,
                "conflicts": self.status.conflicts, "enabled": self.status.writer.enabled}
