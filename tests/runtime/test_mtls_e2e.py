"""mTLS end to end: two real `fastmesh proxy` processes with identities from one CA directory,
a real hypercorn upstream, real TLS handshakes, curl as a foreign client.

    curl --(plain)--> proxy "web" outbound --(mTLS, web's cert)--> proxy "reviews" inbound STRICT --> upstream

Skipped only when the built engine has no `Engine.set_identity` (built before mTLS landed).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastmesh.ca import CA
from tests.harness import Proxy, Upstream, curl, mesh_config, service

try:
    from fastmesh import _engine

    HAS_IDENTITY = hasattr(_engine.Engine, "set_identity")
except ImportError:
    HAS_IDENTITY = False

pytestmark = [
    pytest.mark.skipif(not HAS_IDENTITY, reason="the built engine has no Engine.set_identity (branch tls not merged/built)"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]

TD = "td.test"
WEB = f"spiffe://{TD}/ns/default/sa/web"
REVIEWS = f"spiffe://{TD}/ns/default/sa/reviews"


def identity(ca_dir: Path, account: str, ttl: str = "1h") -> dict[str, Any]:
    return {"trustDomain": TD, "serviceAccount": account, "ca": {"directory": str(ca_dir)}, "certTTL": ttl}


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA.init(tmp_path / "ca", TD)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream.start(name="reviews-app", log_dir=tmp_path)
    yield up
    up.stop()


def start_server(ca: CA, upstream: Upstream, tmp_path: Path, ttl: str = "1h", **admin: Any) -> Proxy:
    """The "reviews" workload's proxy: inbound STRICT, routes Host reviews to the upstream."""
    spec = {"identity": identity(ca.directory, "reviews", ttl),
            "listeners": [{"name": "outbound", "port": 15001}, {"name": "inbound", "port": 15006, "mtls": "STRICT"}]}
    if admin:
        spec["admin"] = admin
    config = mesh_config(services={"reviews": [upstream.address]}, proxy=spec)
    return Proxy.start(config, tmp_path, listeners=("outbound", "inbound"))


def client_config(ca: CA, server: Proxy, account: str = "reviews", ttl: str = "1h",
                  pool: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {"identity": identity(ca.directory, "web", ttl)}
    if pool:
        spec["pool"] = pool
    return mesh_config(services=[service("reviews", [server.listeners["inbound"]], service_account=account)],
                       proxy=spec)


def test_mesh_request_goes_over_mtls_and_the_server_sees_the_caller(ca: CA, upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(ca, upstream, tmp_path)
    client = Proxy.start(client_config(ca, server), tmp_path)
    try:
        response = client.get("/hello", host="reviews")
        assert response.status_code == 200, response.text
        echo = response.json()
        assert echo["upstream"] == "reviews-app"
        xfcc = {k.lower(): v for k, v in echo["headers"].items()}["x-forwarded-client-cert"]
        assert f"URI={WEB}" in xfcc and f"By={REVIEWS}" in xfcc
        assert server.stats()["tls"]["handshakes"] >= 1
        # Certificates are issued by a short-lived child (fastmesh.ca.worker): neither proxy
        # maps `cryptography` (and its OpenSSL), ~15 MiB of resident memory otherwise.
        for proxy in (client, server):
            maps = Path(f"/proc/{proxy.pid}/maps").read_text()
            assert "/cryptography/" not in maps, [line for line in maps.splitlines() if "/cryptography/" in line][:3]
    finally:
        client.terminate()
        server.terminate()


def test_identity_mismatch_answers_502(ca: CA, upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(ca, upstream, tmp_path)
    client = Proxy.start(client_config(ca, server, account="ratings"), tmp_path)
    try:
        response = client.get("/", host="reviews")
        assert response.status_code == 502
        assert f"upstream identity mismatch: expected spiffe://{TD}/ns/default/sa/ratings" in response.text
        assert REVIEWS in response.text
        assert client.stats()["tls"]["identity_mismatch"] >= 1
    finally:
        client.terminate()
        server.terminate()


def test_strict_inbound_refuses_plaintext_foreign_expired_and_future_certificates(
        ca: CA, upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(ca, upstream, tmp_path)
    url = f"https://{server.listeners['inbound']}/"
    now = datetime.now(UTC)
    other = CA.init(tmp_path / "other-ca", TD)

    def with_cert(name: str, issued: Any) -> Any:
        chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
        chain.write_text(issued.cert_chain_pem)
        key.write_text(issued.key_pem)
        key.chmod(0o600)
        return curl("-k", "-o", "/dev/null", "-w", "%{http_code}", "-H", "host: reviews",
                    "--cert", str(chain), "--key", str(key), url, timeout=20)

    try:
        good = with_cert("good", ca.issue(WEB))
        assert good.returncode == 0 and good.stdout == "200", good.stderr
        for name, issued in {
            "foreign": other.issue(WEB),
            "expired": ca.issue(WEB, ttl=timedelta(hours=1), not_before=now - timedelta(days=1)),
            "future": ca.issue(WEB, ttl=timedelta(hours=1), not_before=now + timedelta(days=1)),
        }.items():
            refused = with_cert(name, issued)
            assert refused.returncode != 0, (name, refused.stdout)
        no_cert = curl("-k", "-o", "/dev/null", "-H", "host: reviews", url, timeout=20)
        assert no_cert.returncode != 0
        plain = curl("-o", "/dev/null", "-H", "host: reviews", f"http://{server.listeners['inbound']}/", timeout=20)
        assert plain.returncode != 0
        tls = server.stats()["tls"]
        assert tls["handshake_failures"] + tls["plaintext_rejected"] >= 4
    finally:
        server.terminate()


class Traffic:
    """Sequential requests through the client proxy in a thread, until stopped (or 60 s)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        with self.proxy.client(headers={"host": "reviews"}) as c:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    self.statuses.append(c.get("/").status_code)
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_identity(proxy: Proxy, reason: str, timeout: float = 20.0) -> dict[str, Any]:
    """The next `identity` event with `reason` (others, e.g. renewals, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        event = proxy.wait_event("identity", timeout=max(0.1, deadline - time.monotonic()))
        if event["reason"] == reason:
            return event


def test_root_rotation_and_renewal_under_traffic_lose_nothing(ca: CA, upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(ca, upstream, tmp_path, ttl="8s")
    # A short idle timeout: the pool opens new mTLS connections all along, across every change.
    client = Proxy.start(client_config(ca, server, ttl="8s", pool={"idleTimeout": "100ms"}), tmp_path)
    traffic = Traffic(client)
    try:
        for proxy in (client, server):  # a renewal at two thirds of 8 s
            wait_identity(proxy, "renewal")
        ca_now = CA.load(ca.directory)
        ca_now.rotate_root()
        for proxy in (client, server):
            wait_identity(proxy, "bundle changed")
            wait_identity(proxy, "ca changed")
        ca_now.drop_old_roots()
        for proxy in (client, server):
            wait_identity(proxy, "bundle changed")
        for proxy in (client, server):  # and a renewal under the new root alone
            wait_identity(proxy, "renewal")
    finally:
        traffic.stop()
        client_logs, server_logs = client.stderr_tail(400), server.stderr_tail(400)
        client.terminate()
        server.terminate()
    assert traffic.errors == []
    assert len(traffic.statuses) > 50
    assert set(traffic.statuses) == {200}, {s: traffic.statuses.count(s) for s in set(traffic.statuses)}
    assert "PRIVATE KEY" not in client_logs + server_logs


def test_admin_renew_on_a_real_proxy(ca: CA, upstream: Upstream, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    server = start_server(ca, upstream, tmp_path, tokenFile=str(token))
    try:
        first = next(e for e in server.events if e["event"] == "identity")  # before "ready"
        assert first["reason"] == "start"
        url = f"{server.admin_url}/identity/renew"
        assert httpx.post(url, timeout=10).status_code == 401
        response = httpx.post(url, headers={"authorization": "Bearer tok-123"}, timeout=10)
        assert response.status_code == 200, response.text
        renewed = server.wait_event("identity")
        assert renewed["reason"] == "admin" and renewed["generation"] == first["generation"] + 1
        engine_view = server.stats()["orchestrator"]["identity"]
        assert engine_view["spiffe_id"] == REVIEWS and engine_view["generation"] == renewed["generation"]
        for page in ("/config", "/stats", "/metrics"):
            assert "PRIVATE KEY" not in httpx.get(server.admin_url + page, timeout=10).text
    finally:
        server.terminate()
