"""`fastmesh ca ...`, the real command line in a subprocess; results checked with openssl."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.harness import fastmesh_cli

TD = "td.test"
ID = f"spiffe://{TD}/ns/shop/sa/cart"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def ok(*args: str) -> str:
    r = fastmesh_cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def fails(*args: str, code: int = 1) -> str:
    r = fastmesh_cli(*args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return r.stderr


def openssl_verify(bundle: Path, chain: Path) -> subprocess.CompletedProcess[str]:
    # -untrusted with the chain file: openssl takes the leaf from the chain's first certificate.
    return subprocess.run(["openssl", "verify", "-CAfile", str(bundle), "-untrusted", str(chain),
                           "-purpose", "sslclient", str(chain)],
                          capture_output=True, text=True, timeout=30)


def test_init_issue_verify(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    out = ok("ca", "init", "--dir", str(d), "--trust-domain", TD)
    assert f"trust domain: {TD}" in out
    out = ok("ca", "issue", "--dir", str(d), "--identity", ID, "--ttl", "2h", "--out", str(tmp_path / "cart"))
    assert out.startswith(f"issued {ID}, valid ")
    chain, key = tmp_path / "cart.pem", tmp_path / "cart-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    leaf, intermediate = x509.load_pem_x509_certificates(chain.read_bytes())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=2)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == [ID]
    r = openssl_verify(d / "bundle.pem", chain)
    assert r.returncode == 0, r.stdout + r.stderr
    # openssl agrees the key belongs to the certificate.
    pub_cert = subprocess.run(["openssl", "x509", "-in", str(chain), "-noout", "-pubkey"],
                              capture_output=True, text=True, check=True).stdout
    pub_key = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"],
                             capture_output=True, text=True, check=True).stdout
    assert pub_cert == pub_key


def test_rotate_show_drop(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ok("ca", "init", "--dir", str(d), "--trust-domain", TD)
    ok("ca", "issue", "--dir", str(d), "--identity", ID, "--out", str(tmp_path / "old"))
    out = ok("ca", "rotate-root", "--dir", str(d))
    assert "the bundle trusts 2 roots" in out
    show = ok("ca", "show", "--dir", str(d))
    assert show.count("bundle (current)") == 1 and show.count("bundle (old)") == 1
    ok("ca", "issue", "--dir", str(d), "--identity", ID, "--out", str(tmp_path / "new"))
    assert openssl_verify(d / "bundle.pem", tmp_path / "old.pem").returncode == 0
    assert openssl_verify(d / "bundle.pem", tmp_path / "new.pem").returncode == 0
    assert ok("ca", "drop-old-roots", "--dir", str(d)).startswith("dropped 1 old root(s)")
    show = ok("ca", "show", "--dir", str(d))
    assert "bundle (old)" not in show and show.count("bundle (current)") == 1
    assert openssl_verify(d / "bundle.pem", tmp_path / "old.pem").returncode != 0
    assert openssl_verify(d / "bundle.pem", tmp_path / "new.pem").returncode == 0


def test_errors_are_clear_and_exit_non_zero(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ok("ca", "init", "--dir", str(d), "--trust-domain", TD)
    assert "fastmesh ca init: error: refusing to overwrite the existing CA in" in fails(
        "ca", "init", "--dir", str(d), "--trust-domain", TD)
    assert "invalid trust domain 'Bad Domain'" in fails(
        "ca", "init", "--dir", str(tmp_path / "other"), "--trust-domain", "Bad Domain")
    assert "outside the trust domain 'td.test'" in fails(
        "ca", "issue", "--dir", str(d), "--identity", "spiffe://evil.test/ns/a/sa/b", "--out", str(tmp_path / "x"))
    assert "expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>" in fails(
        "ca", "issue", "--dir", str(d), "--identity", "cart", "--out", str(tmp_path / "x"))
    assert "argument --ttl: expected a duration such as 24h" in fails(
        "ca", "issue", "--dir", str(d), "--identity", ID, "--ttl", "1 day", "--out", str(tmp_path / "x"), code=2)
    assert "argument --ttl: must be positive" in fails(
        "ca", "issue", "--dir", str(d), "--identity", ID, "--ttl", "0s", "--out", str(tmp_path / "x"), code=2)
    assert "no CA here (root.pem missing)" in fails("ca", "show", "--dir", str(tmp_path / "none"))
    assert "the following arguments are required: --dir" in fails("ca", "rotate-root", code=2)
    assert not list(tmp_path.glob("x*"))
