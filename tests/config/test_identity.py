"""Issue 5 in the config: `spec.identity`, listener `mtls`, meshed Services, and what the worker
hands the proxy (the CA directory and token file resolved beside the config file)."""

from __future__ import annotations

import os
from collections.abc import Callable

from fastmesh.compiler import IdentitySettings, ProxySettings
from fastmesh.config import MeshConfig, compile_snapshot
from fastmesh.config.worker import compile_content
from fastmesh.overrides import Overrides
from tests.config.conftest import dedent

Load = Callable[[str], MeshConfig]

PROXY = """\
apiVersion: fastmesh.io/v1alpha1
kind: Proxy
metadata: {name: p}
spec:
  admin: {tokenFile: secrets/admin-token}
  identity: {trustDomain: td.test, namespace: shop, serviceAccount: cart, ca: {directory: ../ca}, certTTL: 1h}
  listeners:
    - {name: outbound, port: 15001}
    - {name: inbound, port: 15006, mtls: STRICT}
    - {name: legacy, port: 15007, mtls: PERMISSIVE}
    - {name: plain, port: 15008, mtls: DISABLE}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: books, annotations: {fastmesh.io/service-account: reviews-sa}}
spec: {ports: [{name: http, port: 9080}, {name: grpc, port: 9090, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec: {ports: [{port: 80}]}
"""


def test_listener_modes_compile_to_tls_mode_and_disable_is_absent(load: Load) -> None:
    listeners = {entry["name"]: entry for entry in compile_snapshot(load(PROXY))["listeners"]}
    assert listeners["inbound"] == {"name": "inbound", "address": "127.0.0.1:15006", "tls": {"mode": "STRICT"}}
    assert listeners["legacy"]["tls"] == {"mode": "PERMISSIVE"}
    assert "tls" not in listeners["plain"] and "tls" not in listeners["outbound"]


def test_meshed_service_backends_originate_mtls_to_its_identity(load: Load) -> None:
    backends = {b["name"]: b for b in compile_snapshot(load(PROXY))["backends"]}
    expected = {"identities": ["spiffe://td.test/ns/books/sa/reviews-sa"],
                "server_name": "reviews.books.svc.cluster.local"}
    assert backends["books/reviews:9080"]["tls"] == expected
    assert backends["books/reviews:9090"]["tls"] == expected
    assert backends["books/reviews:9090"]["protocol"] == "h2c"
    assert "tls" not in backends["default/legacy:80"]


def test_identity_defaults(load: Load) -> None:
    cfg = load(PROXY.replace("namespace: shop, ", "").replace(", certTTL: 1h", ""))
    identity = cfg.proxy.identity
    assert identity is not None
    assert identity.spiffe_id == "spiffe://td.test/ns/default/sa/cart"
    assert identity.cert_ttl == "24h"
    assert load("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n").proxy.identity is None


def test_worker_hands_over_identity_and_token_file_resolved_beside_the_config() -> None:
    source = "/etc/fastmesh/mesh.yaml"
    header, _ = compile_content(dedent(PROXY).encode(), source, Overrides())
    settings = ProxySettings.from_json(header["settings"])
    assert settings.identity == IdentitySettings(
        spiffe_id="spiffe://td.test/ns/shop/sa/cart", ca_directory="/etc/ca", cert_ttl_s=3600.0)
    assert settings.admin_token_file == "/etc/fastmesh/secrets/admin-token"
    header, _ = compile_content(b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n",
                                source, Overrides())
    assert "identity" not in header["settings"] and "admin_token_file" not in header["settings"]
    assert ProxySettings.from_json(header["settings"]).identity is None


def test_relative_config_path_gives_an_absolute_ca_directory() -> None:
    header, _ = compile_content(dedent(PROXY).encode(), "conf/mesh.yaml", Overrides())
    assert header["settings"]["identity"]["ca_directory"] == os.path.abspath("ca")


def test_admin_binds_loopback_by_default_and_has_no_token(load: Load) -> None:
    proxy = load("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n").proxy
    assert proxy.admin_address == "127.0.0.1:15000"
    assert proxy.admin.token_file is None
