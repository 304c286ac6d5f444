"""Backends of the snapshot: one per Service port, one per external service, with their endpoints."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from fastmesh import spiffe
from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import EndpointSlice, Service
from fastmesh.config.model.httproute import FASTMESH_GROUP, HTTPBackendRef
from fastmesh.config.model.service import H2C, LB_ANNOTATION, LB_ANNOTATION_VALUES
from fastmesh.config.model.trafficpolicy import OutlierDetection, TrafficPolicySpec
from fastmesh.config.model.types import join_hostport, parse_duration


def service_backend(namespace: str, name: str, port: int) -> str:
    return f"{namespace}/{name}:{port}"


def external_backend(name: str) -> str:
    return f"external/{name}"


def resolve(cfg: MeshConfig, route_namespace: str, ref: HTTPBackendRef) -> str | None:
    """The backend a backendRef names, or None when it names nothing (its share answers 500)."""
    if (ref.group, ref.kind) == ("", "Service"):
        namespace = ref.namespace or route_namespace
        service = cfg.service(namespace, ref.name)
        if service is None or ref.port is None or service.port(ref.port) is None:
            return None
        return service_backend(namespace, ref.name, ref.port)
    if (ref.group, ref.kind) == (FASTMESH_GROUP, "ExternalService"):
        if any(e.name == ref.name for e in cfg.proxy.external_services):
            return external_backend(ref.name)
    return None


def _endpoints(slices: list[EndpointSlice], port_name: str | None) -> list[str]:
    """Ready addresses of the slices, at the slice port serving the Service port `port_name`."""
    found: dict[str, None] = {}  # ordered set
    wanted = port_name or None
    for eps in slices:
        for port in eps.ports:
            if (port.name or None) != wanted:
                continue
            if eps.address_type == "IPv6":
                for endpoint in eps.endpoints:
                    if endpoint.conditions.ready is not False:
                        for address in endpoint.addresses:
                            found[join_hostport(address, port.port)] = None
                continue
            suffix = f":{port.port}"  # IPv4 and DNS names: no brackets (join_hostport)
            for endpoint in eps.endpoints:
                if endpoint.conditions.ready is not False:
                    for address in endpoint.addresses:
                        found[address + suffix] = None
    return list(found)


def _lb(cfg: MeshConfig, service: Service) -> str:
    annotation = service.metadata.annotations.get(LB_ANNOTATION)
    return LB_ANNOTATION_VALUES.get(annotation or "", cfg.proxy.lb)


def _tls(cfg: MeshConfig, service: Service) -> dict[str, Any] | None:
    """Origination of mTLS to a meshed Service: the identity its endpoints must present."""
    account, identity = service.service_account, cfg.proxy.identity
    if account is None or identity is None:  # checks refuse a meshed Service without identity
        return None
    return {
        "identities": [spiffe.workload_id(identity.trust_domain, service.namespace, account)],
        "server_name": f"{service.name}.{service.namespace}.svc.cluster.local",
    }


def _outlier(o: OutlierDetection) -> dict[str, Any]:
    return {
        "consecutive_5xx": o.consecutive_5xx_errors,
        "consecutive_gateway_errors": o.consecutive_gateway_errors,
        "interval_ms": round(parse_duration(o.interval) * 1000),
        "base_ejection_ms": round(parse_duration(o.base_ejection_time) * 1000),
        "max_ejection_percent": o.max_ejection_percent,
    }


def _policy(spec: TrafficPolicySpec) -> dict[str, Any]:
    """The backend fields a TrafficPolicy sets: outlier detection, limits, timeouts."""
    out: dict[str, Any] = {}
    if spec.outlier_detection is not None:
        out["outlier_detection"] = _outlier(spec.outlier_detection)
    pool = spec.connection_pool
    if pool is not None:
        limits = {
            "max_connections": pool.max_connections,
            "max_pending_requests": pool.max_pending_requests,
            "max_requests": pool.max_requests,
            "max_retries": pool.max_retries,
        }
        out["limits"] = {k: v for k, v in limits.items() if v is not None}
    if spec.connect_timeout is not None:
        out["connect_timeout_ms"] = round(parse_duration(spec.connect_timeout) * 1000)
    if spec.idle_timeout is not None:
        out["idle_timeout_ms"] = round(parse_duration(spec.idle_timeout) * 1000)
    return out


def slices_by_service(slices: Iterable[EndpointSlice]) -> dict[tuple[str, str | None], list[EndpointSlice]]:
    """(namespace, Service name) -> its slices, in the order given."""
    found: dict[tuple[str, str | None], list[EndpointSlice]] = defaultdict(list)
    for eps in slices:
        found[(eps.namespace, eps.service_name)].append(eps)
    return found


def service_backends(cfg: MeshConfig, service: Service, slices: list[EndpointSlice]) -> list[dict[str, Any]]:
    """The backends of one Service: one per port, its endpoints from `slices` (the Service's own)."""
    backends = []
    lb, tls = _lb(cfg, service), _tls(cfg, service)
    for port in service.spec.ports:
        backend: dict[str, Any] = {
            "name": service_backend(service.namespace, service.name, port.port),
            "protocol": "h2c" if port.app_protocol == H2C else "http1",
            "lb": lb,
            "endpoints": _endpoints(slices, port.name),
        }
        if tls:
            backend["tls"] = tls
        policy = cfg.traffic_policy(service.namespace, service.name, port.port)
        if policy is not None:
            backend.update(_policy(policy.spec))
        backends.append(backend)
    return backends


def external_backends(cfg: MeshConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": external_backend(external.name),
            "protocol": "h2c" if external.protocol == "H2C" else "http1",
            "lb": cfg.proxy.lb,
            "endpoints": list(external.endpoints),
        }
        for external in cfg.proxy.external_services
    ]


def compile_backends(cfg: MeshConfig) -> list[dict[str, Any]]:
    slices = slices_by_service(cfg.endpoint_slices)
    backends = []
    for service in cfg.services:
        backends += service_backends(cfg, service, slices.get((service.namespace, service.name), []))
    return backends + external_backends(cfg)
