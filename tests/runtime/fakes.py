"""A small in-memory stand-in for fastmesh._engine.Engine, for unit tests of the orchestrator."""

from __future__ import annotations

import json
import threading
from typing import Any

BOUNDS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


def engine_stats(**overrides: Any) -> dict[str, Any]:
    """A stats document shaped like docs/engine-snapshot.md describes."""
    stats: dict[str, Any] = {
        "version": 1,
        "connections": {"active": 2, "total": 10},
        "requests_active": 1,
        "latency_bounds_ms": BOUNDS_MS,
        "routes": [],
        "upstream": [],
    }
    stats.update(overrides)
    return stats


class FakeEngineCore:
    """Accepts snapshots like the engine does (JSON in, version out) and records what it was given."""

    def __init__(self, stats: dict[str, Any] | None = None) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.stats = stats or engine_stats()
        self.refuse_with: Exception | None = None  # raised by the next apply calls
        self.drain_calls: list[float] = []
        self.drain_release = threading.Event()  # drain() blocks until set
        self.drain_release.set()
        self.drain_started = threading.Event()

    def apply(self, snapshot_json: str) -> int:
        snapshot = json.loads(snapshot_json)
        if self.refuse_with is not None:
            raise self.refuse_with
        self.snapshots.append(snapshot)
        return int(snapshot["version"])

    def listeners(self) -> dict[str, str]:
        current = self.snapshots[-1] if self.snapshots else {"listeners": []}
        return {entry["name"]: entry["address"] for entry in current["listeners"]}

    def stats_json(self) -> str:
        return json.dumps(self.stats)

    def drain(self, timeout_s: float) -> bool:
        self.drain_calls.append(timeout_s)
        self.drain_started.set()
        return self.drain_release.wait(timeout_s)

    def version(self) -> int:
        return int(self.snapshots[-1]["version"]) if self.snapshots else 0

    def active_requests(self) -> int:
        return int(self.stats["requests_active"])


class FakeIdentityEngineCore(FakeEngineCore):
    """Also takes identities as the mTLS engine does (docs/engine-snapshot.md "Security"): the key
    must match the leaf, the leaf must carry one spiffe:// URI, and a snapshot with a TLS listener
    is refused before an identity was set. `calls` records the order of apply and set_identity."""

    def __init__(self, stats: dict[str, Any] | None = None) -> None:
        super().__init__(stats)
        self.identities: list[tuple[str, str, str]] = []
        self.calls: list[str] = []
        self.refuse_identity_with: Exception | None = None

    def set_identity(self, cert_chain_pem: str, key_pem: str, trust_bundle_pem: str) -> int:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if self.refuse_identity_with is not None:
            raise self.refuse_identity_with
        leaf = x509.load_pem_x509_certificates(cert_chain_pem.encode())[0]
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise ValueError("key does not match the leaf")
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
        if len([u for u in uris if u.startswith("spiffe://")]) != 1:
            raise ValueError("the leaf must carry exactly one spiffe:// URI SAN")
        if not x509.load_pem_x509_certificates(trust_bundle_pem.encode()):
            raise ValueError("empty trust bundle")
        self.identities.append((cert_chain_pem, key_pem, trust_bundle_pem))
        self.calls.append("set_identity")
        return len(self.identities)

    def identity(self) -> dict[str, Any] | None:
        from cryptography import x509

        if not self.identities:
            return None
        leaf = x509.load_pem_x509_certificates(self.identities[-1][0].encode())[0]
        uri = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)[0]
        return {"spiffe_id": uri, "not_after": int(leaf.not_valid_after_utc.timestamp()),
                "generation": len(self.identities)}

    def apply(self, snapshot_json: str) -> int:
        snapshot = json.loads(snapshot_json)
        tls = [entry["name"] for entry in snapshot["listeners"] if entry.get("tls", {}).get("mode", "DISABLE") != "DISABLE"]
        if tls and not self.identities:
            raise ValueError(f"listeners {tls} need an identity: call set_identity first")
        version = super().apply(snapshot_json)
        self.calls.append("apply")
        return version

    def leaf(self, index: int = -1) -> Any:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.identities[index][0].encode())[0]
