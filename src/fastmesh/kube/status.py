"""Object status: whether the proxy took each HTTPRoute and fastmesh.io object, written with the status
subresource.

For each Service parentRef of an HTTPRoute (GAMMA), `status.parents[]` gets one entry of controller
`fastmesh.io/mesh` with two conditions (Gateway API route conditions):

- `Accepted`: True (`Accepted`), or False when the route was left out of the config because it is
  invalid: `UnsupportedValue` (a bad regex, a bad filter combination, ...) or `NoMatchingParent`
  (its parent Service or port does not exist);
- `ResolvedRefs`: True (`ResolvedRefs`), or False when a backendRef does not resolve: `BackendNotFound`
  (no such Service, port or external service: that backend answers 500) or `InvalidKind`.

Entries of other controllers are kept. The fastmesh.io objects get `status.conditions` with one `Accepted` condition: True (`Accepted`), or
False (`Invalid`, the problems in its message) when it was left out; the Proxy only of the proxy's own
namespace. An object is written only when its conditions (or generation)
differ from what it holds, so a steady cluster sees no writes; `lastTransitionTime` moves only when a
condition's status does. The writes need RBAC `patch` on `httproutes/status` and the `<kind>/status` of the fastmesh.io kinds: a 403 turns the writer
off with one warning (`fastmesh proxy --no-kube-status` turns it off from the start). One writer per
cluster: run the others with `--no-kube-status`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastmesh.kube import KubeError
from fastmesh.kube.source import RESOURCES, Client, collection_path

log = logging.getLogger("fastmesh.kube")

CONTROLLER = "fastmesh.io/mesh"
REF_REASONS = frozenset({"BackendNotFound", "InvalidKind", "RefNotPermitted"})


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int, now: str) -> dict[str, Any]:
    return {
        "type": kind, "status": "True" if ok else "False", "reason": reason, "message": message[:32000],
        "observedGeneration": generation, "lastTransitionTime": now,
    }


def _describe(problems: list[dict[str, Any]]) -> str:
    return "; ".join(f"{p['path']}: {p['message']}" if p["path"] else p["message"] for p in problems)


def conditions(report: dict[str, Any] | None, generation: int, now: str) -> list[dict[str, Any]]:
    """`Accepted` and `ResolvedRefs` of one route from its report (None: nothing wrong)."""
    problems = list(report["problems"]) if report else []
    refs = [p for p in problems if p["reason"] in REF_REASONS]
    others = [p for p in problems if p["reason"] not in REF_REASONS]
    if report and report["left_out"]:
        why = others or refs
        accepted = _condition("Accepted", False, (others and others[0]["reason"]) or "UnsupportedValue",
                              f"left out of the config: {_describe(why)}", generation, now)
    else:
        accepted = _condition("Accepted", True, "Accepted", "", generation, now)
    if refs:
        resolved = _condition("ResolvedRefs", False, refs[0]["reason"], _describe(refs), generation, now)
    else:
        resolved = _condition("ResolvedRefs", True, "ResolvedRefs", "", generation, now)
    return [accepted, resolved]


def _parent_refs(route: dict[str, Any]) -> list[dict[str, Any]]:
    namespace = route["metadata"].get("namespace", "default")
    refs = []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if (ref.get("group", "gateway.networking.k8s.io"), ref.get("kind", "Gateway")) == ("", "Service"):
            refs.append({"group": "", "kind": "Service", "namespace": ref.get("namespace", namespace),
                         "name": ref["name"], **({"port": ref["port"]} if "port" in ref else {})})
    return refs


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def strip(entries: list[dict[str, Any]]) -> list[Any]:
        return [{**e, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                     for c in e.get("conditions", [])]} for e in entries]

    return strip(a) == strip(b)


def _keep_transition_times(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> None:
    """A condition whose status did not change keeps its lastTransitionTime."""
    before = {(_key(e), c["type"]): c for e in old for c in e.get("conditions", [])}
    for entry in new:
        for c in entry["conditions"]:
            previous = before.get((_key(entry), c["type"]))
            if previous is not None and previous.get("status") == c["status"]:
                c["lastTransitionTime"] = previous.get("lastTransitionTime", c["lastTransitionTime"])


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    ref = entry.get("parentRef") or {}
    return (ref.get("namespace"), ref.get("name"), ref.get("port"))


def object_conditions(report: dict[str, Any] | None, generation: int, now: str) -> list[dict[str, Any]]:
    """`Accepted` of a fastmesh.io object: True (`Accepted`), or False (`Invalid`) when it was left out."""
    if report and report["left_out"]:
        return [_condition("Accepted", False, "Invalid", f"left out of the config: {_describe(report['problems'])}",
                           generation, now)]
    return [_condition("Accepted", True, "Accepted", "", generation, now)]


class StatusWriter:
    """Writes the HTTPRoute conditions after each load; `enabled` goes False on a 403."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.enabled = True
        self.writes = 0

    def write(self, listed: dict[str, list[dict[str, Any]]], reports: list[dict[str, Any]]) -> None:
        """`listed`: the raw objects by kind the config was made of (the Proxy only of the proxy's
        namespace); `reports`: the worker's object reports."""
        by_object = {(r["kind"], r["namespace"], r["name"]): r for r in reports}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conn = None
        try:
            for kind, api_version, plural in RESOURCES:
                for obj in listed.get(kind, []) if kind == "HTTPRoute" or api_version.startswith("fastmesh.io/") else []:
                    if not self.enabled:
                        return
                    meta = obj["metadata"]
                    key = (meta.get("namespace", "default"), meta["name"])
                    report, generation = by_object.get((kind, *key)), int(meta.get("generation", 0))
                    if kind == "HTTPRoute":
                        route_conditions = conditions(report, generation, now)
                        body = self.route_status(obj, [route_conditions for _ in _parent_refs(obj)])
                    else:
                        body = self.object_status(obj, object_conditions(report, generation, now))
                    if body is not None:
                        conn = conn or self.client.open()
                        self._patch(conn, api_version, plural, key, {"status": body})
        except KubeError as e:
            log.warning("status not written: %s", e)
        finally:
            if conn is not None:
                conn.close()

    parent_refs = staticmethod(_parent_refs)

    @staticmethod
    def route_status(route: dict[str, Any], per_ref: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
        """The route's new status (`per_ref`: the conditions of each Service parentRef, in order), or None
        when ours is what it holds."""
        ours = [{"parentRef": ref, "controllerName": CONTROLLER, "conditions": [dict(c) for c in conditions]}
                for ref, conditions in zip(_parent_refs(route), per_ref, strict=True)]
        held = (route.get("status") or {}).get("parents") or []
        others = [e for e in held if e.get("controllerName") != CONTROLLER]
        mine = [e for e in held if e.get("controllerName") == CONTROLLER]
        if _same(ours, mine):
            return None
        _keep_transition_times(ours, mine)
        return {"parents": others + ours}

    @staticmethod
    def object_status(obj: dict[str, Any], conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A fastmesh.io object's new status (`conditions`), or None when it holds them already."""
        entry, held = {"conditions": conditions}, {"conditions": (obj.get("status") or {}).get("conditions") or []}
        if _same([entry], [held]):
            return None
        _keep_transition_times([entry], [held])
        return entry

    def _patch(self, conn: Any, api_version: str, plural: str, key: tuple[str, str], body: dict[str, Any]) -> None:
        self.patch(conn, f"{collection_path(api_version, plural, key[0])}/{key[1]}/status", body)

    def patch(self, conn: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Merge-patch a status subresource: (status, answer); 404 (deleted meanwhile) and 409 (a
        resourceVersion in `body` that is not the object's) are the caller's to handle."""
        status, answer = self.client.call(conn, path, "PATCH", body, "application/merge-patch+json")
        if status == 403:
            self.enabled = False
            log.warning("no RBAC to write status (%s): not writing it", answer.get("message", status))
        elif status in (404, 409):
            pass
        elif status >= 300:
            raise KubeError(f"PATCH {path}: {status} {answer.get('message', answer)}")
        else:
            self.writes += 1
        return status, answer
