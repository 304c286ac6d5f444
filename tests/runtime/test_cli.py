"""The command line, run as users run it: `python -m fastmesh ...` in a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from fastmesh import __version__
from tests.harness import backend, fastmesh_cli, mesh_config, route, rule


def fastmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return fastmesh_cli(*args)


def good_config() -> str:
    return mesh_config(
        services={"reviews": [], "reviews-v1": ["127.0.0.1:9001"]},
        routes=[route("reviews", [rule(backend("reviews-v1", 1))], parent="reviews")],
    )


def bad_config() -> str:
    return mesh_config(
        services={"reviews": [], "reviews-v1": ["127.0.0.1:9001"]},
        routes=[route("reviews", [rule(backend("reviews-v1", 2_000_000))], parent="reviews")],
    )


def test_validate_ok_counts_documents(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(good_config())
    documents = len([d for d in yaml.safe_load_all(good_config()) if d is not None])
    result = fastmesh("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {path} ({documents} documents)\n"


def test_validate_bad_exits_1_with_the_config_error_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(bad_config())
    result = fastmesh("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert str(path) in result.stderr
    assert "HTTPRoute default/reviews" in result.stderr
    assert "backendRefs[0].weight" in result.stderr


def test_validate_several_files_reports_each_and_fails_if_any_fails(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(good_config())
    bad.write_text(bad_config())
    result = fastmesh("validate", str(good), str(bad))
    assert result.returncode == 1
    assert result.stdout.startswith(f"ok: {good} (")
    assert str(bad) in result.stderr and str(good) not in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = fastmesh("validate", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr


def test_version() -> None:
    result = fastmesh("version")
    assert (result.returncode, result.stdout) == (0, f"fastmesh {__version__}\n")


def test_proxy_rejects_a_malformed_listener_override(tmp_path: Path) -> None:
    result = fastmesh("proxy", "--config", str(tmp_path / "x.yaml"), "--listener", "outbound")
    assert result.returncode == 2
    assert "NAME=IP:PORT" in result.stderr


def test_proxy_with_invalid_config_exits_1_without_ready(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(bad_config())
    result = fastmesh("proxy", "--config", str(path), "--admin-address", "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "backendRefs[0].weight" in result.stderr
