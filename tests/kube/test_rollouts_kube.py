"""`fastmesh rollout controller --kubernetes` against the test apiserver: Rollout objects in the cluster,
a real `fastmesh proxy --kubernetes` routing real upstreams under a bounded load, the controller judging
the proxy's /metrics and writing the HTTPRoute weights, the Rollout status and Events."""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from deploy.testcluster import cluster as testcluster
from tests.harness import PYTHON, REPO, Proxy, _Process, fastmesh_cli, wait_until
from tests.kube.conftest import create_object, custom, mesh
from tests.rollout.test_rollout_proxy import TICK_SLACK_S, load, wait_decision as decision

GATEWAY = ("gateway.networking.k8s.io", "v1")


def rollout(namespace: str, steps: list[int], interval: str = "1s", **gates: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fastmesh.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "reviews", "namespace": namespace},
        "spec": {"targetRef": {"kind": "HTTPRoute", "name": "reviews", "rule": 1},
                 "stable": {"name": "reviews-v1"}, "canary": {"name": "reviews-v2"},
                 "steps": steps, "interval": interval, "gates": gates or {"minSuccessRate": 99, "minRequests": 10}},
    }


def controller_kubeconfig(kube_api: client.ApiClient, cluster: testcluster.Cluster, namespace: str,
                          tmp_path: Path) -> Path:
    """A kubeconfig of a ServiceAccount with only deploy/rbac/rollout-controller.yaml, bound in `namespace`."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    role = yaml.safe_load((REPO / "deploy" / "rbac" / "rollout-controller.yaml").read_text())
    try:
        rbac.create_cluster_role(role)
    except client.ApiException as e:
        if e.status != 409:  # created by an earlier test of the session
            raise
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "rollouts"}})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "rollouts"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "rollouts", "namespace": namespace}]})
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    config = json.loads(Path(cluster.kubeconfig).read_text())
    token = core.create_namespaced_service_account_token("rollouts", namespace, request).status.token
    config["users"][0]["user"]["token"] = token
    path = tmp_path / "rollouts.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def start_controller(cluster: testcluster.Cluster, namespace: str, px: Proxy, tmp_path: Path,
                     find: list[str] | None = None, kubeconfig: Path | None = None) -> _Process:
    """The controller judging `px` (given by its admin address, or found by the options `find`)."""
    argv = [PYTHON, "-m", "fastmesh", "rollout", "controller", "--kubernetes",
            "--kubeconfig", str(kubeconfig or cluster.kubeconfig), "--admin-address", "127.0.0.1:0",
            "--kube-namespace", namespace, *(find or ["--proxy-admin", px.admin_address])]
    started = _Process(argv, tmp_path / f"controller-{time.monotonic_ns()}.log", "fastmesh rollout controller")
    started.admin = started.wait_event("ready", timeout=30)["admin"]  # type: ignore[attr-defined]
    return started


def proxy_pod(kube_api: client.ApiClient, namespace: str) -> None:
    """A Pod standing for the proxy: Running at 127.0.0.1 (no kubelet here: the test writes its status)."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})  # no controller-manager
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                           "metadata": {"name": "proxy-0", "labels": {"app": "fastmesh-proxy"}},
                                           "spec": {"containers": [{"name": "proxy", "image": "fastmesh"}]}})
    core.patch_namespaced_pod_status("proxy-0", namespace, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})


def route_weights(kube_api: client.ApiClient, namespace: str) -> tuple[int, int]:
    route = custom(kube_api).get_namespaced_custom_object(*GATEWAY, namespace, "httproutes", "reviews")
    refs = route["spec"]["rules"][1]["backendRefs"]
    return refs[0].get("weight", 1), refs[1].get("weight", 1)


@contextmanager
def weights_seen(kube_api: client.ApiClient, namespace: str) -> Iterator[list[tuple[int, int]]]:
    """The HTTPRoute's split as it changes (read every 50 ms), for at most 120 s."""
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            now = route_weights(kube_api, namespace)
            if not seen or seen[-1] != now:
                seen.append(now)
            stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


def status(kube_api: client.ApiClient, namespace: str) -> dict[str, Any]:
    obj = custom(kube_api).get_namespaced_custom_object("fastmesh.io", "v1alpha1", namespace, "rollouts", "reviews")
    found: dict[str, Any] = obj.get("status") or {}
    return found


def conditions(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in found.get("conditions", [])}


def events(kube_api: client.ApiClient, namespace: str) -> list[Any]:
    listed = client.EventsV1Api(kube_api).list_namespaced_event(namespace).items
    mine = [e for e in listed if e.regarding.kind == "Rollout" and e.regarding.name == "reviews"]
    return sorted(mine, key=lambda e: e.event_time)


@pytest.fixture
def mesh_proxy(kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str, loopback_fqdn: str,
               upstream_factory: Callable[..., Any], kube_proxies: list[Proxy],
               tmp_path: Path) -> Callable[..., Proxy]:
    """mesh_proxy(**v2 options) -> a `fastmesh proxy --kubernetes` on the namespace's reviews mesh (conftest
    `mesh`), reviews-v1 and reviews-v2 served by real upstreams answering "v1" and "v2"."""

    def start(**v2: Any) -> Proxy:
        v1, canary = upstream_factory("v1"), upstream_factory("v2", **v2)
        for doc in mesh(namespace, loopback_fqdn, v1, canary):
            create_object(kube_api, namespace, doc)
        px = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
        kube_proxies.append(px)
        return px

    return start


def test_a_healthy_canary_is_promoted_step_by_step_in_the_cluster(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    mesh_proxy: Callable[..., Proxy], tmp_path: Path,
) -> None:
    px = mesh_proxy()
    create_object(kube_api, namespace, rollout(namespace, [10, 50, 100], interval="3s"))  # time to look midway
    with weights_seen(kube_api, namespace) as seen, load(px) as running:
        ctl = start_controller(kube_cluster, namespace, px, tmp_path)
        try:
            midway = decision(ctl, "advanced", timeout=90)
            shown = fastmesh_cli("rollout", "status", "--admin", ctl.admin)  # type: ignore[attr-defined]
            done = decision(ctl, "promoted", "rolled_back", timeout=90)
            watched = fastmesh_cli("rollout", "status", "--admin", ctl.admin, "--watch")  # type: ignore[attr-defined]
            time.sleep(0.3)
        finally:
            ctl.stop()
        everything = running.since(0.0)
    assert done["decision"] == "promoted", ctl.events
    # the controller serves the same view as a proxy: `fastmesh rollout status` reads it
    lines = shown.stdout.splitlines()
    assert shown.returncode == 0 and midway["next_step"] == 1, shown
    assert lines[0].startswith(f"{namespace}/reviews  Progressing  weights: stable 50% canary 50%"), lines
    assert lines[1] == "  step 0  10% [####################] passed"
    assert lines[2].startswith("  step 1  50% [") and lines[2].endswith("s left")
    assert lines[5].startswith("  last window: pass (gates passed)")
    assert watched.returncode == 0 and "  step 2 100% [####################] passed" in watched.stdout, watched
    assert seen == [(100, 0), (90, 10), (50, 50), (0, 100)], seen
    assert everything and {s for _, s in everything} == {200}
    judged = [e for e in ctl.events if e.get("event") == "rollout" and e["decision"] in ("advanced", "promoted")]
    assert [(e["step"], e["canary_weight"]) for e in judged] == [(0, 10), (1, 50)]
    assert all(e["canary_requests"] >= 10 and e["canary_success_rate"] == 100.0 for e in judged)
    found = status(kube_api, namespace)
    assert (found["phase"], found["currentStep"], found["canaryWeight"], found["stableWeight"]) == ("Succeeded", 2, 100, 0)
    assert conditions(found) == {"Accepted": ("True", "Accepted"), "Progressing": ("False", "Succeeded"),
                                 "Succeeded": ("True", "AllStepsPassed"), "Failed": ("False", "Succeeded")}
    # `kubectl get rollouts.fastmesh.io` shows it (the CRD's printer columns, as the apiserver's Table)
    table = httpx.get(f"{kube_cluster.server}/apis/fastmesh.io/v1alpha1/namespaces/{namespace}/rollouts",
                      headers={"Authorization": f"Bearer {kube_cluster.token}",
                               "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
                      verify=ssl.create_default_context(cafile=kube_cluster.ca), timeout=10).json()
    assert [c["name"] for c in table["columnDefinitions"]][:4] == ["Name", "Phase", "Step", "Canary"]
    assert [row["cells"][:4] for row in table["rows"]] == [["reviews", "Succeeded", 2, 100]]
    listed = events(kube_api, namespace)
    assert [(e.reason, e.type) for e in listed] == [
        ("Started", "Normal"), ("StepAdvanced", "Normal"), ("Promoted", "Normal")], listed
    assert listed[1].note.startswith("advanced at step 0 (10% canary) -> 50% canary")
    assert {e.reporting_controller for e in listed} == {"fastmesh.io/rollout-controller"}


def test_a_failing_canary_is_rolled_back_in_the_cluster(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    mesh_proxy: Callable[..., Proxy], tmp_path: Path,
) -> None:
    px = mesh_proxy(fail_status=503, fail_every=20)  # the canary answers 5 % 503
    create_object(kube_api, namespace, rollout(namespace, [20, 50, 100], minSuccessRate=99, minRequests=20))
    proxy_pod(kube_api, namespace)  # the proxy is found as a Pod, as in a cluster
    port = px.admin_address.rpartition(":")[2]
    limited = controller_kubeconfig(kube_api, kube_cluster, namespace, tmp_path)  # only the documented RBAC
    with load(px) as running:
        ctl = start_controller(kube_cluster, namespace, px, tmp_path, kubeconfig=limited,
                               find=["--proxy-selector", "app=fastmesh-proxy", "--proxy-admin-port", port])
        try:
            failed = decision(ctl, "rolled_back", "advanced", "promoted", timeout=90)
            after = time.monotonic() + 1.0
            time.sleep(2.0)
            tail = running.since(after)
        finally:
            ctl.stop()
    assert failed["decision"] == "rolled_back" and failed["step"] == 0, ctl.events
    assert "minSuccessRate 99" in failed["reason"] and failed["canary_requests"] >= 20  # read from the Pod's /metrics
    # the first judgement of the first step with canary traffic, one interval after the proxy served it
    assert [e for e in ctl.events if e.get("event") == "rollout" and "window_s" in e] == [failed]
    print(f"\ncluster: 5 % 503 canary rolled back at step 0 (20 %) over a {failed['window_s']:.3f} s window"
          f" (interval 1 s), {failed['canary_requests']} canary responses, {failed['canary_success_rate']:.2f} %")
    assert 1.0 <= failed["window_s"] <= 1.0 + TICK_SLACK_S
    assert route_weights(kube_api, namespace) == (100, 0)
    assert tail and {who for who, _ in tail} == {"v1"}  # the proxy follows the HTTPRoute
    found = status(kube_api, namespace)
    assert (found["phase"], found["canaryWeight"], found["reason"]) == ("Failed", 0, failed["reason"])
    assert conditions(found)["Failed"] == ("True", "GateFailed")
    judged = found["lastJudgement"]
    assert (judged["decision"], judged["canary_requests"]) == ("fail", failed["canary_requests"])
    assert judged["canary_success_rate"] == failed["canary_success_rate"] < 99
    [message] = [c["message"] for c in found["conditions"] if c["type"] == "Failed"]
    assert message == failed["reason"]
    listed = events(kube_api, namespace)
    assert [(e.reason, e.type) for e in listed][-1] == ("RolledBack", "Warning")
    assert "minSuccessRate 99" in listed[-1].note


def test_a_restarted_controller_resumes_at_the_step_in_the_rollout_status(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    mesh_proxy: Callable[..., Proxy], tmp_path: Path,
) -> None:
    px = mesh_proxy()
    create_object(kube_api, namespace, rollout(namespace, [10, 25, 50, 100]))
    with load(px):
        ctl = start_controller(kube_cluster, namespace, px, tmp_path)
        try:
            while True:
                moved = decision(ctl, "advanced", "rolled_back", "promoted", timeout=90)
                assert moved["decision"] == "advanced", ctl.events
                if moved["next_step"] == 2:
                    break
        finally:
            assert ctl.stop(signal.SIGTERM) == 0
        found = status(kube_api, namespace)
        assert (found["phase"], found["currentStep"], found["canaryWeight"]) == ("Progressing", 2, 50)
        assert route_weights(kube_api, namespace) == (50, 50)
        again = start_controller(kube_cluster, namespace, px, tmp_path)
        try:
            restored = decision(again, "restored", "started", timeout=30)
            assert (restored["decision"], restored["step"], restored["canary_weight"]) == ("restored", 2, 50)
            moved = decision(again, "advanced", "promoted", "rolled_back", timeout=90)
        finally:
            again.stop()
    assert (moved["decision"], moved["step"]) == ("promoted", 2), again.events
    assert route_weights(kube_api, namespace) == (0, 100)


def test_operators_act_through_the_rollout_object_and_an_invalid_rollout_says_why(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    mesh_proxy: Callable[..., Proxy], tmp_path: Path,
) -> None:
    px = mesh_proxy()
    declared = rollout(namespace, [10, 50, 100], interval="30s")
    declared["spec"]["paused"] = True
    create_object(kube_api, namespace, declared)
    broken = rollout(namespace, [10, 100])
    broken["metadata"]["name"] = "broken"
    broken["spec"]["targetRef"]["name"] = "reviewz"
    create_object(kube_api, namespace, broken)

    def cli(verb: str, name: str = "reviews") -> Any:
        return fastmesh_cli("rollout", verb, f"{namespace}/{name}", "--kubernetes", "--kubeconfig",
                            str(kube_cluster.kubeconfig), "--wait", "30")

    limited = controller_kubeconfig(kube_api, kube_cluster, namespace, tmp_path)  # only the documented RBAC
    with load(px) as running:
        ctl = start_controller(kube_cluster, namespace, px, tmp_path, kubeconfig=limited)
        try:
            decision(ctl, "pending", timeout=30)
            assert wait_until(lambda: status(kube_api, namespace).get("phase") == "Pending", timeout=15)
            refused = cli("resume")
            assert refused.returncode == 1 and "Refused: cannot resume rollout" in refused.stdout, refused
            assert "it has not started: use start" in refused.stdout
            started = cli("start")
            assert started.returncode == 0 and "start: Done (phase Progressing, canary 10%)" in started.stdout, started
            assert wait_until(lambda: route_weights(kube_api, namespace) == (90, 10), timeout=15)
            aborted = cli("abort")
            assert aborted.returncode == 0 and "abort: Done (phase Aborted, canary 0%)" in aborted.stdout, aborted
            assert route_weights(kube_api, namespace) == (100, 0)
            invalid = cli("abort", "broken")
            assert invalid.returncode == 1 and "abort: Refused: no rollout" in invalid.stdout, invalid
            after = time.monotonic() + 1.0
            time.sleep(2.0)
            tail = running.since(after)
        finally:
            ctl.stop()
    assert tail and {who for who, _ in tail} == {"v1"}
    found = status(kube_api, namespace)
    assert conditions(found)["Failed"] == ("True", "Aborted") and found["lastAction"]["result"] == "Done"
    reasons = [(e.reason, e.type) for e in events(kube_api, namespace)]
    assert reasons == [("Pending", "Normal"), ("ActionRefused", "Warning"), ("Started", "Normal"),
                       ("Aborted", "Warning")], reasons
    bad = custom(kube_api).get_namespaced_custom_object("fastmesh.io", "v1alpha1", namespace, "rollouts", "broken")
    [accepted] = bad["status"]["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == ("Accepted", "False", "Invalid")
    assert accepted["message"].startswith("spec.targetRef.name: HTTPRoute") and "reviewz" in accepted["message"]
