"""`fastmesh proxy --control-plane` and `fastmesh control`: argument errors, and what the sidecar imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastmesh.cli import main
from tests.harness import REPO, modules_imported


def test_control_plane_mode_needs_an_https_url_and_a_ca_bundle(capsys: object, tmp_path: Path) -> None:
    assert main(["proxy", "--control-plane", "http://cp:15012", "--ca-bundle", "b.pem"]) == 2
    assert main(["proxy", "--control-plane", "https://cp:15012"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "--control-plane http://cp:15012: expected https://HOST:PORT" in err
    assert "--control-plane needs --ca-bundle" in err


def test_control_refuses_a_serving_certificate_or_lease_time_that_cannot_work(capsys: object) -> None:
    for bad in (["--serving-cert-ttl", "0"], ["--lease-duration", "0.5"]):
        assert main(["control", "--kubernetes", "--ca-dir", "ca", *bad]) == 2
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert "--serving-cert-ttl must be > 0 and --lease-duration >= 1" in err


def test_control_needs_a_ca_directory_that_holds_a_ca(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text('{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],'
                          ' "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],'
                          ' "users": [{"name": "u", "user": {"token": "t"}}]}')
    result = subprocess.run([sys.executable, "-m", "fastmesh", "control", "--kubernetes", "--kubeconfig", str(kubeconfig),
                             "--listen", "127.0.0.1:0", "--ca-dir", str(tmp_path / "nothing")],
                            capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 1
    assert f"--ca-dir {tmp_path / 'nothing'}: {tmp_path / 'nothing'}: no CA here" in result.stderr


def test_the_sidecar_in_control_plane_mode_never_imports_the_ca() -> None:
    assert modules_imported("fastmesh.runtime, fastmesh.control.client, fastmesh.identity",
                            ("cryptography", "fastmesh.ca", "kubernetes", "fastmesh.control.server")) == []


def test_the_sidecar_in_kubernetes_mode_never_imports_the_kubernetes_client() -> None:
    """`fastmesh proxy --kubernetes` watches over http.client (fastmesh.kube.watch.HttpTransport): the
    `kubernetes` package (~34 MB RSS) is for the control plane only (fastmesh.kube.apiclient)."""
    assert modules_imported("fastmesh.runtime, fastmesh.kube.source, fastmesh.kube.watch, fastmesh.kube.status",
                            ("kubernetes", "urllib3", "fastmesh.kube.apiclient")) == []
    assert "kubernetes" in modules_imported("fastmesh.control.server", ("kubernetes",))  # the check can fail
