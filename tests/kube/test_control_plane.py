"""`fastmesh control` against the test apiserver, with real `fastmesh proxy --control-plane` processes, real
upstreams and real ServiceAccount tokens (TokenRequest API). The control plane watches every namespace
(other tests' objects stay: no controller deletes them), so requests name `reviews.<namespace>`. One watch serves several proxies; proxies keep
serving while the control plane is down and converge when it is back; a token gets a certificate for its own
identity only."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from kubernetes import client

from fastmesh.ca import CA
from fastmesh.ca.authority import make_csr
from tests.harness import PYTHON, Proxy, _Process, backend, proxy_spec, route, rule
from tests.kube.conftest import create_object, served_by
from tests.kube.test_kube_routing import _patch_route, _until_only, _weights

TRUST_DOMAIN = "cluster.local"


class ControlPlane:
    """`python -m fastmesh control --kubernetes` on 127.0.0.1 (port 0 the first time), once "ready"; give it
    the `control_kubeconfig` fixture's kubeconfig (only deploy/rbac/control-plane.yaml)."""

    def __init__(self, kubeconfig: str | Path, ca_dir: Path, tmp_path: Path, port: int = 0, run: int = 1,
                 extra_args: tuple[str, ...] = ()) -> None:
        argv = [PYTHON, "-m", "fastmesh", "control", "--kubernetes", "--kubeconfig", str(kubeconfig),
                "--listen", f"127.0.0.1:{port}", "--ca-dir", str(ca_dir), "--admin", "127.0.0.1:0", *extra_args]
        self.process = _Process(argv, tmp_path / f"control-{run}.stderr.log", "fastmesh control")
        try:
            self.ready = self.process.wait_event("ready", timeout=30)
        except BaseException:
            self.process.stop(signal.SIGKILL)
            raise
        self.address = self.ready["address"]
        self.url = f"https://{self.address}"
        self.port = int(self.address.rsplit(":", 1)[1])
        self.admin_url = f"http://{self.ready['admin']}"

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.admin_url}/stats", timeout=5).json())

    def kill(self) -> None:
        self.process.stop(signal.SIGKILL, timeout=5)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    CA.init(tmp_path / "ca", TRUST_DOMAIN)
    return tmp_path / "ca"


@pytest.fixture
def control_planes() -> Iterator[list[ControlPlane]]:
    started: list[ControlPlane] = []
    yield started
    codes = [control.process.stop(signal.SIGTERM, timeout=10) for control in started]
    assert all(code in (0, -signal.SIGKILL) for code in codes), codes  # SIGTERM: a clean exit (or killed by the test)


def service_account_token(kube_api: client.ApiClient, namespace: str, name: str, tmp_path: Path) -> Path:
    """A ServiceAccount and a token of it (TokenRequest API), written to a file as a projected token is."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = core.create_namespaced_service_account_token(name, namespace, request).status.token
    path = tmp_path / f"{namespace}-{name}.token"
    path.write_text(token)
    return path


def control_stats(px: Proxy) -> dict[str, Any]:
    return dict(px.stats()["orchestrator"]["control_plane"])


def compiler_children(px: Proxy) -> list[str]:
    """The command lines of the proxy's children that are the incremental compiler (a long-lived child)."""
    children = Path(f"/proc/{px.pid}/task/{px.pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if "fastmesh.config.cluster_worker" in cmdline:
            found.append(cmdline)
    return found


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < end, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)
    return result


@pytest.fixture
def two_proxies(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, ca_dir: Path,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], control_planes: list[ControlPlane],
    tmp_path: Path,
) -> tuple[ControlPlane, list[Proxy]]:
    """The reviews mesh in the test's namespace, a control plane, and two proxies of the namespace's
    ServiceAccount connected to it, serving reviews-v1."""
    reviews_mesh()
    token = service_account_token(kube_api, namespace, "reviews", tmp_path)
    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path)
    control_planes.append(control)
    proxies = [Proxy.start_control_plane(control.url, ca_dir / "bundle.pem", token, tmp_path) for _ in range(2)]
    kube_proxies.extend(proxies)
    for px in proxies:
        assert served_by(px, 10, host=f"reviews.{namespace}") == {"v1": 10}
    return control, proxies


def test_a_route_change_reaches_every_proxy_of_one_control_plane(
    kube_api: client.ApiClient, namespace: str, two_proxies: tuple[ControlPlane, list[Proxy]],
) -> None:
    control, proxies = two_proxies
    for px in proxies:
        stats = control_stats(px)
        assert stats["connected"] and stats["epoch"] == control.ready["epoch"] and stats["version"] >= 1

    # An invalid object is left out as with --kubernetes: the proxies reload without it, nothing refused.
    bad = route("reviews-regex", [rule(backend("reviews-v2"), matches=[
        {"path": {"type": "RegularExpression", "value": "/(unclosed"}}])], parent="reviews", namespace=namespace)
    create_object(kube_api, namespace, bad)
    for px in proxies:
        px.wait_event("reloaded", timeout=20)
        assert served_by(px, 10, host=f"reviews.{namespace}") == {"v1": 10}
        assert not [e for e in px.events if e["event"] == "reload_failed"]

    before = control_stats(proxies[0])["version"]
    patched = time.monotonic()
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))
    wait_for(lambda: control_stats(proxies[0])["version"] > before, 10, "the delta to reach the proxy")
    print(f"\npatch sent -> delta received by a proxy (polled /stats): {(time.monotonic() - patched) * 1000:.0f} ms")
    for px in proxies:
        shifted = _until_only(px, "v2", deadline_s=20, host=f"reviews.{namespace}") - patched
        print(f"proxy {px.pid}: all traffic on v2 {shifted * 1000:.0f} ms after the patch was sent")
    for px in proxies:  # each change was compiled incrementally: one long-lived compiler child, never restarted
        assert len(compiler_children(px)) == 1, compiler_children(px)
        assert not [e for e in px.events if e["event"] == "reload_failed"]
    pushed = [e for e in control.process.events if e["event"] == "pushed"]
    assert pushed and all(e["views"] == 1 for e in pushed)  # two proxies of one namespace: one view, one
    # delta for both
    assert all(control_stats(px)["connects"] == 1 for px in proxies)  # one stream each, no relist
    view = control.stats()["views"][namespace]
    assert view["subscribers"] == 2 and view["version"] == control_stats(proxies[0])["version"] >= 2
    metrics = httpx.get(f"{control.admin_url}/metrics", timeout=5).text
    assert f'fastmesh_control_view_subscribers{{view="{namespace}"}} 2.0' in metrics


def test_proxies_keep_serving_without_the_control_plane_and_converge_when_it_is_back(
    kube_api: client.ApiClient, namespace: str, two_proxies: tuple[ControlPlane, list[Proxy]],
    control_kubeconfig: Path, ca_dir: Path, control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    control, proxies = two_proxies

    control.kill()  # SIGKILL: no goodbye on the streams
    for px in proxies:
        wait_for(lambda: not control_stats(px)["connected"], 10, "the proxy to see the control plane gone")
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))  # a change while it is down
    time.sleep(1.0)
    for px in proxies:
        assert served_by(px, 20, host=f"reviews.{namespace}") == {"v1": 20}  # still serving, on the last config it had
        assert not [e for e in px.events if e["event"] == "reload_failed"]

    restarted = ControlPlane(control_kubeconfig, ca_dir, tmp_path, port=control.port, run=2)
    control_planes.append(restarted)
    assert restarted.ready["epoch"] != control.ready["epoch"]
    for px in proxies:  # they reconnect on their own and converge on the change made meanwhile
        _until_only(px, "v2", deadline_s=30, host=f"reviews.{namespace}")
        stats = wait_for(lambda: (s := control_stats(px))["connected"] and s, 10, "the proxy to reconnect")
        assert stats["epoch"] == restarted.ready["epoch"] and stats["connects"] >= 2
    metrics = httpx.get(f"{proxies[0].admin_url}/metrics", timeout=5).text
    assert "fastmesh_control_plane_connected 1.0" in metrics


def _certificate(control: ControlPlane, bundle: Path, token: str | None, csr_pem: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    with httpx.Client(http1=False, http2=True, verify=ssl.create_default_context(cafile=str(bundle)),
                      timeout=15) as http:
        response = http.post(f"{control.url}/v1/certificate", json={"csr": csr_pem}, headers=headers)
    assert response.http_version == "HTTP/2"
    return response


def _uri_sans(cert_chain_pem: str) -> list[str]:
    leaf = x509.load_pem_x509_certificates(cert_chain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def test_a_token_gets_a_certificate_for_its_own_identity_only(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, ca_dir: Path,
    control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    token_a = service_account_token(kube_api, namespace, "a", tmp_path).read_text()
    token_b_path = service_account_token(kube_api, namespace, "b", tmp_path)
    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path)
    control_planes.append(control)
    bundle = ca_dir / "bundle.pem"
    id_a = f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/a"
    id_b = f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/b"

    refused = _certificate(control, bundle, token_a, make_csr(id_b)[1])
    assert refused.status_code == 403, refused.text
    assert f"the token proves {id_a}; the CSR asks for {id_b}" in refused.json()["error"]

    granted = _certificate(control, bundle, token_a, make_csr(id_a)[1])
    assert granted.status_code == 200, granted.text
    assert _uri_sans(granted.json()["cert_chain_pem"]) == [id_a]
    assert granted.json()["bundle_pem"] == bundle.read_text()

    # Invalid tokens: none, garbage, and a real one whose ServiceAccount was deleted since.
    assert _certificate(control, bundle, None, make_csr(id_a)[1]).status_code == 401
    garbage = _certificate(control, bundle, "not-a-token", make_csr(id_a)[1])
    assert garbage.status_code == 401 and "the token is not valid" in garbage.json()["error"]
    client.CoreV1Api(kube_api).delete_namespaced_service_account("b", namespace)
    stale = _certificate(control, bundle, token_b_path.read_text(), make_csr(id_b)[1])
    assert stale.status_code == 401, stale.text
    # The config stream is behind the same check.
    with httpx.Client(http1=False, http2=True, verify=ssl.create_default_context(cafile=str(bundle)),
                      timeout=15) as http:
        assert http.get(f"{control.url}/v1/config", headers={"authorization": "Bearer nope"}).status_code == 401


def _identity_spec(namespace: str, service_account: str) -> dict[str, Any]:
    return proxy_spec(listeners=[{"name": "outbound", "port": 15001}],
                      identity={"trustDomain": TRUST_DOMAIN, "namespace": namespace,
                                "serviceAccount": service_account, "ca": {"directory": "/unused"}})


def test_a_proxy_gets_its_workload_certificate_from_the_control_plane(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, other_namespace: str,
    ca_dir: Path, kube_proxies: list[Proxy], control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    token = service_account_token(kube_api, namespace, "a", tmp_path)
    create_object(kube_api, namespace, _identity_spec(namespace, "a"))
    # In the other namespace, the Proxy object claims an identity its token does not prove.
    other_token = service_account_token(kube_api, other_namespace, "a", tmp_path)
    create_object(kube_api, other_namespace, _identity_spec(other_namespace, "b"))
    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path)
    control_planes.append(control)

    px = Proxy.start_control_plane(control.url, ca_dir / "bundle.pem", token, tmp_path)
    kube_proxies.append(px)
    identity = next(e for e in px.events if e["event"] == "identity")
    assert identity["spiffe_id"] == f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/a"
    metrics = httpx.get(f"{px.admin_url}/metrics", timeout=5).text
    assert f'fastmesh_identity_renewals_total{{spiffe_id="{identity["spiffe_id"]}"}} 1.0' in metrics

    with pytest.raises(AssertionError, match="exited") as refused:
        Proxy.start_control_plane(control.url, ca_dir / "bundle.pem", other_token, tmp_path)
    assert f"the token proves spiffe://{TRUST_DOMAIN}/ns/{other_namespace}/sa/a" in str(refused.value)
