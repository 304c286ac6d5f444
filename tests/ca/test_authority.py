"""The built-in CA: files and modes, issuing, verification by independent checkers (`openssl
verify` and cryptography's X.509 verifier), rotation, refusals."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fastmesh.ca import CA, CAError
from fastmesh.ca import files as ca_files

TD = "cluster.local"
WEB = f"spiffe://{TD}/ns/default/sa/web"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def openssl_verify(tmp: Path, bundle_pem: str, chain_pem: str, purpose: str = "sslclient"
                   ) -> subprocess.CompletedProcess[str]:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    (tmp / "v-bundle.pem").write_text(bundle_pem)
    (tmp / "v-leaf.pem").write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    (tmp / "v-untrusted.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp / "v-bundle.pem"), "-untrusted",
         str(tmp / "v-untrusted.pem"), "-purpose", purpose, str(tmp / "v-leaf.pem")],
        capture_output=True, text=True, timeout=30)


def crypto_verify(bundle_pem: str, chain_pem: str, at: datetime | None = None) -> list[str]:
    """cryptography's (Rust, webpki-like) client-certificate verifier; returns the URI SANs."""
    roots = x509.load_pem_x509_certificates(bundle_pem.encode())
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem.encode())
    verifier = (PolicyBuilder().store(Store(roots)).time(at or datetime.now(UTC))
                .build_client_verifier())
    verified = verifier.verify(leaf, intermediates)
    return [n.value for n in verified.subjects or [] if isinstance(n, x509.UniformResourceIdentifier)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA.init(tmp_path / "ca", TD)


def test_init_writes_the_files_keys_0600_certs_0644(tmp_path: Path) -> None:
    old = os.umask(0)  # modes must not depend on a lenient umask
    try:
        CA.init(tmp_path / "ca", TD)
    finally:
        os.umask(old)
    d = tmp_path / "ca"
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["root.pem", "root-key.pem", "intermediate.pem", "intermediate-key.pem", "bundle.pem"])
    assert mode(d / "root-key.pem") == 0o600
    assert mode(d / "intermediate-key.pem") == 0o600
    for cert in ("root.pem", "intermediate.pem", "bundle.pem"):
        assert mode(d / cert) == 0o644, cert
    assert (d / "root-key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_key_files_are_created_0600_not_chmodded_afterwards(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    created: dict[str, int] = {}
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *a, **kw):  # type: ignore[no-untyped-def]
        if flags & os.O_CREAT:
            created[os.path.basename(path)] = mode
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(ca_files.os, "open", recording_open)
    CA.init(tmp_path / "ca", TD)
    keys = {name: m for name, m in created.items() if "-key.pem" in name}
    assert len(keys) == 2 and set(keys.values()) == {0o600}, created
    assert {m for name, m in created.items() if "-key.pem" not in name} == {0o644}


def test_init_refuses_to_overwrite_an_existing_ca(tmp_path: Path, ca: CA) -> None:
    before = {p.name: p.read_bytes() for p in ca.directory.iterdir()}
    with pytest.raises(CAError, match=r"refusing to overwrite the existing CA in .*ca \(.*root\.pem"):
        CA.init(ca.directory, TD)
    assert {p.name: p.read_bytes() for p in ca.directory.iterdir()} == before


def test_init_refuses_a_bad_trust_domain(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="invalid trust domain 'Cluster/Local'"):
        CA.init(tmp_path / "ca", "Cluster/Local")
    assert not (tmp_path / "ca").exists()


def test_root_and_intermediate_are_p256_cas(ca: CA) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    for cert, path_len in ((ca.root, 1), (ca.intermediate, 0)):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == path_len
    assert ca.intermediate.issuer == ca.root.subject
    assert ca.root.not_valid_after_utc - ca.root.not_valid_before_utc > timedelta(days=3649)


@needs_openssl
def test_issued_chain_verifies_with_openssl_as_client_and_server(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue(WEB)
    for purpose in ("sslclient", "sslserver"):
        r = openssl_verify(tmp_path, ca.bundle_pem(), issued.cert_chain_pem, purpose)
        assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), r.stdout + r.stderr


def test_issued_chain_verifies_with_cryptography_and_carries_the_spiffe_id(ca: CA) -> None:
    issued = ca.issue(WEB)
    assert crypto_verify(ca.bundle_pem(), issued.cert_chain_pem) == [WEB]


def test_leaf_profile(ca: CA) -> None:
    issued = ca.issue(WEB, ttl=timedelta(hours=2))
    leaf, intermediate = x509.load_pem_x509_certificates(issued.cert_chain_pem.encode())
    assert intermediate == ca.intermediate
    ext = leaf.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert set(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued.not_after - issued.not_before == timedelta(hours=2)
    assert (issued.not_before, issued.not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    assert issued.spiffe_id == WEB
    # The key is PKCS#8 and belongs to the leaf.
    assert issued.key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    assert "PRIVATE KEY" not in repr(issued)


@pytest.mark.parametrize("spiffe_id, message", [
    ("spiffe://other.domain/ns/default/sa/web", "outside the trust domain 'cluster.local'"),
    ("spiffe://cluster.local/web", "expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>"),
    ("https://cluster.local/ns/default/sa/web", "expected spiffe://"),
    ("spiffe://cluster.local/ns/Default/sa/web", "invalid namespace 'Default'"),
    ("spiffe://cluster.local/ns/default/sa/", "invalid service account ''"),
    ("spiffe://cluster.local/ns/default/sa/web/extra", "expected spiffe://"),
])
def test_issue_refuses_bad_spiffe_ids(ca: CA, spiffe_id: str, message: str) -> None:
    with pytest.raises(CAError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*").replace(".", r"\.")):
        ca.issue(spiffe_id)


def test_issue_refuses_a_non_positive_ttl(ca: CA) -> None:
    with pytest.raises(CAError, match="ttl must be positive"):
        ca.issue(WEB, ttl=timedelta(0))


@needs_openssl
def test_expired_and_not_yet_valid_certificates_can_be_built(tmp_path: Path, ca: CA) -> None:
    now = datetime.now(UTC)
    expired = ca.issue(WEB, ttl=timedelta(hours=1), not_before=now - timedelta(days=2))
    assert expired.not_after < now
    r = openssl_verify(tmp_path, ca.bundle_pem(), expired.cert_chain_pem)
    assert r.returncode != 0 and "certificate has expired" in r.stdout + r.stderr
    future = ca.issue(WEB, ttl=timedelta(hours=1), not_before=now + timedelta(days=1))
    r = openssl_verify(tmp_path, ca.bundle_pem(), future.cert_chain_pem)
    assert r.returncode != 0 and "not yet valid" in r.stdout + r.stderr
    with pytest.raises(VerificationError):
        crypto_verify(ca.bundle_pem(), expired.cert_chain_pem)


def test_load_reads_back_the_same_ca(ca: CA) -> None:
    loaded = CA.load(ca.directory)
    assert loaded.trust_domain == TD
    assert loaded.bundle_pem() == ca.bundle_pem() == (ca.directory / "bundle.pem").read_text()
    assert crypto_verify(ca.bundle_pem(), loaded.issue(WEB).cert_chain_pem) == [WEB]


def test_load_refuses_a_missing_or_broken_ca(tmp_path: Path, ca: CA) -> None:
    with pytest.raises(CAError, match=r"no CA here \(root\.pem missing\); create one with `fastmesh ca init"):
        CA.load(tmp_path / "nowhere")
    (ca.directory / "intermediate-key.pem").unlink()
    with pytest.raises(CAError, match=r"intermediate-key\.pem: missing"):
        CA.load(ca.directory)
    (ca.directory / "intermediate-key.pem").write_text("garbage")
    with pytest.raises(CAError, match=r"intermediate-key\.pem: not an unencrypted PEM private key"):
        CA.load(ca.directory)


def test_load_refuses_a_half_rotated_directory(tmp_path: Path, ca: CA) -> None:
    old_intermediate = (ca.directory / "intermediate.pem").read_bytes()
    ca.rotate_root()
    (ca.directory / "intermediate.pem").write_bytes(old_intermediate)  # as if caught mid-rotation
    with pytest.raises(CAError, match="does not match its key .*try again"):
        CA.load(ca.directory)


@needs_openssl
def test_rotate_root_trusts_old_and_new_then_drop_old_roots(tmp_path: Path, ca: CA) -> None:
    old_root = ca.root
    before = ca.issue(WEB)
    ca.rotate_root()
    assert ca.root != old_root
    on_disk = CA.load(ca.directory)
    bundle = x509.load_pem_x509_certificates(on_disk.bundle_pem().encode())
    assert bundle == [ca.root, old_root]
    after = on_disk.issue(WEB)
    assert x509.load_pem_x509_certificates(after.cert_chain_pem.encode())[1].issuer == ca.root.subject
    # During the rotation both generations verify against the bundle ...
    for issued in (before, after):
        assert crypto_verify(on_disk.bundle_pem(), issued.cert_chain_pem) == [WEB]
        assert openssl_verify(tmp_path, on_disk.bundle_pem(), issued.cert_chain_pem).returncode == 0
    # ... and the new chain does not verify against the old root alone (it really is new).
    old_only = old_root.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(VerificationError):
        crypto_verify(old_only, after.cert_chain_pem)
    # Dropping the old root: the old generation is no longer trusted, the new one is.
    assert on_disk.drop_old_roots() == 1
    dropped = CA.load(ca.directory).bundle_pem()
    assert x509.load_pem_x509_certificates(dropped.encode()) == [ca.root]
    r = openssl_verify(tmp_path, dropped, before.cert_chain_pem)
    assert r.returncode != 0, r.stdout
    assert crypto_verify(dropped, after.cert_chain_pem) == [WEB]
    assert mode(ca.directory / "root-key.pem") == 0o600
    assert mode(ca.directory / "intermediate-key.pem") == 0o600
    assert not [p for p in ca.directory.iterdir() if p.name.endswith(".tmp")]
