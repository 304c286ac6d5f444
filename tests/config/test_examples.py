"""Every example in examples/ is valid, small, says how to run it, and compiles to what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastmesh.config import compile_snapshot, load_file
from tests.config.conftest import EXAMPLES

ALL = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_there() -> None:
    assert {p.name for p in ALL} >= {"demo.yaml", "gateway-hosts.yaml", "external.yaml"}


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_example_validates_and_compiles(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < 5 * 1024
    first = text.splitlines()[0]
    assert first.startswith("# Run it: ") and ("python -m fastmesh" in first or "make demo" in first)
    snapshot = compile_snapshot(load_file(path))
    assert snapshot["vhosts"] and snapshot["backends"]


def test_demo_splits_reviews_90_10_with_a_v2_pin_over_mtls() -> None:
    """examples/demo.yaml: productpage's sidecar; both versions are meshed, reached at their sidecars."""
    cfg = load_file(EXAMPLES / "demo.yaml")
    assert cfg.proxy.admin_address == "127.0.0.1:15000"
    assert [(li.name, li.address, li.port, li.mtls) for li in cfg.proxy.listeners] == [
        ("outbound", "127.0.0.1", 15001, "DISABLE")]
    assert cfg.proxy.identity is not None and cfg.proxy.identity.service_account == "productpage"
    snapshot = compile_snapshot(cfg)
    backends = {b["name"]: b for b in snapshot["backends"]}
    for version, port in (("v1", 15006), ("v2", 15007)):
        backend = backends[f"default/reviews-{version}:9080"]
        assert backend["endpoints"] == [f"127.0.0.1:{port}"]
        assert backend["tls"]["identities"] == [f"spiffe://cluster.local/ns/default/sa/reviews-{version}"]
    reviews = next(v for v in snapshot["vhosts"] if v["name"] == "default/reviews")
    assert "reviews" in reviews["domains"]
    pin, split = reviews["routes"]
    assert pin["match"]["headers"] == [{"type": "Exact", "name": "x-version", "value": "v2"}]
    assert pin["backends"] == [{"backend": "default/reviews-v2:9080", "weight": 1}]
    assert split["match"]["headers"] == []
    assert split["backends"] == [
        {"backend": "default/reviews-v1:9080", "weight": 90},
        {"backend": "default/reviews-v2:9080", "weight": 10},
    ]


@pytest.mark.parametrize(("version", "port", "app"), [("v1", 15006, 18081), ("v2", 15007, 18082)])
def test_demo_reviews_sidecars_are_strict_and_let_only_productpage_in(version: str, port: int, app: int) -> None:
    cfg = load_file(EXAMPLES / f"demo-reviews-{version}.yaml")
    assert cfg.proxy.identity is not None and cfg.proxy.identity.service_account == f"reviews-{version}"
    assert cfg.proxy.identity.ca.directory == load_file(EXAMPLES / "demo.yaml").proxy.identity.ca.directory  # type: ignore[union-attr]
    snapshot = compile_snapshot(cfg)
    (listener,) = snapshot["listeners"]
    assert (listener["address"], listener["tls"]) == (f"127.0.0.1:{port}", {"mode": "STRICT"})
    assert listener["authorization"]["policies"] == [{
        "name": "default/reviews-from-productpage", "action": "ALLOW",
        "rules": [{"from": [{"principals": ["spiffe://cluster.local/ns/default/sa/productpage"]}]}],
    }]
    assert [b["endpoints"] for b in snapshot["backends"]] == [[f"127.0.0.1:{app}"]]
    (vhost,) = snapshot["vhosts"]
    assert "reviews" in vhost["domains"]  # requests keep Host: reviews from the client


def test_gateway_hosts_redirects_and_rewrites() -> None:
    snapshot = compile_snapshot(load_file(EXAMPLES / "gateway-hosts.yaml"))
    hosts = {v["name"]: v for v in snapshot["vhosts"]}
    assert {"shop.example.com", "old.example.com", "*.example.com"} <= set(hosts)
    redirect = hosts["old.example.com"]["routes"][0]["filters"][0]
    assert (redirect["type"], redirect["hostname"], redirect["status_code"]) == ("RequestRedirect", "shop.example.com", 301)
    api = hosts["shop.example.com"]["routes"][0]
    assert api["match"]["path"] == {"type": "PathPrefix", "value": "/api"}
    assert api["filters"][0] == {"type": "URLRewrite", "hostname": None, "path": {"type": "ReplacePrefixMatch", "value": "/"}}


def test_external_declares_hosts_outside_kubernetes() -> None:
    snapshot = compile_snapshot(load_file(EXAMPLES / "external.yaml"))
    protocols = {b["name"]: (b["protocol"], b["lb"]) for b in snapshot["backends"]}
    assert protocols == {"external/billing": ("http1", "round_robin"), "external/ledger": ("h2c", "round_robin")}
