"""`fastmesh control` writes status (fastmesh.control.status) and elects a leader to do it
(fastmesh.control.leader), against the test apiserver, with only deploy/rbac/control-plane.yaml."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from fastmesh.control.protocol import canonical
from fastmesh.control.status import ControlStatus
from fastmesh.kube.kubeconfig import connect
from fastmesh.kube.source import RESOURCES, Client, project
from fastmesh.kube.status import CONTROLLER
from tests.harness import backend, proxy_spec, route, rule, service, traffic_policy
from tests.kube.conftest import create_object, custom
from tests.kube.test_control_plane import ControlPlane, wait_for
from tests.kube.test_control_plane import ca_dir, control_planes  # noqa: F401 - fixtures
from tests.kube.test_kube_routing import GATEWAY, _patch_route

LEASE = 3.0
"""--lease-duration of the election tests (seconds)."""


def _parents(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, dict[str, tuple[str, str, str]]]:
    """Our status.parents of a route: parent Service name -> {type: (status, reason, message)}, current generation."""
    obj = custom(kube_api).get_namespaced_custom_object_status(*GATEWAY, namespace, "httproutes", name)
    generation = obj["metadata"]["generation"]
    return {p["parentRef"]["name"]: {c["type"]: (c["status"], c["reason"], c["message"]) for c in p["conditions"]
                                     if c["observedGeneration"] == generation}
            for p in (obj.get("status") or {}).get("parents") or [] if p["controllerName"] == CONTROLLER}


def _brief(parents: dict[str, dict[str, tuple[str, str, str]]]) -> dict[str, dict[str, tuple[str, str]]]:
    return {parent: {t: c[:2] for t, c in conds.items()} for parent, conds in parents.items()}


def _wait_parents(kube_api: client.ApiClient, namespace: str, name: str, want: dict[str, dict[str, tuple[str, str]]],
                  timeout: float = 20) -> dict[str, dict[str, tuple[str, str, str]]]:
    return wait_for(lambda: (p := _parents(kube_api, namespace, name)) and _brief(p) == want and p, timeout,
                    f"{namespace}/{name} status {want} (has {_parents(kube_api, namespace, name)})")


def _accepted(kube_api: client.ApiClient, plural: str, namespace: str, name: str) -> tuple[str, str] | None:
    obj = custom(kube_api).get_namespaced_custom_object_status("fastmesh.io", "v1alpha1", namespace, plural, name)
    return next(((c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == "Accepted" and c["observedGeneration"] == obj["metadata"]["generation"]), None)


def _version(kube_api: client.ApiClient, namespace: str, name: str, plural: str = "httproutes") -> str:
    group = GATEWAY if plural == "httproutes" else ("fastmesh.io", "v1alpha1")
    obj = custom(kube_api).get_namespaced_custom_object(*group, namespace, plural, name)
    return str(obj["metadata"]["resourceVersion"])


OK = {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
EXTERNAL = {"group": "fastmesh.io", "kind": "ExternalService"}


def test_the_control_plane_writes_status_per_parent_and_only_on_change(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, other_namespace: str,
    reviews_mesh: Callable[..., Any], ca_dir: Path, control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    reviews_mesh()  # its Proxy object has no externalServices
    bad_regex = route("reviews-regex", [rule(backend("reviews-v2"), matches=[
        {"path": {"type": "RegularExpression", "value": "/(unclosed"}}])], parent="reviews", namespace=namespace)
    create_object(kube_api, namespace, bad_regex)
    create_object(kube_api, namespace, route("dangling", [rule(backend("nowhere"))], parent="reviews",
                                             namespace=namespace))
    create_object(kube_api, namespace, {**traffic_policy("nowhere", retry={"attempts": 2}),
                                        "metadata": {"name": "to-nowhere"}})
    # The other namespace's proxies know the external service "billing"; the first namespace's do not.
    create_object(kube_api, other_namespace, proxy_spec(listeners=[{"name": "outbound", "port": 15001}],
                                                       externalServices=[{"name": "billing",
                                                                          "endpoints": ["127.0.0.1:1"]}]))
    for doc in service("local", namespace=other_namespace):
        create_object(kube_api, other_namespace, doc)
    # One route, two parents: as a consumer route of reviews (the other namespace's callers only: billing
    # resolves) and as the producer route of its own Service local (every caller: not for the first namespace's).
    two_parents = route("billing", [rule(backend("billing", **EXTERNAL))], parent="local", namespace=other_namespace)
    two_parents["spec"]["parentRefs"].insert(0, {"group": "", "kind": "Service", "name": "reviews",
                                                 "namespace": namespace, "port": 9080})
    create_object(kube_api, other_namespace, two_parents)

    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path, extra_args=("--lease-namespace", namespace))
    control_planes.append(control)
    _wait_parents(kube_api, namespace, "reviews", {"reviews": OK})
    regex = _wait_parents(kube_api, namespace, "reviews-regex", {"reviews": {
        "Accepted": ("False", "UnsupportedValue"), "ResolvedRefs": ("True", "ResolvedRefs")}})
    assert "spec.rules[0].matches[0].path.value" in regex["reviews"]["Accepted"][2]
    dangling = _wait_parents(kube_api, namespace, "dangling", {"reviews": {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}})
    assert f"Service {namespace}/nowhere not found" in dangling["reviews"]["ResolvedRefs"][2]
    billing = _wait_parents(kube_api, other_namespace, "billing", {
        "reviews": OK,
        "local": {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}})
    message = billing["local"]["ResolvedRefs"][2]
    assert "for callers in namespace" in message and "'billing' not found" in message
    assert namespace in message or " more: " in message  # (at most 10 namespaces are named)
    assert other_namespace not in message  # its callers have billing
    wait_for(lambda: _accepted(kube_api, "trafficpolicies", namespace, "to-nowhere") == ("False", "Invalid"), 20,
             "the TrafficPolicy's Accepted condition")
    wait_for(lambda: _accepted(kube_api, "proxies", other_namespace, "proxy") == ("True", "Accepted"), 20,
             "the Proxy's Accepted condition")
    leader = next(e for e in control.process.events if e["event"] == "leader")
    assert leader["leading"] and leader["lease"] == f"{namespace}/fastmesh-control"

    # No write storm: a change that is checked again but changes no status writes nothing.
    watched = [(namespace, "reviews"), (namespace, "reviews-regex"), (namespace, "dangling"),
               (other_namespace, "billing")]
    versions = {key: _version(kube_api, *key) for key in watched}
    before = control.stats()["status"]
    assert before["writes"] >= 6 and before["leading"]
    client.CoreV1Api(kube_api).patch_namespaced_service("reviews-v1", namespace,
                                                       {"metadata": {"labels": {"tier": "backend"}}})
    wait_for(lambda: control.stats()["status"]["runs"] > before["runs"], 20, "a status run after the change")
    time.sleep(0.5)
    assert control.stats()["status"]["writes"] == before["writes"]
    assert {key: _version(kube_api, *key) for key in watched} == versions
    # A restarted control plane (a full relist) finds every status as it should be: no write either.
    assert control.process.stop(signal.SIGTERM, timeout=10) == 0
    again = ControlPlane(control_kubeconfig, ca_dir, tmp_path, run=2, extra_args=("--lease-namespace", namespace))
    control_planes.append(again)
    wait_for(lambda: (s := again.stats()["status"])["leading"] and s["runs"] >= 1, 20, "the restarted one to check")
    time.sleep(0.5)
    assert again.stats()["status"]["writes"] == 0
    assert {key: _version(kube_api, *key) for key in watched} == versions

    # A new generation is written with its observedGeneration; fixed, the route is accepted.
    _patch_route(kube_api, namespace, "reviews-regex", {"spec": {"rules": [rule(backend("reviews-v1"), matches=[
        {"path": {"type": "PathPrefix", "value": "/v1"}}])]}})
    _wait_parents(kube_api, namespace, "reviews-regex", {"reviews": OK})
    assert again.stats()["status"]["writes"] == 1


def _raw(api: Client, api_version: str, plural: str, namespace: str) -> list[dict[str, Any]]:
    listed = api.list_with_version(api_version, plural, namespace)
    return listed[0] if listed is not None else []


def test_a_status_write_over_a_newer_object_is_read_again_and_retried(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, reviews_mesh: Callable[..., Any],
) -> None:
    reviews_mesh()
    create_object(kube_api, namespace, route("dangling", [rule(backend("nowhere"))], parent="reviews",
                                             namespace=namespace))
    api = Client(connect(control_kubeconfig))
    texts = {}
    for kind, api_version, plural in RESOURCES:
        for obj in _raw(api, api_version, plural, namespace):
            doc = project(kind, api_version, obj)
            if doc is not None:
                texts[(kind, namespace, obj["metadata"]["name"])] = canonical(doc)
    routes = _raw(api, *GATEWAY_PLURAL, namespace)
    # Someone changes a route after we read it: our copy is stale.
    custom(kube_api).patch_namespaced_custom_object(*GATEWAY, namespace, "httproutes", "dangling",
                                                    {"metadata": {"labels": {"touched": "yes"}}})
    status = ControlStatus(api, "test")
    assert status.run(texts, {"HTTPRoute": routes}) == 2  # both routes; the dangling one after a 409
    assert status.conflicts == 1
    assert _brief(_parents(kube_api, namespace, "dangling")) == {"reviews": {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}}
    obj = custom(kube_api).get_namespaced_custom_object(*GATEWAY, namespace, "httproutes", "dangling")
    assert obj["metadata"]["labels"] == {"touched": "yes"}  # the other writer's change is kept
    # Run again on the same (now stale) copies, before any watch brings our writes: nothing is written.
    assert status.run(texts, {"HTTPRoute": routes}) == 0


GATEWAY_PLURAL = ("gateway.networking.k8s.io/v1", "httproutes")


def _leader(control: ControlPlane) -> dict[str, Any]:
    """The replica's leader election state (empty until it has listed the cluster and joined the election)."""
    return control.stats()["leader"] or {}


def _lease(kube_api: client.ApiClient, namespace: str) -> Any:
    return client.CoordinationV1Api(kube_api).read_namespaced_lease("fastmesh-control", namespace).spec


def test_only_the_leader_writes_and_another_replica_takes_over_within_the_lease(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, reviews_mesh: Callable[..., Any],
    ca_dir: Path, control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    reviews_mesh()
    args = ("--lease-namespace", namespace, "--lease-duration", str(LEASE))
    replicas = [ControlPlane(control_kubeconfig, ca_dir, tmp_path, run=i, extra_args=args) for i in (1, 2)]
    control_planes.extend(replicas)
    wait_for(lambda: any(_leader(r).get("leading") for r in replicas), 20, "a leader")
    time.sleep(LEASE)  # long enough for a second leader to show up, if the election let one
    leading = [r for r in replicas if _leader(r).get("leading")]
    assert len(leading) == 1, [r.stats()["leader"] for r in replicas]
    leader, follower = leading[0], next(r for r in replicas if r is not leading[0])
    assert _lease(kube_api, namespace).holder_identity == leader.stats()["leader"]["identity"]

    create_object(kube_api, namespace, route("dangling", [rule(backend("nowhere"))], parent="reviews",
                                             namespace=namespace))
    _wait_parents(kube_api, namespace, "dangling", {"reviews": {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}})
    assert leader.stats()["status"]["writes"] >= 2  # reviews and dangling
    assert follower.stats()["status"] == {**follower.stats()["status"], "leading": False, "runs": 0, "writes": 0}
    transitions = _lease(kube_api, namespace).lease_transitions

    leader.kill()  # SIGKILL: the Lease is not released, it must expire
    killed = time.monotonic()
    follower.process.wait_event("leader", timeout=LEASE * 4)  # its first "leader" event is leading=True
    took = time.monotonic() - killed
    print(f"\nleader killed -> the other replica leads after {took:.2f}s (lease {LEASE}s)")
    assert took <= LEASE + 3.0  # the lease time, its renew period (LEASE/4) and a loaded machine's slack
    spec = _lease(kube_api, namespace)
    assert spec.holder_identity == follower.stats()["leader"]["identity"] and spec.lease_transitions == transitions + 1
    create_object(kube_api, namespace, route("dangling-2", [rule(backend("nowhere"))], parent="reviews",
                                             namespace=namespace))
    _wait_parents(kube_api, namespace, "dangling-2", {"reviews": {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}})
    assert follower.stats()["status"]["writes"] == 1  # only the new route: the others hold their status
    metrics = httpx.get(f"{follower.admin_url}/metrics", timeout=5).text
    assert "fastmesh_control_leader 1.0" in metrics


class Forwarder:
    """A TCP relay on 127.0.0.1 to the API server; `cut()` closes it and every connection through it (a
    control plane behind it loses the API server, as in a network partition)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.server.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_a_leader_cut_off_from_the_api_server_stops_writing_before_another_takes_over(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, ca_dir: Path,
    control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    config = json.loads(control_kubeconfig.read_text())
    server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    relay = Forwarder((server.hostname or "", server.port or 443))
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    relayed = tmp_path / "relayed.kubeconfig"
    relayed.write_text(json.dumps(config))
    args = ("--lease-namespace", namespace, "--lease-duration", str(LEASE))
    first = ControlPlane(relayed, ca_dir, tmp_path, run=1, extra_args=args)
    control_planes.append(first)
    wait_for(lambda: _leader(first).get("leading"), 20, "the first replica to lead")
    second = ControlPlane(control_kubeconfig, ca_dir, tmp_path, run=2, extra_args=args)
    control_planes.append(second)
    wait_for(lambda: _leader(second).get("holder") == _leader(first).get("identity"), 20,
             "the second replica to see the leader")

    relay.cut()
    cut = time.monotonic()
    stopped = started = None
    while stopped is None or started is None:  # poll both: when did one stop and the other start leading
        assert time.monotonic() - cut < LEASE * 4, (first.stats()["leader"], second.stats()["leader"])
        if stopped is None and not _leader(first).get("leading"):
            stopped = time.monotonic() - cut
        if started is None and _leader(second).get("leading"):
            started = time.monotonic() - cut
        time.sleep(0.05)
    print(f"\nAPI server cut off: the leader stopped after {stopped:.2f}s, the other led after {started:.2f}s")
    assert stopped < started  # never two writers at once
    assert "no longer leading" in first.process.stderr_tail(200)
