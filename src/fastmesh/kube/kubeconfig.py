"""Where the Kubernetes API is and how to authenticate: a kubeconfig file, or the in-cluster ServiceAccount.

Supported: the current context's cluster `server`, `certificate-authority` / `certificate-authority-data`,
`insecure-skip-tls-verify`, and a user `token` / `tokenFile` (bearer tokens; client certificates and exec
plugins are not supported yet, and are named in the error).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Connection:
    server: str
    """`https://host:port`, no trailing slash."""
    token: str | None = None
    token_file: str | None = None
    """Read at each request: projected ServiceAccount tokens are rotated on disk."""
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False

    def bearer(self) -> str | None:
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None
        )


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)  # a JSON kubeconfig needs no YAML parser in the proxy process
    except ValueError:
        import yaml  # noqa: PLC0415 - only for YAML kubeconfigs

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise KubeConfigError(f"{source}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise KubeConfigError(f"{source}: not a kubeconfig (expected a mapping)")
    return data


def _named(data: dict[str, Any], section: str, name: str, source: str) -> dict[str, Any]:
    for entry in data.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(section[:-1])
            if isinstance(value, dict):
                return value
    raise KubeConfigError(f"{source}: {section}: no entry named {name!r}")


def _beside(source: str, path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(source)), os.path.expanduser(path))


def load_kubeconfig(path: str | Path, context: str | None = None) -> Connection:
    """The connection of `context` (default: current-context) in a kubeconfig file."""
    source = str(path)
    try:
        data = _parse(Path(path).read_text(encoding="utf-8"), source)
    except OSError as e:
        raise KubeConfigError(f"{source}: cannot read: {e.strerror or e}") from None
    name = context or data.get("current-context")
    if not name:
        raise KubeConfigError(f"{source}: no current-context (and no --kube-context given)")
    ctx = _named(data, "contexts", name, source)
    cluster = _named(data, "clusters", str(ctx.get("cluster")), source)
    user = _named(data, "users", str(ctx.get("user")), source) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"{source}: clusters[{ctx.get('cluster')}].server: expected an https:// URL (got {server!r})")
    unsupported = sorted(k for k in ("client-certificate", "client-certificate-data", "exec", "auth-provider") if k in user)
    if unsupported and not (user.get("token") or user.get("tokenFile")):
        raise KubeConfigError(f"{source}: users[{ctx.get('user')}]: {', '.join(unsupported)} not supported yet (use a token)")
    ca_file = cluster.get("certificate-authority")
    ca_data = cluster.get("certificate-authority-data")
    token_file = user.get("tokenFile")
    return Connection(
        server=server.rstrip("/"),
        token=user.get("token"),
        token_file=_beside(source, token_file) if token_file else None,
        ca_file=_beside(source, ca_file) if ca_file else None,
        ca_data=base64.b64decode(ca_data) if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def in_cluster() -> Connection:
    """The pod's ServiceAccount: KUBERNETES_SERVICE_HOST/PORT, its token and CA under IN_CLUSTER."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (IN_CLUSTER / "token").exists():
        raise KubeConfigError("not in a cluster (no KUBERNETES_SERVICE_HOST or ServiceAccount token): give --kubeconfig")
    host = f"[{host}]" if ":" in host else host
    return Connection(
        server=f"https://{host}:{port}", token_file=str(IN_CLUSTER / "token"), ca_file=str(IN_CLUSTER / "ca.crt")
    )


def connect(kubeconfig: str | Path | None = None, context: str | None = None) -> Connection:
    """--kubeconfig, else $KUBECONFIG (its first file), else ~/.kube/config if present, else in-cluster."""
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"].split(os.pathsep)[0]
    if kubeconfig is None and (Path.home() / ".kube" / "config").exists():
        kubeconfig = Path.home() / ".kube" / "config"
    if kubeconfig is None:
        return in_cluster()
    return load_kubeconfig(kubeconfig, context)
