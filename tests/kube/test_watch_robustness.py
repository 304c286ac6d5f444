"""Issue 6, "must be shown": against the real kube-apiserver, the proxy's view converges with nothing
missed across an API server restart, and across a 410 Gone (a watch from a compacted resourceVersion).

These tests restart kube-apiserver and compact etcd, so they run on a cluster of their own (one per
module, deploy/testcluster/), not the session's. Traffic through the real proxy shows the view.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from deploy.testcluster import cluster as testcluster
from tests.harness import Proxy, Upstream, service
from tests.kube.conftest import create_object, custom, mesh, served_by
from tests.kube.test_kube_routing import GATEWAY, _until_only, _weights


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testcluster.Cluster]:
    try:
        started = testcluster.start(tmp_path_factory.mktemp("kube-restart"))
    except (testcluster.ClusterError, testcluster.toolchain.BuildError) as err:
        pytest.fail(f"the test cluster did not start: {err}")
    yield started
    started.stop()


def _api(cluster: testcluster.Cluster) -> client.ApiClient:
    """A new client (connections of an old one may point at the apiserver before a restart)."""
    return config.new_client_from_config(config_file=cluster.kubeconfig)


def _namespace(cluster: testcluster.Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(_api(cluster)).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _v2_to(api: client.ApiClient, namespace: str, host: str, v3: Upstream) -> None:
    """reviews-v2's endpoints now on upstream v3: its slice deleted, a new one (another name) created."""
    discovery = client.DiscoveryV1Api(api)
    for eps in discovery.list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=reviews-v2"
    ).items:
        discovery.delete_namespaced_endpoint_slice(eps.metadata.name, namespace)
    new = [d for d in service("reviews-v2", [f"{host}:{v3.port}"], namespace=namespace, address_type="FQDN")
           if d["kind"] == "EndpointSlice"][0]
    new["metadata"]["name"] = "reviews-v2-moved"
    create_object(api, namespace, new)


def _start(cluster: testcluster.Cluster, upstream_factory: Callable[..., Any], host: str,
           tmp_path: Path) -> tuple[str, Proxy, Upstream]:
    """The reviews mesh (all to v1) in a fresh namespace, a proxy on it; (namespace, proxy, v3)."""
    namespace = _namespace(cluster)
    v1, v2, v3 = upstream_factory.many(["v1", "v2", "v3"])
    api = _api(cluster)
    for doc in mesh(namespace, host, v1, v2):
        if doc["kind"] == "Service" and doc["metadata"]["name"] == "reviews-v2":
            # round robin: an endpoint left behind (a deletion missed) would answer every other request
            doc["metadata"]["annotations"] = {"fastmesh.io/load-balancer": "round-robin"}
        create_object(api, namespace, doc)
    px = Proxy.start_kubernetes(cluster.kubeconfig, namespace, tmp_path,
                                extra_args=["--no-kube-status"])
    assert served_by(px, 10) == {"v1": 10}
    return namespace, px, v3


def _log(px: Proxy) -> str:
    return px.process.stderr_tail(lines=10_000)


def test_an_apiserver_restart_loses_no_change(
    own_cluster: testcluster.Cluster, upstream_factory: Callable[..., Any], loopback_fqdn: str, tmp_path: Path,
) -> None:
    """A route change made just before kube-apiserver stops and an EndpointSlice change made just after it
    is back: the proxy's watches fail meanwhile, resume, and both changes serve."""
    namespace, px, v3 = _start(own_cluster, upstream_factory, loopback_fqdn, tmp_path)
    try:
        custom(_api(own_cluster)).patch_namespaced_custom_object(
            *GATEWAY, namespace, "httproutes", "reviews", _weights(0, 100))  # just before the stop
        own_cluster.stop_apiserver()
        time.sleep(2)  # the watches fail and back off
        own_cluster.start_apiserver()
        _v2_to(_api(own_cluster), namespace, loopback_fqdn, v3)  # just after the restart
        _until_only(px, "v3", deadline_s=60)
        assert served_by(px, 20) == {"v3": 20}
        assert served_by(px, 5, **{"x-version": "v2"}) == {"v3": 5}
        assert "watching again in" in _log(px)  # the watches did break (fastmesh.kube.watch backoff)
    finally:
        px.terminate(timeout=15)


def test_a_410_gone_relists_and_misses_nothing_from_the_gap(
    own_cluster: testcluster.Cluster, upstream_factory: Callable[..., Any], loopback_fqdn: str, tmp_path: Path,
) -> None:
    """The proxy is frozen (SIGSTOP) at its watches' resourceVersions; meanwhile the route changes, a slice
    is deleted and another created, etcd is compacted and kube-apiserver restarted (its watch cache starts
    after those versions). Resumed, the watches get 410 Gone and relist: every change of the gap serves,
    the deleted slice's endpoint too is gone."""
    namespace, px, v3 = _start(own_cluster, upstream_factory, loopback_fqdn, tmp_path)
    try:
        px.process.send_signal(signal.SIGSTOP)
        try:
            api = _api(own_cluster)
            custom(api).patch_namespaced_custom_object(*GATEWAY, namespace, "httproutes", "reviews", _weights(0, 100))
            _v2_to(api, namespace, loopback_fqdn, v3)
            own_cluster.compact_etcd()
            own_cluster.stop_apiserver()
            own_cluster.start_apiserver()
        finally:
            px.process.send_signal(signal.SIGCONT)
        _until_only(px, "v3", deadline_s=60)
        assert served_by(px, 20) == {"v3": 20}  # v2's old slice is gone: nothing answers from v2
        assert "is gone: listing again" in _log(px)  # the 410 was seen (fastmesh.kube.watch)
    finally:
        px.terminate(timeout=15)



def test_the_control_planes_transport_relists_after_a_410_with_nothing_missed(
    own_cluster: testcluster.Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    """The control plane's reflectors read through the `kubernetes` client (KubernetesTransport). Listed, then
    left at that resourceVersion while a Service is deleted and another created, etcd compacted and
    kube-apiserver restarted: a watch from that version raises Gone, and the Reflector relists — the deleted
    one is gone, the created one there, and a change after that arrives by the watch."""
    from fastmesh.kube.apiclient import KubernetesTransport
    from fastmesh.kube.kubeconfig import load_kubeconfig
    from fastmesh.kube.watch import Backoff, Gone, Reflector

    namespace = _namespace(own_cluster)
    core = client.CoreV1Api(_api(own_cluster))

    def svc(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}

    core.create_namespaced_service(namespace, svc("old"))
    transport = KubernetesTransport(load_kubeconfig(own_cluster.kubeconfig))
    reflector = Reflector(transport, "Service", "v1", "services", namespace, lambda: None,
                          backoff=Backoff(0.1, 1.0), watch_timeout_s=30)
    assert reflector._list()
    stale = reflector.resource_version
    assert set(reflector.items) == {(namespace, "old")}

    core.delete_namespaced_service("old", namespace)
    core.create_namespaced_service(namespace, svc("new"))
    own_cluster.compact_etcd()
    own_cluster.stop_apiserver()
    own_cluster.start_apiserver()
    core = client.CoreV1Api(_api(own_cluster))

    with pytest.raises(Gone):  # the transport itself: a watch from a compacted version is Gone
        list(transport.watch("v1", "services", namespace, stale, 5))

    caplog.set_level("INFO", logger="fastmesh.kube")
    thread = threading.Thread(target=reflector.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while reflector.lists < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reflector.lists == 2, caplog.text
        assert "is gone: listing again" in caplog.text
        assert set(reflector.items) == {(namespace, "new")}  # nothing missed from the gap
        core.create_namespaced_service(namespace, svc("after"))
        while (namespace, "after") not in reflector.items and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(reflector.items) == {(namespace, "new"), (namespace, "after")}
        assert reflector.lists == 2  # the watch, not another list
    finally:
        reflector.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()  # stop() ends a watch waiting for its next event
