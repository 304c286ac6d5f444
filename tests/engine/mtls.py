"""Shared by the mTLS tests: a CA from `fastmesh.ca`, in-process engines with an identity, snapshots
with TLS listeners and backends, and PEM files for real clients (curl, openssl, Python's ssl)."""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fastmesh.ca import CA, Issued

TRUST_DOMAIN = "td.test"
FRONT_ID = f"spiffe://{TRUST_DOMAIN}/ns/front/sa/web"
BACK_ID = f"spiffe://{TRUST_DOMAIN}/ns/back/sa/reviews"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/tools/sa/curl"


def leaf_sha256(issued: Issued) -> str:
    """SHA-256 of the leaf's DER, hex: what `x-forwarded-client-cert` carries as `Hash=`."""
    leaf = x509.load_pem_x509_certificates(issued.cert_chain_pem.encode())[0]
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


def xfcc(by: str, client: Issued) -> str:
    return f"By={by};Hash={leaf_sha256(client)};URI={client.spiffe_id}"


@dataclass
class PemFiles:
    """An identity on disk, for clients that read files."""

    chain: Path  # leaf, then intermediate
    leaf: Path
    intermediate: Path
    key: Path
    bundle: Path


def write_pems(directory: Path, name: str, issued: Issued, bundle_pem: str) -> PemFiles:
    directory.mkdir(parents=True, exist_ok=True)
    certs = x509.load_pem_x509_certificates(issued.cert_chain_pem.encode())
    pem = [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
    files = PemFiles(*(directory / f"{name}-{part}.pem" for part in ("chain", "leaf", "intermediate", "key", "bundle")))
    files.chain.write_text(issued.cert_chain_pem)
    files.leaf.write_text(pem[0])
    files.intermediate.write_text("".join(pem[1:]))
    files.key.write_text(issued.key_pem)
    files.key.chmod(0o600)
    files.bundle.write_text(bundle_pem)
    return files


def client_ssl_context(files: PemFiles | None, bundle: Path) -> ssl.SSLContext:
    """OpenSSL (Python's ssl) as the mesh peer: verifies the chain against the bundle, no host name
    check (workload certificates carry a URI SAN only), presents `files` when given."""
    ctx = ssl.create_default_context(cafile=str(bundle))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if files is not None:
        ctx.load_cert_chain(str(files.chain), str(files.key))
    return ctx


class MtlsEngine:
    """An in-process Engine with a workload identity."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.issued: Issued | None = None

    def set_identity(self, issued: Issued, bundle_pem: str) -> int:
        generation: int = self.core.set_identity(issued.cert_chain_pem, issued.key_pem, bundle_pem)
        return generation

    def apply(self, snap: dict[str, Any]) -> int:
        version: int = self.core.apply(json.dumps(snap))
        return version

    def address(self, listener: str = "l") -> str:
        address: str = self.core.listeners()[listener]
        return address

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self.core.stats_json())
        return stats

    def tls(self, counter: str) -> int:
        value: int = self.stats()["tls"][counter]
        return value


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA.init(tmp_path / "ca", TRUST_DOMAIN)


@pytest.fixture
def mtls_engines() -> Iterator[Callable[[], MtlsEngine]]:
    """mtls_engines() -> a new MtlsEngine; all are drained at teardown."""
    from fastmesh._engine import Engine

    engines: list[MtlsEngine] = []

    def start() -> MtlsEngine:
        engine = MtlsEngine(Engine(1))
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.core.drain(2.0)


def route(name: str, backends: list[tuple[str, int]], prefix: str = "/") -> dict[str, Any]:
    return {
        "name": name,
        "match": {"path": {"type": "PathPrefix", "value": prefix}},
        "backends": [{"backend": b, "weight": w} for b, w in backends],
    }


def snapshot(
    backends: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    *,
    mode: str = "DISABLE",
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One listener "l" on 127.0.0.1:0 in `mode`, one vhost for every host."""
    snap: dict[str, Any] = {
        "listeners": [{"name": "l", "address": "127.0.0.1:0", "tls": {"mode": mode}}],
        "backends": backends,
        "vhosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    }
    if pool is not None:
        snap["pool"] = pool
    return snap


def plain_backend(name: str, address: str, protocol: str = "http1") -> dict[str, Any]:
    return {"name": name, "protocol": protocol, "endpoints": [address]}


def mtls_backend(name: str, address: str, identities: list[str], protocol: str = "http1") -> dict[str, Any]:
    return {"name": name, "protocol": protocol, "endpoints": [address], "tls": {"identities": identities}}
