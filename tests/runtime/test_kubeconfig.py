"""kubeconfig files as `fastmesh proxy --kubernetes` reads them: token auth, CA, contexts, clear errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from fastmesh.kube.kubeconfig import KubeConfigError, connect, load_kubeconfig


def _config(user: dict, cluster: dict | None = None, current: str = "ctx") -> dict:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c"}}],
    }


def test_yaml_kubeconfig_with_token_file_and_ca_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(_config({"tokenFile": "token"}, {"server": "https://127.0.0.1:6443/",
                                                                    "certificate-authority": "ca.crt"})))
    (path.parent / "token").write_text("abc\n")
    conn = load_kubeconfig(path)
    assert conn.server == "https://127.0.0.1:6443"
    assert conn.ca_file == str(path.parent / "ca.crt")
    assert conn.bearer() == "abc"
    (path.parent / "token").write_text("rotated\n")
    assert conn.bearer() == "rotated"  # read at each request


def test_json_kubeconfig_with_inline_token_and_ca_data(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    ca = b"-----BEGIN CERTIFICATE-----\n"
    path.write_text(json.dumps(_config({"token": "t0k"}, {"server": "https://[::1]:6443",
                                                          "certificate-authority-data": base64.b64encode(ca).decode()})))
    conn = load_kubeconfig(path)
    assert (conn.server, conn.token, conn.ca_data) == ("https://[::1]:6443", "t0k", ca)
    assert load_kubeconfig(path, context="other").token is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_config({"exec": {"command": "aws"}}), "users[u]: exec not supported yet (use a token)"),
        (_config({"token": "t"}, current=""), "no current-context"),
        (_config({"token": "t"}, current="nope"), "contexts: no entry named 'nope'"),
        (_config({"token": "t"}, {"server": "127.0.0.1:6443"}), "clusters[c].server: expected an https:// URL"),
    ],
)
def test_unusable_kubeconfig_is_a_clear_error(tmp_path: Path, config: dict, message: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    with pytest.raises(KubeConfigError) as err:
        load_kubeconfig(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_connect_takes_kubeconfig_env_then_fails_clearly_outside_a_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(_config({"token": "from-env"})))
    monkeypatch.setenv("KUBECONFIG", f"{path}:/elsewhere")
    assert connect().token == "from-env"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="not in a cluster"):
        connect()
