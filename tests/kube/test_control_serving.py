"""The control plane's serving certificate is renewed while proxies stay connected (fastmesh.control.serving),
and `--token-audience` refuses tokens minted for another audience (TokenReview spec.audiences), against the
test apiserver with real proxies, real TLS handshakes and TokenRequest-minted tokens."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client

from fastmesh.ca.authority import make_csr
from tests.harness import Proxy
from tests.kube.conftest import served_by
from tests.kube.test_control_plane import (TRUST_DOMAIN, ControlPlane, _certificate, control_stats,
                                           service_account_token, wait_for)
from tests.kube.test_control_plane import ca_dir, control_planes  # noqa: F401 - fixtures
from tests.kube.test_kube_routing import _patch_route, _until_only, _weights

SERVING_TTL = 4.0
"""--serving-cert-ttl of the renewal test: renewed every ~2.7 s."""


def _peer_certificate(address: str, bundle: Path) -> x509.Certificate:
    """The serving certificate a new TLS connection (verified against the CA bundle) is given."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(bundle))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_serving_certificate_is_renewed_and_connected_proxies_keep_their_stream(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, ca_dir: Path,
    reviews_mesh: Callable[..., Any], kube_proxies: list[Proxy], control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    reviews_mesh()
    token = service_account_token(kube_api, namespace, "reviews", tmp_path)
    bundle = ca_dir / "bundle.pem"
    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path,
                           extra_args=("--serving-cert-ttl", str(SERVING_TTL), "--lease-namespace", namespace))
    control_planes.append(control)
    def certificates() -> list[dict[str, Any]]:
        return [e for e in control.process.events if e["event"] == "serving_certificate"]

    assert certificates()[0]["renewals"] == 0  # issued at start, before "ready"
    px = Proxy.start_control_plane(control.url, bundle, token, tmp_path)
    kube_proxies.append(px)
    assert served_by(px, 5, host=f"reviews.{namespace}") == {"v1": 5}
    connected_with = certificates()[-1]  # (at most) the certificate the proxy's connection was made with

    # Two renewals, and past the proxy's certificate's notAfter: its stream (made with it) stays.
    renewed = wait_for(lambda: len(r := [e for e in certificates() if e["renewals"] > connected_with["renewals"]]) >= 2
                       and r, SERVING_TTL * 3, "two renewals")
    assert len({connected_with["serial"], *(e["serial"] for e in renewed)}) == len(renewed) + 1  # all new
    assert renewed[-1]["not_after"] > renewed[0]["not_after"] > connected_with["not_after"]
    wait_for(lambda: time.time() > connected_with["not_after"] + 0.5, SERVING_TTL * 2, "that certificate to expire")
    stats = control_stats(px)
    assert stats["connected"] and stats["connects"] == 1, stats  # the same stream since the start
    before = stats["version"]
    _patch_route(kube_api, namespace, "reviews", _weights(0, 100))  # and it still brings changes
    _until_only(px, "v2", deadline_s=20, host=f"reviews.{namespace}")
    assert control_stats(px)["connects"] == 1 and control_stats(px)["version"] > before

    # A new connection is given the newest certificate (serial and notAfter as the control plane says).
    latest, cert = certificates()[-1], _peer_certificate(control.address, bundle)
    if f"{cert.serial_number:x}" != latest["serial"]:  # renewed between the two lines: once more
        latest, cert = certificates()[-1], _peer_certificate(control.address, bundle)
    assert f"{cert.serial_number:x}" == latest["serial"]
    assert abs(cert.not_valid_after_utc.timestamp() - latest["not_after"]) < 1
    assert cert.not_valid_after_utc > datetime.now(UTC)
    newcomer = Proxy.start_control_plane(control.url, bundle, token, tmp_path)  # a proxy that connects now
    kube_proxies.append(newcomer)
    assert served_by(newcomer, 5, host=f"reviews.{namespace}") == {"v2": 5}
    assert control.stats()["serving_certificate"]["renewals"] >= 2


def _token(kube_api: client.ApiClient, namespace: str, name: str, audiences: list[str]) -> str:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=audiences,
                                                                                 expiration_seconds=600))
    return str(client.CoreV1Api(kube_api).create_namespaced_service_account_token(name, namespace, request)
               .status.token)


def test_a_token_for_another_audience_is_refused(
    kube_api: client.ApiClient, control_kubeconfig: Path, namespace: str, ca_dir: Path,
    control_planes: list[ControlPlane], tmp_path: Path,
) -> None:
    client.CoreV1Api(kube_api).create_namespaced_service_account(namespace, {"metadata": {"name": "a"}})
    for_fastmesh = _token(kube_api, namespace, "a", ["fastmesh"])
    for_apiserver = _token(kube_api, namespace, "a", [])  # the API server's own audience
    for_other = _token(kube_api, namespace, "a", ["vault"])
    control = ControlPlane(control_kubeconfig, ca_dir, tmp_path,
                           extra_args=("--token-audience", "fastmesh", "--lease-namespace", namespace))
    control_planes.append(control)
    bundle = ca_dir / "bundle.pem"
    spiffe_id = f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/a"

    granted = _certificate(control, bundle, for_fastmesh, make_csr(spiffe_id)[1])
    assert granted.status_code == 200, granted.text
    for token in (for_apiserver, for_other):
        refused = _certificate(control, bundle, token, make_csr(spiffe_id)[1])
        assert refused.status_code == 401, refused.text
        error = refused.json()["error"]
        assert "the token is not valid" in error and "audience fastmesh" in error, error

    # Without --token-audience, the API server's audience is what is taken (as before).
    plain = ControlPlane(control_kubeconfig, ca_dir, tmp_path, run=2, extra_args=("--lease-namespace", namespace))
    control_planes.append(plain)
    assert _certificate(plain, bundle, for_apiserver, make_csr(spiffe_id)[1]).status_code == 200
    assert _certificate(plain, bundle, for_fastmesh, make_csr(spiffe_id)[1]).status_code == 401
