"""load_text / load_file: documents, defaults, metadata leniency, spec strictness."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fastmesh.config import ConfigError, MeshConfig, document_count, load_text
from fastmesh.config.model import HTTPRoute, Service

Load = Callable[[str], MeshConfig]


def test_empty_documents_are_skipped_but_counted(load: Load) -> None:
    cfg = load(
        """
        # a comment
        ---
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{port: 80}]}
        ---
        """
    )
    assert document_count(cfg) == 1
    assert [d.index for d in cfg.documents] == [2]
    assert cfg.summary() == "1 Service"


def test_an_empty_file_is_a_config_with_defaults(load: Load) -> None:
    cfg = load("")
    assert cfg.documents == () and cfg.proxy.admin_address == "127.0.0.1:15000"
    assert cfg.proxy.drain_timeout_s == 10.0 and cfg.proxy.worker_threads == 1
    assert [(li.name, li.address, li.port) for li in cfg.proxy.listeners] == [("outbound", "127.0.0.1", 15001)]


def test_metadata_extras_and_status_are_ignored(load: Load) -> None:
    cfg = load(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
          uid: 0b3c2a4e-1111-2222-3333-444455556666
          resourceVersion: "12345"
          creationTimestamp: 2024-05-01T10:00:00Z
          labels: {app: web}
          managedFields: [{manager: kubectl}]
        spec:
          type: ClusterIP
          clusterIP: 10.96.0.10
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
        status:
          loadBalancer: {}
        """
    )
    (web,) = cfg.services
    assert isinstance(web, Service) and web.ref == "shop/web"
    assert web.metadata.creation_timestamp is not None and web.metadata.creation_timestamp.year == 2024
    assert cfg.service("shop", "web") is web


def test_models_are_frozen(load: Load) -> None:
    cfg = load("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n")
    with pytest.raises(ValueError):
        setattr(cfg.services[0].spec.ports[0], "port", 81)


def test_route_attachment(load: Load) -> None:
    cfg = load(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r, namespace: shop}
        spec:
          parentRefs: [{group: "", kind: Service, name: web}, {group: "", kind: Service, name: web, namespace: other}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: other}
        spec: {ports: [{port: 80}]}
        """
    )
    (route,) = cfg.routes
    assert isinstance(route, HTTPRoute)
    assert [(ns, name) for ns, name, _ in route.service_parents()] == [("shop", "web"), ("other", "web")]
    assert not route.on_listeners()


def test_source_names_the_text_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("apiVersion: v1\nkind: Nope\nmetadata: {name: x}\n", source="inline.yaml")
    assert str(info.value).startswith("inline.yaml: document 1 (Nope default/x): kind: unknown kind 'Nope'")
