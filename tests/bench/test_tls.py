"""The TLS scenarios of bench/ (issue 5): every target really terminates mTLS 1.3 the same way,
and a short run of the scenarios against nginx, HAProxy and fastmesh reports them.

Real processes on loopback: the bench's own upstream nginx, nginx and HAProxy with the generated
configs, `python -m fastmesh proxy` with `mtls: STRICT`; real clients (Python's ssl, openssl
s_client, fortio)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import fortio, tls
from bench.procs import Registry
from bench.targets import Context, Fastmesh, HAProxy, Nginx, Target, Upstream, fastmesh_available, fastmesh_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tls.Pki, list[Target]]]:
    if why := fastmesh_available():
        pytest.fail(f"the engine is not built: {why}")
    workdir = tmp_path_factory.mktemp("bench-tls")
    workdir.chmod(0o755)
    registry = Registry()
    try:
        pki = tls.make_pki(workdir / "pki", fastmesh_env())
        ctx = Context(workdir, registry, pki=pki)
        Upstream("upstream").start(ctx)
        targets: list[Target] = [Nginx(), HAProxy(), Fastmesh()]
        for t in targets:
            t.start(ctx)
        yield pki, targets
    finally:
        registry.stop_all()


def _client_context(pki: tls.Pki, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.bundle))
    ctx.check_hostname = False  # the servers' certificates carry a SPIFFE URI only
    if with_cert:
        ctx.load_cert_chain(str(pki.client_chain), str(pki.client_key))
    return ctx


def _get(pki: tls.Pki, port: int, with_cert: bool) -> tuple[str, bytes]:
    """(TLS version, raw response) of one GET / over TLS; OSError/SSLError when refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with _client_context(pki, with_cert).wrap_socket(raw) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            return str(conn.version()), data


def test_every_target_serves_tls_1_3_to_a_client_certificate_of_the_ca(tls_targets):
    pki, targets = tls_targets
    for t in targets:
        version, response = _get(pki, t.tls_port, with_cert=True)
        assert version == "TLSv1.3", t.name
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello world\n"), (t.name, response)


def test_every_target_refuses_a_client_without_certificate(tls_targets):
    # nginx finishes the handshake and answers 400; HAProxy and fastmesh close the connection.
    pki, targets = tls_targets
    for t in targets:
        try:
            _, response = _get(pki, t.tls_port, with_cert=False)
        except (ssl.SSLError, OSError):
            continue
        assert not response.endswith(b"hello world\n"), (t.name, response)
        assert b" 400 " in response.split(b"\r\n")[0], (t.name, response)


def _negotiated(pki: tls.Pki, port: int, suites: str) -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-ciphersuites", suites,
         "-cert", str(pki.client_chain), "-key", str(pki.client_key), "-brief"],
        input="", capture_output=True, text=True, timeout=20)
    lines = [line for line in done.stderr.splitlines() if line.startswith("Ciphersuite:")]
    assert lines, done.stderr
    return lines[0].split(":", 1)[1].strip()


def test_every_target_follows_the_clients_cipher_order(tls_targets):
    # So all of them negotiate what the load generator prefers (Go: AES-128-GCM first). HAProxy
    # prefers its own order unless told `prefer-client-ciphers`.
    pki, targets = tls_targets
    for t in targets:
        for first, second in (("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
                              ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256")):
            assert _negotiated(pki, t.tls_port, f"{first}:{second}") == first, t.name


def test_a_short_run_reports_mtls_against_plaintext_for_nginx_haproxy_and_fastmesh(tmp_path):
    path = fortio.binary()
    if not path.is_file():
        pytest.skip(f"fortio is not built ({path}; `make fortio`)")
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--no-install", "--scenarios", "tls-plain,tls,tls-new",
         "--targets", "direct,nginx,haproxy,fastmesh", "--duration", "1", "--warmup", "0", "--syscalls", "off",
         "--results-dir", str(tmp_path), "--name", "smoke", "--require-fastmesh"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result_file,) = tmp_path.glob("*-smoke.json")
    result = json.loads(result_file.read_text())
    by = {sc["name"]: sc for sc in result["scenarios"]}
    assert set(by) == {"tls-plain", "tls", "tls-new"}
    # direct (the plaintext upstream) is in the plaintext base only.
    assert [r["target"] for r in by["tls-plain"]["rows"]] == ["direct", "nginx", "haproxy", "fastmesh"]
    for name in ("tls", "tls-new"):
        assert by[name]["baseline"] == "tls-plain"
        rows = by[name]["rows"]
        assert [r["target"] for r in rows] == ["nginx", "haproxy", "fastmesh"]
        for r in rows:
            assert r["requests"] > 0 and r["errors"] == 0, (name, r)
            assert r["x_baseline"] is not None and r["x_nginx"] is not None and r["x_haproxy"] is not None
    md = next(tmp_path.glob("*-smoke.md")).read_text()
    assert "| × tls-plain |" in md
