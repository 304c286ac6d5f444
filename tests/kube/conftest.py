"""A real kube-apiserver + etcd for the Kubernetes tests (deploy/testcluster/), one per session.

FASTMESH_TEST_CLUSTER=DIR uses a cluster already started with `cluster.py start --dir DIR` (left running);
otherwise the session starts one in a temporary directory and stops it at the end. A toolchain or start
failure fails these tests: it never skips them.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from deploy.testcluster import cluster as testcluster
from fastmesh.config.crds import plural
from tests.harness import REPO, Proxy, Upstream, backend, proxy_spec, route, rule, service


LOOPBACK_FQDN = "localhost.fastmesh.test"
"""An EndpointSlice address for upstreams on 127.0.0.1: the apiserver refuses loopback IPs, and a FQDN
needs two labels; `make system-deps` maps this name in /etc/hosts."""


@pytest.fixture(scope="session")
def loopback_fqdn() -> str:
    try:
        found = {info[4][0] for info in socket.getaddrinfo(LOOPBACK_FQDN, 80, socket.AF_INET, socket.SOCK_STREAM)}
    except socket.gaierror as err:
        pytest.fail(f"{LOOPBACK_FQDN} does not resolve ({err}): run `make system-deps` (adds it to /etc/hosts)")
    assert found == {"127.0.0.1"}, f"{LOOPBACK_FQDN} resolves to {found}, not 127.0.0.1"
    return LOOPBACK_FQDN


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testcluster.Cluster]:
    existing = os.environ.get("FASTMESH_TEST_CLUSTER")
    if existing:
        running = testcluster.Cluster.load(Path(existing))
        if not running.pids or not all(running.alive().values()):
            pytest.fail(f"FASTMESH_TEST_CLUSTER={existing}: the cluster there is not running ({running.pids})")
        yield running
        return
    try:
        started = testcluster.start(tmp_path_factory.mktemp("kube"))
    except (testcluster.ClusterError, testcluster.toolchain.BuildError) as err:
        pytest.fail(f"the test cluster did not start: {err}")
    yield started
    pids = dict(started.pids)
    started.stop()
    left = [f"{name} (pid {pid})" for name, pid in pids.items() if testcluster._pid_alive(pid)]
    assert not left, f"still running after stop: {left}"


@pytest.fixture(scope="session")
def kube_api(kube_cluster: testcluster.Cluster) -> client.ApiClient:
    """A `kubernetes` client authenticated with the admin token of the kubeconfig."""
    return config.new_client_from_config(config_file=kube_cluster.kubeconfig)


def _fresh_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (its objects go with it)."""
    yield from _fresh_namespace(kube_api)


@pytest.fixture
def other_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A second fresh namespace."""
    yield from _fresh_namespace(kube_api)


def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def create_object(kube_api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create one object given as a manifest (core, discovery, Gateway API or fastmesh.io kinds)."""
    api_version, kind = body["apiVersion"], body["kind"]
    if api_version == "v1" and kind == "Service":
        return client.CoreV1Api(kube_api).create_namespaced_service(namespace, body).to_dict()
    if api_version == "discovery.k8s.io/v1" and kind == "EndpointSlice":
        return client.DiscoveryV1Api(kube_api).create_namespaced_endpoint_slice(namespace, body).to_dict()
    group, version = api_version.split("/")
    return custom(kube_api).create_namespaced_custom_object(group, version, namespace, plural(kind), body)


@pytest.fixture
def kube_proxies(tmp_path: Path) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for px in started:
        px.terminate(timeout=15)


def mesh(namespace: str, host: str, v1: Upstream, v2: Upstream,
          weights: tuple[int, int] = (100, 0)) -> list[dict[str, Any]]:
    """reviews (GAMMA): x-version: v2 pins reviews-v2, the rest is split by `weights`."""
    docs = [proxy_spec(listeners=[{"name": "outbound", "port": 15001}])]
    docs += service("reviews", namespace=namespace, port=9080)
    # FQDN endpoints: the apiserver refuses loopback IPs in EndpointSlices, and the tests have only loopback.
    docs += service("reviews-v1", [f"{host}:{v1.port}"], namespace=namespace, address_type="FQDN")
    docs += service("reviews-v2", [f"{host}:{v2.port}"], namespace=namespace, address_type="FQDN")
    docs.append(route("reviews", [
        rule(backend("reviews-v2"), matches=[{"headers": [{"name": "x-version", "value": "v2"}]}]),
        rule(backend("reviews-v1", weights[0]), backend("reviews-v2", weights[1])),
    ], parent="reviews", namespace=namespace))
    return docs


def served_by(px: Proxy, n: int, host: str = "reviews", **headers: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with httpx.Client(timeout=10) as http:
        for _ in range(n):
            response = http.get(f"{px.url}/", headers={"host": host, **headers})
            assert response.status_code == 200, response.text
            who = response.json()["upstream"]
            counts[who] = counts.get(who, 0) + 1
    return counts


@pytest.fixture
def reviews_mesh(kube_api: client.ApiClient, namespace: str, upstream_factory: Callable[..., Upstream],
                 loopback_fqdn: str) -> Callable[..., tuple[Upstream, Upstream]]:
    """reviews_mesh(weights=(100, 0)) -> (v1, v2): the objects of `mesh` created in the test's namespace,
    reviews-v1 and reviews-v2 served by two real upstreams answering "v1" and "v2"."""

    def create(weights: tuple[int, int] = (100, 0)) -> tuple[Upstream, Upstream]:
        v1, v2 = upstream_factory.many(["v1", "v2"])  # type: ignore[attr-defined]
        for doc in mesh(namespace, loopback_fqdn, v1, v2, weights):
            create_object(kube_api, namespace, doc)
        return v1, v2

    return create


@pytest.fixture(scope="session")
def control_kubeconfig(kube_api: client.ApiClient, kube_cluster: testcluster.Cluster,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig of a ServiceAccount (fastmesh-system/fastmesh-control) with only
    deploy/rbac/control-plane.yaml, bound cluster-wide: what `fastmesh control` runs with in the tests."""
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    role = yaml.safe_load((REPO / "deploy" / "rbac" / "control-plane.yaml").read_text())
    name, namespace = "fastmesh-control", "fastmesh-system"
    binding = {"metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": role["metadata"]["name"]},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}
    for create, body in ((core.create_namespace, {"metadata": {"name": namespace}}),
                         (rbac.create_cluster_role, role), (rbac.create_cluster_role_binding, binding)):
        try:
            create(body)
        except client.ApiException as e:
            if e.status != 409:  # there already (a cluster kept between sessions)
                raise
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except client.ApiException as e:
        if e.status != 409:
            raise
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                 expiration_seconds=6 * 3600))
    config = json.loads(Path(kube_cluster.kubeconfig).read_text())
    config["users"][0]["user"]["token"] = core.create_namespaced_service_account_token(name, namespace,
                                                                                       request).status.token
    path = tmp_path_factory.mktemp("control") / "control.kubeconfig"
    path.write_text(json.dumps(config))
    return path
