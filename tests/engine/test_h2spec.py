"""HTTP/2 conformance of the h2c listener, by h2spec (RFC 7540/9113 frames, streams, flow control,
errors; RFC 7541 HPACK) against a real proxy with a real upstream, on the engine's own HTTP/2
server (`rust/src/h2/`) and, for comparison, on hyper's (`FASTMESH_H2_SERVER=0`).

h2spec is built once from the Go module proxy (bench/h2spec.py, cached in ~/.cache/fastmesh);
the test is skipped, with the reason, only when it cannot be built here."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from bench.h2spec import ensure_h2spec
from tests.harness import backend, mesh_config, route, rule


# The listener serves HTTP/1.1 and h2c on one port: a first line that is not the HTTP/2 preface is
# HTTP/1.1, and "INVALID CONNECTION PREFACE" gets hyper's 400 before the close h2spec waits for
# (a listener for HTTP/2 alone would close silently). hyper's server fails it the same way.
DUAL_PROTOCOL_LISTENER = {"http2/3.5 Sends invalid connection preface"}


def _h2spec() -> Path:
    path, why = ensure_h2spec(install=True)
    if path is None:
        pytest.skip(f"h2spec cannot be built here: {why}")
    return path


def run_h2spec(h2spec: Path, address: str, report: Path) -> tuple[dict[str, list[int]], list[str]]:
    """Runs every h2spec case against `address`: per section [passed, failed, skipped], and the
    failed cases' names."""
    host, port = address.rsplit(":", 1)
    done = subprocess.run([str(h2spec), "-h", host, "-p", port, "-o", "3", "-j", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert report.exists(), f"h2spec wrote no report (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr}"
    sections: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    failed = []
    for case in ET.parse(report).getroot().iter("testcase"):
        section = case.get("package", "?").split("/")
        key = "/".join(section[:2]) if section[0] == "http2" else section[0]
        if case.find("failure") is not None or case.find("error") is not None:
            sections[key][1] += 1
            failed.append(f"{case.get('package')} {case.get('classname')}")
        elif case.find("skipped") is not None:
            sections[key][2] += 1
        else:
            sections[key][0] += 1
    return dict(sections), failed


@pytest.fixture
def catch_all(upstream_factory):
    up = upstream_factory("h2spec")
    return mesh_config(services={"echo": [up.address]}, routes=[route("all", [rule(backend("echo"))])])


def h2spec_on(server: str, config: str, proxy_factory, tmp_path, monkeypatch) -> tuple[dict[str, list[int]], list[str], object]:
    """h2spec against a proxy whose h2c server is `server` ("1": the engine's own, "0": hyper's);
    prints the sections; returns them, the failed cases and the proxy."""
    h2spec = _h2spec()
    monkeypatch.setenv("FASTMESH_H2_SERVER", server)
    px = proxy_factory(config)
    sections, failed = run_h2spec(h2spec, px.address, tmp_path / "h2spec.xml")
    label = "own" if server == "1" else "hyper"
    for name, (ok, bad, skipped) in sorted(sections.items()):
        print(f"{label} {name}: {ok} passed, {bad} failed, {skipped} skipped")
    print(f"{label} failed:", *failed, sep="\n  ")
    return sections, failed, px


def test_h2spec_passes_every_case_on_the_engines_own_server(catch_all, proxy_factory, tmp_path, monkeypatch):
    sections, failed, px = h2spec_on("1", catch_all, proxy_factory, tmp_path, monkeypatch)
    total = sum(s[0] + s[1] + s[2] for s in sections.values())
    assert total == 145, sections  # h2spec 2.2.1: every case of http2, hpack and generic ran
    assert set(failed) <= DUAL_PROTOCOL_LISTENER, "\n".join(failed)
    # The proxy still serves after h2spec's malformed frames.
    with px.client(http2=True) as client:
        assert client.get("/after").status_code == 200


def test_h2spec_on_hypers_server_for_comparison(catch_all, proxy_factory, tmp_path, monkeypatch):
    """Not a gate: what hyper's server (FASTMESH_H2_SERVER=0) scores, printed next to ours."""
    sections, _, _ = h2spec_on("0", catch_all, proxy_factory, tmp_path, monkeypatch)
    assert sum(s[0] for s in sections.values()) > 0
