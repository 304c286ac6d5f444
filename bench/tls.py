"""The TLS scenarios' key material and the peers' TLS settings (issue 5: mTLS CPU per request).

One CA made with `fastmesh ca init` signs everything, so every target terminates TLS with the
same kind of key and chain: an ECDSA P-256 leaf (SPIFFE URI SAN) plus the CA's intermediate.
- fastmesh issues its own server certificate from the CA directory (`spec.identity`) and listens
  with `mtls: STRICT`.
- nginx and HAProxy get a certificate issued with `fastmesh ca issue` and, like STRICT, require
  and verify a client certificate against the CA's bundle (`ssl_verify_client on` /
  `verify required`): all three do the same work per handshake.
- The client (fortio) presents a third certificate from the same CA.
Every server is held to TLS 1.3, without session resumption (fastmesh has none, so each new
connection is a full handshake everywhere), and follows the client's cipher order (rustls and
nginx do by default, HAProxy with `prefer-client-ciphers`), so all negotiate the same suite.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError

TRUST_DOMAIN = "bench.local"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/server"  # nginx's and HAProxy's certificate
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client"  # the load generator's
FASTMESH_IDENTITY = {"trustDomain": TRUST_DOMAIN, "namespace": "bench", "serviceAccount": "fastmesh"}


@dataclass(frozen=True)
class Pki:
    """The files: the CA (fastmesh's `spec.identity.ca.directory`) and its bundle, the server's
    and the client's chain (leaf, then intermediate) and key, HAProxy's chain+key in one file."""

    ca_dir: Path
    bundle: Path
    server_chain: Path
    server_key: Path
    server_combined: Path
    client_chain: Path
    client_key: Path

    @classmethod
    def under(cls, directory: Path) -> Pki:
        return cls(directory / "ca", directory / "ca" / "bundle.pem", directory / "server.pem",
                   directory / "server-key.pem", directory / "server-haproxy.pem", directory / "client.pem",
                   directory / "client-key.pem")


def make_pki(directory: Path, env: dict[str, str]) -> Pki:
    """`fastmesh ca init`, then `fastmesh ca issue` for the server and the client (ttl 24 h: longer
    than any run, so nothing renews or expires during one)."""
    pki = Pki.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fastmesh = [sys.executable, "-m", "fastmesh", "ca"]
    steps = [
        ["init", "--dir", str(pki.ca_dir), "--trust-domain", TRUST_DOMAIN],
        ["issue", "--dir", str(pki.ca_dir), "--identity", SERVER_ID, "--out", str(directory / "server")],
        ["issue", "--dir", str(pki.ca_dir), "--identity", CLIENT_ID, "--out", str(directory / "client")],
    ]
    for step in steps:
        done = subprocess.run([*fastmesh, *step], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"fastmesh ca {' '.join(step)} exited {done.returncode}: {done.stderr.strip()}")
    pki.server_combined.write_text(pki.server_chain.read_text() + pki.server_key.read_text())
    pki.server_combined.chmod(0o600)
    return pki


def nginx_listen(address: str, port: int, backlog: int) -> str:
    """The TLS listener line of nginx's server block (`http2` for ALPN h2; HTTP/1.1 otherwise)."""
    return f"        listen {address}:{port} ssl http2 backlog={backlog};\n"


def nginx_server_tls(pki: Pki) -> str:
    """The server block's TLS settings: TLS 1.3 only, client certificate required and verified
    (leaf <- intermediate <- root: depth 2), no session cache, no tickets."""
    return f"""        ssl_certificate {pki.server_chain};
        ssl_certificate_key {pki.server_key};
        ssl_protocols TLSv1.3;
        ssl_client_certificate {pki.bundle};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_session_cache off;
        ssl_session_tickets off;
"""


def haproxy_bind(address: str, port: int, backlog: int, pki: Pki) -> str:
    """HAProxy's TLS frontend line: TLS 1.3 only, client certificate required and verified, no
    tickets, the client's cipher order, ALPN h2 and http/1.1 (as fastmesh offers)."""
    return (f"    bind {address}:{port} backlog {backlog} ssl crt {pki.server_combined} ca-file {pki.bundle} "
            "verify required ssl-min-ver TLSv1.3 no-tls-tickets prefer-client-ciphers alpn h2,http/1.1\n")


# HAProxy's global section: no session cache (resumption off, as in fastmesh and nginx).
HAPROXY_GLOBAL = "    tune.ssl.cachesize 0\n"


def fastmesh_tls(pki: Pki) -> tuple[dict[str, object], list[dict[str, object]]]:
    """fastmesh's `spec.identity` and its listeners: the plaintext `outbound` and the `inbound`
    listener with `mtls: STRICT` (ports come from `--listener NAME=ADDR` overrides)."""
    identity: dict[str, object] = {**FASTMESH_IDENTITY, "ca": {"directory": str(pki.ca_dir)}}
    listeners: list[dict[str, object]] = [{"name": "outbound", "port": 15001},
                                          {"name": "inbound", "port": 15006, "mtls": "STRICT"}]
    return identity, listeners
