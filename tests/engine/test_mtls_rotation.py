"""Rotation without drops: the workload certificate and then the root change while wrk and h2load
run through a front engine (outbound mTLS) into a STRICT back engine, with zero failed requests.

The front's pool keeps no idle HTTP/1.1 connection (`max_idle_per_endpoint: 0`), so every request
to backend "fresh" is a new TCP connection and a new mTLS handshake: the handshakes during each
phase use that phase's material. Backend "long" is HTTP/2: one connection, made before the first
rotation, that must keep serving through all of them (its requests keep the first certificate's
hash in x-forwarded-client-cert, since that is what its handshake verified).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from fastmesh.ca import Issued
from tests.engine.mtls import (  # noqa: F401 - fixtures
    BACK_ID,
    FRONT_ID,
    MtlsEngine,
    ca,
    leaf_sha256,
    mtls_backend,
    mtls_engines,
    plain_backend,
    route,
    snapshot,
    xfcc,
)
from tests.harness import Loads, parse_h2load, parse_wrk, wait_until

LOAD_S = 12
# New handshakes each phase must see at the back before the next rotation step.
HANDSHAKES_PER_PHASE = 20


@dataclass
class Target:
    """What `Loads` needs of a proxy: its URL."""

    url: str


def test_workload_and_root_rotation_under_load_drop_nothing(ca, mtls_engines, upstream_factory, require_tools):
    require_tools("wrk", "h2load")
    up = upstream_factory("v1")
    back = mtls_engines()
    front = mtls_engines()
    certs: dict[str, Issued] = {"back": ca.issue(BACK_ID), "front": ca.issue(FRONT_ID)}
    first_front = certs["front"]

    def set_both(bundle: str) -> None:
        # The server first, then the client: both trust `bundle`.
        back.set_identity(certs["back"], bundle)
        front.set_identity(certs["front"], bundle)

    set_both(ca.bundle_pem())
    back.apply(snapshot([plain_backend("up", up.address)], [route("r", [("up", 1)])], mode="STRICT"))
    to_back = back.address()
    front.apply(
        snapshot(
            [mtls_backend("fresh", to_back, [BACK_ID]), mtls_backend("long", to_back, [BACK_ID], protocol="h2c")],
            [
                route("long", [("long", 1)], "/long"),
                route("fresh", [("fresh", 1)], "/fresh"),
                route("split", [("fresh", 1), ("long", 1)]),
            ],
            pool={"max_idle_per_endpoint": 0},
        )
    )
    url = f"http://{front.address()}"
    # The HTTP/2 connection of "long" is made now, with the first certificates.
    assert httpx.get(f"{url}/long").json()["headers"]["x-forwarded-client-cert"] == xfcc(BACK_ID, first_front)

    phases: list[tuple[str, int]] = []
    after_rotation: dict[str, dict[str, int]] = {}

    def new_handshakes(phase: str) -> None:
        start = back.tls("handshakes")
        wait_until(lambda: back.tls("handshakes") >= start + HANDSHAKES_PER_PHASE, timeout=8, what=phase)
        phases.append((phase, back.tls("handshakes") - start))

    def rotate() -> None:
        time.sleep(1)
        new_handshakes("before any rotation")
        # 1. Workload certificates renewed (same root).
        certs.update(back=ca.issue(BACK_ID), front=ca.issue(FRONT_ID))
        set_both(ca.bundle_pem())
        new_handshakes("renewed workload certificates")
        # 2. A new root: everyone trusts old + new, still with certificates from the old root.
        ca.rotate_root()
        set_both(ca.bundle_pem())
        new_handshakes("bundle with old and new root")
        # 3. Certificates from the new root.
        certs.update(back=ca.issue(BACK_ID), front=ca.issue(FRONT_ID))
        set_both(ca.bundle_pem())
        new_handshakes("certificates from the new root")
        # 4. The old root is dropped.
        assert ca.drop_old_roots() == 1
        set_both(ca.bundle_pem())
        new_handshakes("old root dropped")
        # Read while the load still runs: when wrk and h2load stop, the front cancels the requests
        # they had in flight, and a TLS handshake to the back cut short then counts as a failure
        # there (seen once in ~5,900 on a loaded machine). What the clients saw is checked below.
        after_rotation.update({
            "back": {c: back.tls(c) for c in ("handshake_failures", "plaintext_rejected")},
            "front": {c: front.tls(c) for c in ("identity_mismatch", "upstream_handshake_failures")},
        })

    loads = Loads(Target(url), "reviews", LOAD_S, wrk_conns=2, h2_conns=1, h2_streams=4)  # type: ignore[arg-type]
    wrk_out, h2_out = loads.finish(during=rotate)
    wrk, h2 = parse_wrk(wrk_out), parse_h2load(h2_out)

    assert [name for name, _ in phases] == [
        "before any rotation",
        "renewed workload certificates",
        "bundle with old and new root",
        "certificates from the new root",
        "old root dropped",
    ], phases
    assert wrk["requests"] > 0 and wrk["non_2xx_3xx"] == 0 and wrk["socket_errors"] == 0, wrk_out
    # h2load counts the status of responses whose stream it had not finished when the time was up
    # ("13127 2xx" for "13125 done"): every answer was a 2xx.
    assert h2["done"] > 0 and h2["2xx"] >= h2["done"] and h2["3xx"] == h2["4xx"] == h2["5xx"] == 0, h2_out
    assert h2["failed"] == h2["errored"] == h2["timeout"] == 0, h2_out
    assert after_rotation == {
        "back": {"handshake_failures": 0, "plaintext_rejected": 0},
        "front": {"identity_mismatch": 0, "upstream_handshake_failures": 0},
    }, (back.stats()["tls"], front.stats()["tls"])
    assert front.core.identity()["generation"] == back.core.identity()["generation"] == 5

    # The connection made before the rotations still serves, after the old root was dropped.
    long_view = httpx.get(f"{url}/long").json()["headers"]["x-forwarded-client-cert"]
    assert long_view == xfcc(BACK_ID, first_front)
    # One HTTP/2 connection per authority ("reviews" for the loads, the address for httpx).
    assert upstream_connections(front, "long") == 2
    # A new connection presents the current certificate.
    fresh_view = httpx.get(f"{url}/fresh").json()["headers"]["x-forwarded-client-cert"]
    assert fresh_view == xfcc(BACK_ID, certs["front"])
    assert leaf_sha256(certs["front"]) != leaf_sha256(first_front)
    print(f"wrk {wrk}, h2load {h2}, new handshakes per phase {phases}, back tls {back.stats()['tls']}")


def upstream_connections(engine: MtlsEngine, backend: str) -> int:
    entries: list[dict[str, Any]] = [e for e in engine.stats()["upstream"] if e["backend"] == backend]
    return sum(e["connections_open"] for e in entries)
