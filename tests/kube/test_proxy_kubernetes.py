"""`fastmesh proxy --kubernetes` serves what the cluster holds, as it would serve the same objects from a file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from deploy.testcluster import cluster as testcluster
from fastmesh.kube.kubeconfig import load_kubeconfig
from fastmesh.kube.source import KubeSource
from tests.harness import Proxy, Upstream
from tests.kube.conftest import create_object, mesh as _mesh, served_by as _served_by


def test_proxy_routes_per_an_httproute_of_the_cluster(
    kube_cluster: testcluster.Cluster, namespace: str, reviews_mesh: Callable[..., Any],
    kube_proxies: list[Proxy], tmp_path: Path,
) -> None:
    reviews_mesh()
    px = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
    kube_proxies.append(px)
    assert _served_by(px, 10) == {"v1": 10}
    assert _served_by(px, 5, **{"x-version": "v2"}) == {"v2": 5}

    # A change made in the cluster (here with kubectl) reaches the proxy.
    patch = {"spec": {"rules": [{"backendRefs": [{"name": "reviews-v2", "port": 8080}]}]}}
    kube_cluster.kubectl_run("-n", namespace, "patch", "httproute", "reviews", "--type=merge", "-p", json.dumps(patch))
    px.wait_event("reloaded", timeout=20)
    assert _served_by(px, 10) == {"v2": 10}


def test_cluster_objects_compile_to_the_snapshot_of_the_same_file(
    kube_api: client.ApiClient, kube_cluster: testcluster.Cluster, namespace: str,
    upstream_factory: Callable[..., Upstream], kube_proxies: list[Proxy], tmp_path: Path,
    proxy_factory: Callable[..., Proxy], loopback_fqdn: str,
) -> None:
    v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
    docs = _mesh(namespace, loopback_fqdn, v1, v2, weights=(90, 10))
    for doc in docs:
        create_object(kube_api, namespace, doc)
    from_cluster = Proxy.start_kubernetes(kube_cluster.kubeconfig, namespace, tmp_path)
    kube_proxies.append(from_cluster)
    from_file = proxy_factory(yaml.safe_dump_all(docs, sort_keys=False))

    def snapshot(px: Proxy) -> dict[str, Any]:
        config = httpx.get(f"{px.admin_url}/config", timeout=5).json()
        config = config.get("snapshot", config)
        config.pop("version", None)
        for listener in config.get("listeners", []):
            listener.pop("address", None)  # each proxy has its own free port
        return config

    served = snapshot(from_cluster)
    assert served == snapshot(from_file)
    endpoints = {b["name"]: b["endpoints"] for b in served["backends"]}
    assert endpoints[f"{namespace}/reviews-v1:8080"] == [f"{loopback_fqdn}:{v1.port}"]
    assert f"{namespace}/reviews" in json.dumps(served["vhosts"])


def test_source_leaves_out_what_fastmesh_does_not_proxy(kube_api: client.ApiClient,
                                                        kube_cluster: testcluster.Cluster, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(namespace, {"metadata": {"name": "dns"}, "spec": {"ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}})
    core.create_namespaced_service(namespace, {"metadata": {"name": "udp-only"},
                                               "spec": {"ports": [{"port": 514, "protocol": "UDP"}]}})
    core.create_namespaced_service(namespace, {"metadata": {"name": "ext"},
                                               "spec": {"type": "ExternalName", "externalName": "example.com"}})
    source = KubeSource(load_kubeconfig(kube_cluster.kubeconfig), namespace)
    services = {d["metadata"]["name"]: d for d in source.objects() if d["kind"] == "Service"}
    assert sorted(services) == ["dns"]
    assert [p["name"] for p in services["dns"]["spec"]["ports"]] == ["dns-tcp"]
    assert source.read() == source.read()  # same state, same bytes: no reload


def test_an_unreachable_or_unauthorized_cluster_is_a_clear_error(
    kube_cluster: testcluster.Cluster, tmp_path: Path
) -> None:
    config = json.loads(Path(kube_cluster.kubeconfig).read_text())
    config["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "kubeconfig"
    bad.write_text(json.dumps(config))
    from fastmesh.kube import KubeError

    with pytest.raises(KubeError, match="401"):
        KubeSource(load_kubeconfig(bad), "default").read()
