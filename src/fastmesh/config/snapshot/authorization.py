"""`listeners[].authorization` of the snapshot: the AuthorizationPolicies of each inbound listener's Service."""

from __future__ import annotations

from typing import Any

from fastmesh.config.mesh import MeshConfig
from fastmesh.config.model import AuthorizationPolicy
from fastmesh.config.model.authorizationpolicy import Operation, Rule, Source, principal_uri
from fastmesh.config.model.proxy import ListenerSpec


def _fields(pairs: list[tuple[str, list[Any]]]) -> dict[str, list[Any]]:
    """Only the fields that are set: an absent list means "any" to the engine."""
    return {name: values for name, values in pairs if values}


def _source(s: Source) -> dict[str, list[Any]]:
    return _fields(
        [
            ("principals", [principal_uri(p) for p in s.principals]),
            ("not_principals", [principal_uri(p) for p in s.not_principals]),
            ("namespaces", s.namespaces),
            ("not_namespaces", s.not_namespaces),
        ]
    )


def _operation(o: Operation) -> dict[str, list[Any]]:
    return _fields(
        [
            ("methods", o.methods),
            ("not_methods", o.not_methods),
            ("paths", o.paths),
            ("not_paths", o.not_paths),
            ("ports", o.ports),
            ("not_ports", o.not_ports),
            ("hosts", o.hosts),
            ("not_hosts", o.not_hosts),
        ]
    )


def _rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.from_:
        out["from"] = [_source(f.source) for f in rule.from_]
    if rule.to:
        out["to"] = [_operation(t.operation) for t in rule.to]
    return out


def applies(policy: AuthorizationPolicy, service: tuple[str, str]) -> bool:
    """Whether `policy` protects the workload of Service (namespace, name): it targets the Service,
    or it has no targets and is in the Service's namespace."""
    namespace, name = service
    if policy.namespace != namespace:
        return False
    refs = policy.spec.target_refs
    return not refs or any(ref.name == name for ref in refs)


def compile_authorization(cfg: MeshConfig, listener: ListenerSpec) -> dict[str, Any] | None:
    """The listener's `authorization`, or None when it serves no Service inbound."""
    service = listener.inbound_service_ref
    if service is None:
        return None
    policies = sorted(
        (p for p in cfg.objects(AuthorizationPolicy) if applies(p, service)), key=lambda p: p.ref
    )
    return {
        "default_deny": cfg.proxy.authorization.default_deny,
        "policies": [
            {"name": p.ref, "action": p.spec.action, "rules": [_rule(r) for r in p.spec.rules]} for p in policies
        ],
    }
