"""fastmesh's CRDs (deploy/crds/, generated from the models) validate in the apiserver as the loader does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from fastmesh.config.crds import CRD_KINDS, plural
from tests.kube.conftest import create_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _policy(**spec: object) -> dict:
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "p"},
            "spec": {"targetRef": {"name": "reviews"}, **spec}}


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        ({"retry": {"attempts": 50}}, "spec.retry.attempts", "less than or equal to 20"),
        ({"retry": {"retryOn": ["5xx", "sometimes"]}}, "spec.retry.retryOn[1]", "Unsupported value"),
        ({"retry": {"perTryTimeout": "5 seconds"}}, "spec.retry.perTryTimeout", "should match"),
        ({"connectionPool": {"maxConnections": 0}}, "spec.connectionPool.maxConnections", "greater than or equal to 1"),
        ({"retry": {"attempts": "2"}}, "spec.retry.attempts", "must be of type integer"),
        ({"targetRef": {"kind": "Service"}}, "spec.targetRef.name", "Required value"),
    ],
)
def test_invalid_traffic_policy_is_rejected_naming_the_field(
    kube_api: client.ApiClient, namespace: str, spec: dict, field: str, why: str
) -> None:
    with pytest.raises(ApiException) as err:
        create_object(kube_api, namespace, _policy(**spec))
    assert err.value.status == 422, err.value.body
    assert field in err.value.body and why in err.value.body, err.value.body


def test_valid_traffic_policy_is_stored(kube_api: client.ApiClient, namespace: str) -> None:
    created = create_object(kube_api, namespace, _policy(
        retry={"attempts": 3, "retryOn": ["gateway-error"], "perTryTimeout": "1s500ms", "codes": [503]},
        connectionPool={"maxConnections": 10}, connectTimeout="2s",
    ))
    assert created["metadata"]["uid"]
    assert created["spec"]["retry"]["perTryTimeout"] == "1s500ms"


def test_every_fastmesh_kind_of_the_examples_is_accepted(kube_api: client.ApiClient, namespace: str) -> None:
    """What the file loader accepts, the apiserver accepts (server-side dry run of each example object)."""
    api = client.CustomObjectsApi(kube_api)
    tried = set()
    for example in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(example.read_text()):
            if not doc or not doc.get("apiVersion", "").startswith("fastmesh.io/"):
                continue
            group, version = doc["apiVersion"].split("/")
            doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            try:
                api.create_namespaced_custom_object(group, version, namespace, plural(doc["kind"]), doc,
                                                    dry_run="All")
            except ApiException as err:
                pytest.fail(f"{example.name}: {doc['kind']} {doc['metadata']['name']}: {err.status} {err.body}")
            tried.add(doc["kind"])
    assert tried == {kind.KIND for kind in CRD_KINDS}


def test_authorization_policy_is_accepted_and_validated(kube_api: client.ApiClient, namespace: str) -> None:
    policy = {
        "apiVersion": "fastmesh.io/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": "reads"},
        "spec": {"targetRefs": [{"kind": "Service", "name": "web"}],
                 "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}],
                            "to": [{"operation": {"methods": ["GET"], "ports": ["15006", 8080]}}]}]},
    }
    created = create_object(kube_api, namespace, policy)
    assert created["spec"]["rules"][0]["to"][0]["operation"]["ports"] == ["15006", 8080]
    policy["metadata"]["name"] = "bad"
    policy["spec"]["action"] = "MAYBE"
    with pytest.raises(ApiException) as err:
        create_object(kube_api, namespace, policy)
    assert err.value.status == 422 and "spec.action" in err.value.body, err.value.body


def test_session_persistence_is_pruned_by_the_standard_channel_httproute_crd(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """The installed Gateway API CRDs are the standard channel, where `sessionPersistence` is not (it is
    experimental): the apiserver drops it from a stored HTTPRoute, so in Kubernetes mode stickiness must
    come from the Rollout (`spec.stickiness`, a fastmesh CRD field) or the experimental-channel CRDs."""
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "sticky"},
             "spec": {"rules": [{"backendRefs": [{"name": "reviews", "port": 9080}],
                                 "sessionPersistence": {"sessionName": "s", "type": "Cookie"}}]}}
    created = create_object(kube_api, namespace, route)
    assert created["spec"]["rules"][0]["backendRefs"][0]["name"] == "reviews"
    assert "sessionPersistence" not in created["spec"]["rules"][0]


def test_a_rollout_with_stickiness_and_canary_header_is_stored(kube_api: client.ApiClient, namespace: str) -> None:
    rollout = {"apiVersion": "fastmesh.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"},
               "spec": {"targetRef": {"kind": "HTTPRoute", "name": "reviews"},
                        "stable": {"name": "reviews-v1"}, "canary": {"name": "reviews-v2"},
                        "steps": [10, 100], "interval": "1m", "gates": {"minSuccessRate": 99},
                        "stickiness": {"type": "Header", "header": "x-user"},
                        "canaryHeader": {"name": "x-tester", "stableValue": None}}}
    created = create_object(kube_api, namespace, rollout)
    assert created["spec"]["stickiness"] == {"type": "Header", "header": "x-user"}
    assert created["spec"]["canaryHeader"]["name"] == "x-tester"
