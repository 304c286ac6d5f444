"""`python -m fastmesh.config.worker`: what it writes for a good config, a bad one and a bad override."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from fastmesh.config import ConfigError, Problem, compile_snapshot, load_text
from fastmesh.config.worker import compile_content, main
from fastmesh.overrides import Overrides

REPO = Path(__file__).resolve().parents[2]
GOOD = """\
apiVersion: fastmesh.io/v1alpha1
kind: Proxy
metadata: {name: p}
spec:
  admin: {address: "127.0.0.1:15100"}
  workerThreads: 2
  drainTimeout: 1m30s
  listeners: [{name: outbound, port: 15101}, {name: inbound, port: 15102}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 8080}]}
"""
BAD = GOOD.replace("port: 8080", "port: 80800")


def test_good_config_gives_settings_and_the_snapshot_with_overrides() -> None:
    header, snapshot = compile_content(GOOD.encode(), "mesh.yaml", Overrides(listeners={"inbound": "127.0.0.1:0"}))
    assert header == {"settings": {"admin_address": "127.0.0.1:15100", "worker_threads": 2, "drain_timeout_s": 90.0}}
    expected = compile_snapshot(load_text(GOOD, "mesh.yaml"))
    expected["listeners"][1]["address"] = "127.0.0.1:0"
    assert snapshot is not None and json.loads(snapshot) == expected
    assert "\n" not in snapshot  # one line of the protocol


def test_bad_config_gives_the_problems_that_rebuild_the_same_error() -> None:
    header, snapshot = compile_content(BAD.encode(), "mesh.yaml", Overrides())
    assert snapshot is None
    try:
        load_text(BAD, "mesh.yaml")
    except ConfigError as e:
        expected = str(e)
    assert str(ConfigError([Problem(**p) for p in header["problems"]])) == expected
    assert "document 2 (Service default/web): spec.ports[0].port" in expected


def test_non_utf8_and_unknown_listener() -> None:
    header, _ = compile_content(b"kind: \xff\n", "mesh.yaml", Overrides())
    (problem,) = header["problems"]
    assert problem["message"] == "cannot read: not UTF-8 text (invalid start byte at byte 6)"
    header, snapshot = compile_content(GOOD.encode(), "mesh.yaml", Overrides(listeners={"x": "127.0.0.1:0"}))
    assert snapshot is None
    assert header == {"override_error": "--listener x=127.0.0.1:0: the config has no listener named 'x'"
                                        " (it has: outbound, inbound)"}


def test_main_writes_a_header_line_then_the_snapshot_line() -> None:
    out = io.StringIO()
    status = main(["--source=mesh.yaml", "--listener=outbound=127.0.0.1:0"], io.BytesIO(GOOD.encode()), out)
    header, snapshot, rest = out.getvalue().split("\n")
    assert status == 0 and rest == ""
    assert json.loads(header)["settings"]["worker_threads"] == 2
    assert json.loads(snapshot)["listeners"][0] == {"name": "outbound", "address": "127.0.0.1:0"}


def test_as_a_process() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-m", "fastmesh.config.worker", "--source=mesh.yaml"], input=BAD.encode(),
                          capture_output=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    header_line, _, rest = done.stdout.partition(b"\n")
    assert rest == b"" and json.loads(header_line)["problems"][0]["label"] == "Service default/web"
