"""The compiled examples are snapshots the engine accepts (skipped when the engine is not built)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastmesh.ca import CA
from fastmesh.config import compile_snapshot, load_file
from fastmesh.spiffe import workload_id
from tests.config.conftest import EXAMPLES

engine = pytest.importorskip("fastmesh._engine", reason="engine not built (make engine)")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_engine_applies_the_compiled_example(path: Path, tmp_path: Path) -> None:
    cfg = load_file(path)
    snapshot = compile_snapshot(cfg)
    for listener in snapshot["listeners"]:
        listener["address"] = "127.0.0.1:0"  # never the example's fixed port
    snapshot["version"] = 1
    proxy = engine.Engine(1)
    if cfg.proxy.identity is not None:  # mTLS (the demo's sidecars): an identity from a CA made here
        identity = cfg.proxy.identity
        ca = CA.init(tmp_path / "ca", identity.trust_domain)
        issued = ca.issue(workload_id(identity.trust_domain, identity.namespace, identity.service_account))
        proxy.set_identity(issued.cert_chain_pem, issued.key_pem, ca.bundle_pem())
    assert proxy.apply(json.dumps(snapshot)) == 1
    assert set(proxy.listeners()) == {listener["name"] for listener in snapshot["listeners"]}
    assert proxy.drain(1.0)


def _regex_snapshot(pattern: str) -> str:
    match: dict[str, object] = {"path": {"type": "RegularExpression", "value": pattern}, "method": None, "headers": [], "query": []}
    route = {"name": "r", "match": match, "filters": [], "backends": []}
    return json.dumps({"version": 1, "vhosts": [{"name": "*", "domains": ["*"], "routes": [route]}]})


def test_the_engine_agrees_on_regexes() -> None:
    """What the config check accepts, the engine compiles; what it refuses, the engine would refuse too."""
    from tests.config.test_regex import ACCEPTED, REJECTED

    proxy = engine.Engine(1)
    for pattern in ACCEPTED:
        proxy.apply(_regex_snapshot(pattern))
    for pattern, _ in REJECTED:
        with pytest.raises(ValueError, match="regular expression"):
            proxy.apply(_regex_snapshot(pattern))
