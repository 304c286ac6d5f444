"""The test cluster is a real kube-apiserver with etcd: token auth, TokenRequest, RBAC, the mesh's kinds."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from deploy.testcluster import cluster as testcluster
from deploy.testcluster import toolchain
from tests.kube.conftest import create_object, custom


def _get(server: str, ca: str, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca), timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_apiserver_is_the_pinned_release_behind_tls_and_token_auth(kube_cluster: testcluster.Cluster) -> None:
    status, version = _get(kube_cluster.server, kube_cluster.ca, "/version", kube_cluster.token)
    assert status == 200
    assert version["gitVersion"].startswith(toolchain.pinned_kubernetes_version().split("-")[0])
    status, body = _get(kube_cluster.server, kube_cluster.ca, "/api/v1/namespaces", "not-the-token")
    assert status == 401, body
    status, body = _get(kube_cluster.server, kube_cluster.ca, "/api/v1/namespaces", kube_cluster.token)
    assert status == 200
    assert "default" in {item["metadata"]["name"] for item in body["items"]}


def test_kubectl_reaches_the_cluster_and_sees_the_crds(kube_cluster: testcluster.Cluster) -> None:
    names = kube_cluster.kubectl_run("get", "crd", "-o", "name").split()
    for crd in ("httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
                "trafficpolicies.fastmesh.io", "faultinjections.fastmesh.io",
                "authorizationpolicies.fastmesh.io", "proxies.fastmesh.io"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in names


def test_service_account_token_from_the_token_request_api(kube_api: client.ApiClient, namespace: str,
                                                          kube_cluster: testcluster.Cluster) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="app")))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = core.create_namespaced_service_account_token("app", namespace, request).status.token
    # The apiserver knows who holds it, and RBAC gives a ServiceAccount nothing until a Role says so.
    status, body = _get(kube_cluster.server, kube_cluster.ca, f"/api/v1/namespaces/{namespace}/services", token)
    assert status == 403, body
    assert f"system:serviceaccount:{namespace}:app" in body["message"]
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-services"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "app-reads-services"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-services"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": namespace}],
    })
    status, body = _get(kube_cluster.server, kube_cluster.ca, f"/api/v1/namespaces/{namespace}/services", token)
    assert status == 200, body


def _mesh_objects(namespace: str) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
         "spec": {"ports": [{"name": "http", "port": 9080, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "reviews-1", "labels": {"kubernetes.io/service-name": "reviews"}},
         "addressType": "FQDN", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["localhost.fastmesh.test"], "conditions": {"ready": True}}]},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "reviews"},
         "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
                  "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]}},
        {"apiVersion": "fastmesh.io/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "reviews"},
         "spec": {"targetRef": {"name": "reviews"}, "retry": {"attempts": 2, "retryOn": ["5xx"]},
                  "outlierDetection": {"consecutive5xxErrors": 3, "baseEjectionTime": "10s"}}},
    ]


def test_mesh_objects_are_created_and_listed_back(kube_api: client.ApiClient, namespace: str) -> None:
    for body in _mesh_objects(namespace):
        create_object(kube_api, namespace, body)
    services = client.CoreV1Api(kube_api).list_namespaced_service(namespace).items
    assert [(s.metadata.name, s.spec.ports[0].port) for s in services] == [("reviews", 9080)]
    slices = client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=reviews").items
    assert [(s.metadata.name, s.endpoints[0].addresses) for s in slices] == [("reviews-1", ["localhost.fastmesh.test"])]
    routes = custom(kube_api).list_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes")
    assert [r["spec"]["parentRefs"][0]["name"] for r in routes["items"]] == ["reviews"]
    policies = custom(kube_api).list_namespaced_custom_object("fastmesh.io", "v1alpha1", namespace, "trafficpolicies")
    (policy,) = policies["items"]
    assert policy["spec"]["retry"] == {"attempts": 2, "retryOn": ["5xx"]}  # no defaults written into it
    assert policy["spec"]["outlierDetection"]["consecutive5xxErrors"] == 3


def test_the_apiserver_refuses_loopback_endpoint_addresses(kube_api: client.ApiClient, namespace: str) -> None:
    """Why the tests' EndpointSlices are FQDN `localhost.fastmesh.test`: Kubernetes validation."""
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "lo"},
            "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": [{"addresses": ["127.0.0.1"]}]}
    with pytest.raises(ApiException) as err:
        create_object(kube_api, namespace, body)
    assert err.value.status == 422 and "loopback" in err.value.body


def test_gateway_api_validation_runs_in_the_apiserver(kube_api: client.ApiClient, namespace: str) -> None:
    bad = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bad"},
           "spec": {"rules": [{"backendRefs": [{"name": "reviews", "port": 9080, "weight": 2000000}]}]}}
    with pytest.raises(ApiException) as err:
        create_object(kube_api, namespace, bad)
    assert err.value.status == 422
    assert "weight" in err.value.body
