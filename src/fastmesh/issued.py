"""A workload certificate as issued: shared by the CA (`fastmesh.ca`) and the proxy's identity
(`fastmesh.identity`), which must not import the CA (and `cryptography` with it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Issued:
    """A workload certificate: the chain (leaf, then intermediate) and its private key."""

    cert_chain_pem: str
    key_pem: str = field(repr=False)  # never in a repr, a log line or a traceback
    spiffe_id: str
    not_before: datetime
    not_after: datetime
