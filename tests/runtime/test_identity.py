"""The workload identity in the runtime, against a fake engine that checks what it is given
(tests/runtime/fakes.py) and a real CA directory: issued at start BEFORE the snapshot that needs
it, renewed at two thirds of a short lifetime, renewed at once on root rotation, switched on
reload (and put back when the engine refuses the new snapshot), never shown with its key."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fastmesh.ca import CA
from fastmesh.runtime import Runtime
from tests.harness import mesh_config, modules_imported
from tests.runtime.fakes import FakeEngineCore, FakeIdentityEngineCore
from tests.runtime.test_runtime import Events, close_admin, make_runtime, run

TD = "td.test"
CART = f"spiffe://{TD}/ns/shop/sa/cart"


def config(ca_dir: Path, *, account: str = "cart", ttl: str = "1h", mtls: str = "STRICT",
           token_file: Path | None = None) -> str:
    spec: dict[str, Any] = {
        "identity": {"trustDomain": TD, "namespace": "shop", "serviceAccount": account,
                     "ca": {"directory": str(ca_dir)}, "certTTL": ttl},
        "listeners": [{"name": "outbound", "port": 15001}, {"name": "inbound", "port": 15006, "mtls": mtls}],
    }
    if token_file is not None:
        spec["admin"] = {"tokenFile": str(token_file)}
    return mesh_config(services={"reviews": ["127.0.0.1:9001"]}, proxy=spec)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA.init(tmp_path / "ca", TD)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def spiffe_of(leaf: x509.Certificate) -> str:
    return str(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.UniformResourceIdentifier)[0])


def overrides() -> Any:
    from fastmesh.runtime import Overrides

    return Overrides(admin_address="127.0.0.1:0",
                     listeners={"outbound": "127.0.0.1:0", "inbound": "127.0.0.1:0"})


def start(path: Path, core: FakeEngineCore) -> tuple[Runtime, Events]:
    return make_runtime(path, core, overrides())


async def stop(runtime: Runtime) -> None:
    if runtime.identity is not None:
        await runtime.identity.stop()
    close_admin(runtime)


def test_start_issues_and_sets_the_identity_before_the_snapshot(tmp_path: Path, ca: CA) -> None:
    core = FakeIdentityEngineCore()
    path = write(tmp_path / "mesh.yaml", config(ca.directory))

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        identity = events.lines[0]
        assert identity["event"] == "identity" and identity["reason"] == "start"
        assert identity["spiffe_id"] == CART and identity["generation"] == 1
        assert set(identity) == {"event", "spiffe_id", "not_after", "generation", "reason"}
        assert events.kinds() == ["identity", "ready"]
        await stop(runtime)

    run(scenario)
    assert core.calls == ["set_identity", "apply"]  # the STRICT listener is accepted
    leaf = core.leaf()
    assert spiffe_of(leaf) == CART
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == (
        __import__("datetime").timedelta(hours=1))
    assert core.identities[0][2] == ca.bundle_pem()


def test_renews_at_two_thirds_of_the_lifetime(tmp_path: Path, ca: CA) -> None:
    core = FakeIdentityEngineCore()
    path = write(tmp_path / "mesh.yaml", config(ca.directory, ttl="3s"))

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        renewed = await events.wait("identity", 2)
        elapsed = loop.time() - t0
        assert renewed["reason"] == "renewal" and renewed["generation"] == 2
        # Not before two thirds of 3 s (minus the sub-second truncation of not_before).
        assert elapsed >= 1.0, elapsed
        await events.wait("identity", 3)
        await stop(runtime)

    run(scenario)
    first, second = core.leaf(0), core.leaf(1)
    assert second.serial_number != first.serial_number
    assert second.not_valid_after_utc > first.not_valid_after_utc
    assert core.calls[:2] == ["set_identity", "apply"] and core.calls[2:4] == ["set_identity", "set_identity"]


def test_root_rotation_bundle_first_then_the_new_chain(tmp_path: Path, ca: CA) -> None:
    core = FakeIdentityEngineCore()
    path = write(tmp_path / "mesh.yaml", config(ca.directory, ttl="1h"))
    old_root = ca.root

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        rotated = CA.load(ca.directory)
        rotated.rotate_root()
        # Step 1: the new bundle (old and new roots) with the certificate the engine has.
        assert (await events.wait("identity", 2))["reason"] == "bundle changed"
        # Step 2, a moment later: a certificate from the new intermediate.
        assert (await events.wait("identity", 3))["reason"] == "ca changed"
        rotated.drop_old_roots()
        assert (await events.wait("identity", 4))["reason"] == "bundle changed"
        await asyncio.sleep(0.3)  # no new certificate: the intermediate did not change
        assert len(events.lines) == 5  # ready + 4 identity events
        await stop(runtime)
        assert runtime.identity is not None
        assert runtime.identity.view()["renewals"] == 2

    run(scenario)
    (chain0, key0, bundle0), (chain1, key1, bundle1), (chain2, _, bundle2), (chain3, _, bundle3) = core.identities
    assert (chain1, key1) == (chain0, key0)  # step 1 kept the certificate ...
    roots = x509.load_pem_x509_certificates(bundle1.encode())
    assert len(roots) == 2 and roots[1] == old_root  # ... and trusts both roots
    new_root = roots[0]
    assert x509.load_pem_x509_certificates(chain2.encode())[1].issuer == new_root.subject
    assert bundle2 == bundle1
    assert chain3 == chain2 and x509.load_pem_x509_certificates(bundle3.encode()) == [new_root]


def test_an_engine_without_set_identity_refuses_to_start(tmp_path: Path, ca: CA,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "mesh.yaml", config(ca.directory))
    core = FakeEngineCore()

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.run() == 1
        assert "ready" not in events.kinds()

    with caplog.at_level(logging.ERROR):
        run(scenario)
    assert core.snapshots == []
    assert "Engine.set_identity is missing" in caplog.text


def test_a_missing_ca_refuses_to_start_naming_the_directory(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "mesh.yaml", config(tmp_path / "no-ca"))
    core = FakeIdentityEngineCore()

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.run() == 1
        assert events.kinds() == ["identity_failed"]

    with caplog.at_level(logging.ERROR):
        run(scenario)
    assert core.calls == []
    assert f"{tmp_path / 'no-ca'}: no CA here (root.pem missing)" in caplog.text


def test_reload_switches_identity_before_the_snapshot_and_restores_it_if_refused(tmp_path: Path, ca: CA) -> None:
    core = FakeIdentityEngineCore()
    path = write(tmp_path / "mesh.yaml", config(ca.directory))

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        # A new service account: new identity, then the snapshot.
        path.write_text(config(ca.directory, account="cart-v2"))
        assert await runtime.reload()
        assert spiffe_of(core.leaf()) == f"spiffe://{TD}/ns/shop/sa/cart-v2"
        assert core.calls[-2:] == ["set_identity", "apply"]
        # The engine refuses the next snapshot: the cart-v2 certificate goes back in.
        core.refuse_with = ValueError("listeners[1]: address in use")
        path.write_text(config(ca.directory, account="cart-v3"))
        assert await runtime.reload() is False
        assert events.lines[-1]["event"] == "reload_failed"
        assert spiffe_of(core.leaf(-2)) == f"spiffe://{TD}/ns/shop/sa/cart-v3"
        assert spiffe_of(core.leaf()) == f"spiffe://{TD}/ns/shop/sa/cart-v2"
        assert [e["reason"] for e in events.lines if e["event"] == "identity"] == [
            "start", "config", "config", "restored"]
        assert runtime.identity is not None and runtime.identity.settings.spiffe_id.endswith("/cart-v2")
        # A CA that cannot be read: refused before anything reaches the engine.
        core.refuse_with = None
        calls = len(core.calls)
        path.write_text(config(tmp_path / "gone", account="cart-v4"))
        assert await runtime.reload() is False
        assert "no CA here" in events.lines[-1]["error"]
        assert len(core.calls) == calls
        assert runtime.state.version == 2
        await stop(runtime)

    run(scenario)


def test_renewal_failure_is_reported_and_retried(tmp_path: Path, ca: CA) -> None:
    core = FakeIdentityEngineCore()
    path = write(tmp_path / "mesh.yaml", config(ca.directory, ttl="2s"))
    key = ca.directory / "intermediate-key.pem"
    saved = key.read_bytes()

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        key.unlink()
        failed = await events.wait("identity_failed")
        assert "intermediate-key.pem: missing" in failed["error"]
        assert runtime.identity is not None and runtime.identity.view()["renewal_failures"] >= 1
        key.write_bytes(saved)
        key.chmod(0o600)
        renewed = await events.wait("identity", 2)
        assert renewed["reason"] in ("retry", "renewal")
        assert runtime.identity.view()["last_error"] is None
        await stop(runtime)

    run(scenario)


def test_admin_shows_the_identity_never_the_key_and_renew_needs_the_token(
        tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture) -> None:
    core = FakeIdentityEngineCore()
    token = write(tmp_path / "admin-token", "s3cret-token\n")
    path = write(tmp_path / "mesh.yaml", config(ca.directory, token_file=token))
    pages: dict[str, str] = {}

    async def scenario() -> None:
        runtime, events = start(path, core)
        assert await runtime.start()
        base = f"http://{runtime.admin_address}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for page in ("/config", "/stats", "/metrics"):
                response = await client.get(page)
                assert response.status_code == 200
                pages[page] = response.text
            shown = (await client.get("/config")).json()["identity"]
            assert shown["spiffe_id"] == CART and shown["generation"] == 1
            assert shown["not_after"].endswith("Z")
            assert (await client.get("/stats")).json()["orchestrator"]["identity"]["spiffe_id"] == CART
            # The certificate's expiry and renewal time as gauges to alert on (Unix time).
            families = {f.name: f for f in text_string_to_metric_families(pages["/metrics"])}
            (expiry,) = families["fastmesh_identity_cert_expiry_timestamp_seconds"].samples
            (renewal,) = families["fastmesh_identity_cert_renewal_timestamp_seconds"].samples
            assert expiry.labels == {"spiffe_id": CART}
            assert abs(expiry.value - datetime.fromisoformat(shown["not_after"]).timestamp()) < 0.01
            assert abs(renewal.value - datetime.fromisoformat(shown["renew_at"]).timestamp()) < 0.01
            assert families["fastmesh_identity_renewals"].samples[0].value == 1

            renew = "/identity/renew"
            assert (await client.post(renew)).status_code == 401
            wrong = await client.post(renew, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
            assert (await client.post(renew, headers={"authorization": "Basic s3cret-token"})).status_code == 401
            assert (await client.get(renew)).status_code == 405
            assert len(core.identities) == 1  # nothing renewed by the refused requests
            ok = await client.post(renew, headers={"authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["generation"] == 2 and ok.json()["spiffe_id"] == CART
            assert (await events.wait("identity", 2))["reason"] == "admin"
            pages["renew"] = ok.text
        await stop(runtime)
        pages["events"] = "\n".join(map(str, events.lines))

    with caplog.at_level(logging.DEBUG):
        run(scenario)
    pages["logs"] = caplog.text
    keys = [key for _, key, _ in core.identities]
    assert len(keys) == 2
    for where, text in pages.items():
        assert "PRIVATE KEY" not in text, where
        for key in keys:
            body = "".join(key.splitlines()[1:-1])  # the base64 of the key
            for i in range(0, len(body) - 16, 16):
                assert body[i:i + 16] not in text, where


def test_renew_without_a_token_file_is_forbidden_and_without_identity_a_conflict(tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.yaml", mesh_config(services={"reviews": ["127.0.0.1:9001"]}))
    token = write(tmp_path / "token", "t0ken")

    async def scenario() -> None:
        runtime, _ = make_runtime(path, FakeEngineCore())
        assert await runtime.start()
        async with httpx.AsyncClient(base_url=f"http://{runtime.admin_address}", timeout=10) as client:
            forbidden = await client.post("/identity/renew", headers={"authorization": "Bearer x"})
            assert forbidden.status_code == 403 and "spec.admin.tokenFile" in forbidden.text
            runtime.admin_token_file = str(token)
            conflict = await client.post("/identity/renew", headers={"authorization": "Bearer t0ken"})
            assert conflict.status_code == 409, conflict.text
            assert (await client.get("/config")).json()["identity"] is None
        close_admin(runtime)

    run(scenario)


def test_the_proxy_without_identity_never_imports_the_ca() -> None:
    assert modules_imported("fastmesh.runtime, fastmesh.admin, fastmesh.identity",
                            ("cryptography", "fastmesh.ca", "hmac")) == []
