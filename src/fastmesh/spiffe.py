"""SPIFFE IDs as fastmesh uses them: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.

Pure string checks, no cryptography: config validation uses them without loading the CA code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# SPIFFE ID spec: trust domain chars are lower-case letters, digits, '.', '-', '_'.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
# Kubernetes names: a namespace is a DNS-1123 label, a service account a DNS-1123 subdomain.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ID = re.compile(r"^spiffe://([^/]*)/ns/([^/]*)/sa/([^/]*)$")


def trust_domain_problem(value: str) -> str | None:
    """Why `value` is not a trust domain, or None."""
    if not _TRUST_DOMAIN.match(value):
        return (f"invalid trust domain {value!r}: expected 1-255 lower-case letters, digits, "
                "'.', '-' or '_' (e.g. cluster.local)")
    return None


def namespace_problem(value: str) -> str | None:
    if not _NAMESPACE.match(value):
        return f"invalid namespace {value!r}: expected a DNS-1123 label (a-z, 0-9, '-', at most 63)"
    return None


def service_account_problem(value: str) -> str | None:
    if not _SERVICE_ACCOUNT.match(value):
        return (f"invalid service account {value!r}: expected a DNS-1123 subdomain "
                "(a-z, 0-9, '-', '.', at most 253)")
    return None


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def workload_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return str(SpiffeId(trust_domain, namespace, service_account))


def parse(value: str, trust_domain: str | None = None) -> SpiffeId:
    """Parse a workload SPIFFE ID; `ValueError` says what is wrong."""
    m = _ID.match(value)
    if not m:
        raise ValueError(f"invalid SPIFFE ID {value!r}: expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>")
    td, ns, sa = m.groups()
    for problem in (trust_domain_problem(td), namespace_problem(ns), service_account_problem(sa)):
        if problem:
            raise ValueError(f"invalid SPIFFE ID {value!r}: {problem}")
    if trust_domain is not None and td != trust_domain:
        raise ValueError(f"SPIFFE ID {value!r} is outside the trust domain {trust_domain!r}")
    return SpiffeId(td, ns, sa)
