"""mTLS at the engine with independent peers: openssl s_client, curl and Python's ssl (OpenSSL)
against STRICT and PERMISSIVE listeners; every refusal; XFCC at a real upstream; the outbound
identity check. Certificates from `fastmesh.ca`; engines in-process, upstreams are
tests/upstream_app.py processes (they echo the headers they receive)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastmesh.ca import CA, Issued
from tests.engine.mtls import (  # noqa: F401 - fixtures
    BACK_ID,
    CLIENT_ID,
    FRONT_ID,
    TRUST_DOMAIN,
    MtlsEngine,
    PemFiles,
    ca,
    client_ssl_context,
    mtls_backend,
    mtls_engines,
    plain_backend,
    route,
    snapshot,
    write_pems,
    xfcc,
)
from tests.harness import curl

# curl's exits for a refused handshake: SSL connect error, send or receive failure.
REFUSED = (35, 55, 56)
SPOOF = "By=spiffe://evil/x;Hash=00;URI=spiffe://td.test/ns/admin/sa/root"


def serve(engines: Callable[[], MtlsEngine], ca: CA, upstream: str, mode: str) -> MtlsEngine:
    """An engine with the BACK identity (kept as `engine.issued`) and a `mode` listener before `upstream`."""
    engine = engines()
    engine.issued = ca.issue(BACK_ID)
    engine.set_identity(engine.issued, ca.bundle_pem())
    engine.apply(snapshot([plain_backend("up", upstream)], [route("r", [("up", 1)])], mode=mode))
    return engine


def curl_https(address: str, files: PemFiles | None, *extra: str) -> subprocess.CompletedProcess[str]:
    """curl over TLS, presenting `files` and trusting their bundle. The server's workload
    certificate names no host (URI SAN only), which curl cannot be told to accept while checking
    the chain, so the chain is checked by openssl s_client and Python's ssl in the other tests and
    curl pins the server's key instead (`--pinnedpubkey`)."""
    args = ["-k", "--max-time", "10", f"https://{address}/echo"]
    if files is not None:
        args = ["--cert", str(files.chain), "--key", str(files.key), "--cacert", str(files.bundle), *args]
    return curl(*args, *extra)


def pubkey_pin(leaf: Path) -> str:
    """curl's sha256// pin of a certificate's public key, computed by openssl."""
    pub = subprocess.run(["openssl", "x509", "-in", str(leaf), "-pubkey", "-noout"], capture_output=True, check=True)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.stdout, capture_output=True, check=True)
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der.stdout, capture_output=True, check=True)
    b64 = subprocess.run(["openssl", "base64", "-A"], input=digest.stdout, capture_output=True, check=True)
    return "sha256//" + b64.stdout.decode().strip()


def s_client(address: str, files: PemFiles, alpn: str, request: str = "") -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-cert", str(files.leaf), "-cert_chain", str(files.intermediate),
         "-key", str(files.key), "-CAfile", str(files.bundle), "-verify_return_error", "-alpn", alpn,
         # With a request: wait for the answer after stdin ends (the engine closes: Connection: close).
         *(["-ign_eof"] if request else [])],
        input=request, capture_output=True, text=True, timeout=30, check=False,
    )
    return done.stdout + done.stderr


def test_openssl_s_client_verifies_fastmesh_and_negotiates_alpn(tmp_path, ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "STRICT")
    client = ca.issue(CLIENT_ID)
    files = write_pems(tmp_path / "pem", "client", client, ca.bundle_pem())

    out = s_client(engine.address(), files, "h2,http/1.1")
    assert "Verify return code: 0 (ok)" in out, out
    assert "ALPN protocol: h2" in out, out

    request = f"GET /echo HTTP/1.1\r\nHost: reviews\r\nx-forwarded-client-cert: {SPOOF}\r\nConnection: close\r\n\r\n"
    out = s_client(engine.address(), files, "http/1.1", request)
    assert "Verify return code: 0 (ok)" in out, out
    assert "ALPN protocol: http/1.1" in out, out
    assert "HTTP/1.1 200" in out, out
    echo, _ = json.JSONDecoder().raw_decode(out[out.index('{"upstream"') :])
    assert echo["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, client)
    assert engine.tls("handshakes") == 2


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_curl_mtls_to_strict_puts_the_verified_caller_in_xfcc(tmp_path, ca, mtls_engines, upstream_factory, http2):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "STRICT")
    client = ca.issue(CLIENT_ID)
    files = write_pems(tmp_path / "pem", "client", client, ca.bundle_pem())
    server = write_pems(tmp_path / "pem", "server", ca.issue(BACK_ID), ca.bundle_pem())
    # The pin of another key fails: curl really checks what the engine presents.
    wrong = curl_https(engine.address(), files, "--pinnedpubkey", pubkey_pin(server.leaf))
    assert wrong.returncode == 90, wrong.stderr

    identity = engine.core.identity()
    assert identity["spiffe_id"] == BACK_ID and identity["generation"] == 1
    assert identity["not_after"] == int(engine.issued.not_after.timestamp())
    leaf = write_pems(tmp_path / "pem", "engine", engine.issued, ca.bundle_pem()).leaf

    version = ["--http2"] if http2 else ["--http1.1"]
    done = curl_https(
        engine.address(), files, *version, "--pinnedpubkey", pubkey_pin(leaf),
        "-H", f"x-forwarded-client-cert: {SPOOF}", "-w", "\n%{http_version}",
    )
    assert done.returncode == 0, done.stderr
    body, _, negotiated = done.stdout.rpartition("\n")
    assert negotiated == ("2" if http2 else "1.1")
    echo = httpx.Response(200, content=body).json()
    # The spoofed value never reaches the upstream; the verified caller does.
    assert echo["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, client)


def test_python_ssl_http1_and_http2_with_chain_verification(tmp_path, ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "STRICT")
    client = ca.issue(CLIENT_ID)
    files = write_pems(tmp_path / "pem", "client", client, ca.bundle_pem())
    ctx = client_ssl_context(files, files.bundle)
    for http2 in (False, True):
        with httpx.Client(verify=ctx, http2=http2) as c:
            r = c.get(f"https://{engine.address()}/echo", headers={"x-forwarded-client-cert": SPOOF})
        assert r.status_code == 200
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert r.json()["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, client)


def refused(engine: MtlsEngine, attempt: Callable[[], Any], counter: str = "handshake_failures") -> None:
    """`attempt` must fail, and the engine must count it."""
    before = engine.tls(counter)
    with pytest.raises((httpx.TransportError, OSError)):
        attempt()
    # The engine counts after its side of the handshake ends, which may be after the client's.
    deadline = time.monotonic() + 5
    while engine.tls(counter) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.tls(counter) == before + 1, counter


def test_strict_refuses_each_bad_client(tmp_path, ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "STRICT")
    url = f"https://{engine.address()}/echo"
    pems = tmp_path / "pem"
    bundle = write_pems(pems, "good", ca.issue(CLIENT_ID), ca.bundle_pem()).bundle
    rogue_ca = CA.init(tmp_path / "rogue", TRUST_DOMAIN)
    now = datetime.now(UTC)
    bad: dict[str, Issued] = {
        "unknown CA": rogue_ca.issue(CLIENT_ID),
        "expired": ca.issue(CLIENT_ID, ttl=timedelta(hours=1), not_before=now - timedelta(hours=2)),
        "not yet valid": ca.issue(CLIENT_ID, ttl=timedelta(hours=1), not_before=now + timedelta(hours=1)),
    }

    def get(ctx: Any) -> None:
        with httpx.Client(verify=ctx) as c:
            c.get(url)

    for name, issued in bad.items():
        files = write_pems(pems, name.replace(" ", "-"), issued, ca.bundle_pem())
        refused(engine, lambda: get(client_ssl_context(files, bundle)))
        # curl, an independent client, is refused too (a TLS alert or a closed connection, no answer).
        done = curl_https(engine.address(), files)
        assert done.returncode in REFUSED and done.stdout == "", (name, done.returncode, done.stderr)
    # No client certificate.
    refused(engine, lambda: get(client_ssl_context(None, bundle)))
    done = curl_https(engine.address(), None)
    assert done.returncode in REFUSED and done.stdout == "", done.stderr
    # Plaintext.
    refused(engine, lambda: httpx.get(f"http://{engine.address()}/echo"), "plaintext_rejected")
    done = curl("--max-time", "10", f"http://{engine.address()}/echo")
    # Closed unread: an empty reply or a reset, never an answer.
    assert done.returncode in (52, 56) and done.stdout == "", done.stderr
    assert engine.tls("handshakes") == 0
    assert up.stats()["requests"] == 0, "nothing reached the upstream"


def test_permissive_serves_plaintext_and_mtls_on_one_port(tmp_path, ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "PERMISSIVE")
    client = ca.issue(CLIENT_ID)
    files = write_pems(tmp_path / "pem", "client", client, ca.bundle_pem())
    plain = httpx.get(f"http://{engine.address()}/echo", headers={"x-forwarded-client-cert": SPOOF})
    assert plain.status_code == 200
    assert "x-forwarded-client-cert" not in plain.json()["headers"], "plaintext: no caller, spoof removed"
    with httpx.Client(verify=client_ssl_context(files, files.bundle)) as c:
        tls = c.get(f"https://{engine.address()}/echo")
    assert tls.json()["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, client)
    assert engine.tls("handshakes") == 1 and engine.tls("plaintext_rejected") == 0


def test_disable_listener_removes_spoofed_xfcc(ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    engine = serve(mtls_engines, ca, up.address, "DISABLE")
    r = httpx.get(f"http://{engine.address()}/echo", headers={"x-forwarded-client-cert": SPOOF})
    assert r.status_code == 200 and "x-forwarded-client-cert" not in r.json()["headers"]


def test_outbound_mtls_checks_the_server_identity(ca, mtls_engines, upstream_factory):
    up = upstream_factory("v1")
    back = serve(mtls_engines, ca, up.address, "STRICT")
    front = mtls_engines()
    front_issued = ca.issue(FRONT_ID)
    front.set_identity(front_issued, ca.bundle_pem())
    ratings = f"spiffe://{TRUST_DOMAIN}/ns/back/sa/ratings"
    front.apply(
        snapshot(
            [mtls_backend("good", back.address(), [ratings, BACK_ID]), mtls_backend("wrong", back.address(), [ratings])],
            [route("wrong", [("wrong", 1)], "/wrong"), route("good", [("good", 1)])],
        )
    )
    ok = httpx.get(f"http://{front.address()}/echo", headers={"x-forwarded-client-cert": SPOOF})
    assert ok.status_code == 200
    assert ok.json()["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, front_issued)

    wrong = httpx.get(f"http://{front.address()}/wrong")
    assert wrong.status_code == 502
    assert wrong.text == f"upstream identity mismatch: expected {ratings}, got {BACK_ID}\n"
    # A mismatch is a connect failure: the built-in retry (one, on connect-failure) meets it again.
    assert front.tls("identity_mismatch") == 2
    assert front.tls("upstream_handshakes") == 1
    assert back.tls("handshakes") == 1, "the wrong server got no request"
