"""The config kinds, each defined once: validation, field paths in errors and docs all come from here."""

from fastmesh.config.model.authorizationpolicy import AuthorizationPolicy
from fastmesh.config.model.base import KubeObject, ObjectMeta
from fastmesh.config.model.endpointslice import EndpointSlice
from fastmesh.config.model.faultinjection import FaultInjection
from fastmesh.config.model.httproute import HTTPRoute
from fastmesh.config.model.proxy import Proxy, ProxySpec
from fastmesh.config.model.rollout import Rollout
from fastmesh.config.model.service import Service
from fastmesh.config.model.trafficpolicy import TrafficPolicy

KINDS: tuple[type[KubeObject], ...] = (
    HTTPRoute, Service, EndpointSlice, Proxy, TrafficPolicy, FaultInjection, AuthorizationPolicy, Rollout
)
"""Every kind a config file may hold, in the order docs/config.md presents them."""

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "EndpointSlice",
    "FaultInjection",
    "HTTPRoute",
    "KubeObject",
    "ObjectMeta",
    "Proxy",
    "ProxySpec",
    "Rollout",
    "Service",
    "TrafficPolicy",
]
