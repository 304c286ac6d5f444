"""The `fastmesh` command line: `proxy`, `control`, `validate`, `ca`, `rollout`, `version`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastmesh import __version__
from fastmesh.control import DEFAULT_TOKEN_FILE


def _listener(value: str) -> tuple[str, str]:
    name, sep, address = value.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError(f"expected NAME=IP:PORT, got {value!r}")
    _address(address)
    return name, address


def _address(value: str) -> str:
    from fastmesh.http1 import split_hostport

    try:
        split_hostport(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return value


def _columns() -> int:
    """The terminal width, as `shutil.get_terminal_size` reads it."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, given the width: by itself it imports `shutil` for it, and with it bz2 and lzma,
    ~0.7 MiB that would stay resident in the proxy process, which never prints help."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=max(_columns() - 2, 20))


class _Parser(argparse.ArgumentParser):
    """argparse's, with `check(args)`: a problem it returns is a usage error (exit 2), as argparse's own are."""

    def __init__(self, *args: Any, check: Callable[[argparse.Namespace], str | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.check = check

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, rest = super().parse_known_args(args, namespace)
        problem = self.check(parsed) if self.check is not None else None
        if problem:
            self.error(problem)
        return parsed, rest


def _proxy_source(args: argparse.Namespace) -> str | None:
    given = [name for name, value in (("--config", args.config), ("--kubernetes", args.kubernetes),
                                      ("--control-plane", args.control_plane)) if value]
    if not given:
        return "one of the arguments --config --kubernetes --control-plane is required"
    if len(given) > 1:
        return f"argument {given[1]}: not allowed with argument {given[0]}"
    return None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fastmesh", description="fastmesh: a service mesh proxy with a compiled data plane.",
        formatter_class=_HelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    proxy = commands.add_parser("proxy", help="run the proxy with a config file (hot reloaded) or a cluster's objects",
                                formatter_class=_HelpFormatter, check=_proxy_source)
    # --control-plane is outside the group only so the usage line still wraps at 60 columns; `_proxy_source`
    # makes the three exclusive and one of them required.
    source = proxy.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="multi-document YAML config (see docs/config.md)")
    source.add_argument("--kubernetes", action="store_true",
                        help="read Services, EndpointSlices, HTTPRoutes and fastmesh.io objects from the API server")
    proxy.add_argument("--control-plane", metavar="URL",
                        help="config and certificates from `fastmesh control` at https://HOST:PORT (the sidecar mode)")
    proxy.add_argument("--ca-bundle", type=Path, metavar="FILE",
                       help="with --control-plane: PEM roots the control plane's certificate must chain to")
    proxy.add_argument("--token-file", metavar="FILE", default=DEFAULT_TOKEN_FILE,
                       help="with --control-plane: the ServiceAccount token it authenticates with"
                            " (default: the pod's, under /var/run/secrets/kubernetes.io/serviceaccount/)")
    proxy.add_argument("--kubeconfig", type=Path, metavar="FILE",
                       help="with --kubernetes: kubeconfig (default $KUBECONFIG, ~/.kube/config, else in-cluster)")
    proxy.add_argument("--kube-context", metavar="NAME", help="with --kubernetes: kubeconfig context (default: current)")
    proxy.add_argument("--kube-namespace", metavar="NAME",
                       help="with --kubernetes: read only this namespace (default: all namespaces)")
    proxy.add_argument("--namespace", metavar="NAME",
                       help="the proxy's own namespace: GAMMA consumer routes of it apply (default $POD_NAMESPACE,"
                            " else --kube-namespace, else the Proxy document's)")
    proxy.add_argument("--no-kube-status", dest="kube_status", action="store_false",
                       help="with --kubernetes: do not write HTTPRoute status (default: write it while RBAC allows)")
    proxy.add_argument("--admin-address", type=_address, metavar="IP:PORT",
                       help="admin API address, overrides spec.admin.address (port 0: any free port)")
    proxy.add_argument("--listener", type=_listener, action="append", default=[],
                       metavar="NAME=IP:PORT",
                       help="override the address of the named listener (repeatable; port 0: any)")

    control = commands.add_parser("control", help="the control plane: watch the cluster once, serve every proxy",
                                  formatter_class=_HelpFormatter)
    control.add_argument("--kubernetes", action="store_true", required=True,
                         help="watch Services, EndpointSlices, HTTPRoutes and fastmesh.io objects (required)")
    control.add_argument("--kubeconfig", type=Path, metavar="FILE",
                         help="kubeconfig (default $KUBECONFIG, ~/.kube/config, else in-cluster); its user needs"
                              " list/watch on the mesh's kinds and create on tokenreviews")
    control.add_argument("--kube-context", metavar="NAME", help="kubeconfig context (default: current)")
    control.add_argument("--kube-namespace", metavar="NAME", help="watch only this namespace (default: all)")
    control.add_argument("--listen", type=_address, default="0.0.0.0:15012", metavar="IP:PORT",
                         help="HTTP/2 over TLS address for the proxies (default 0.0.0.0:15012; port 0: any)")
    control.add_argument("--ca-dir", type=Path, required=True, metavar="DIR",
                         help="CA directory (`fastmesh ca init`): signs the proxies' and the serving certificates")
    control.add_argument("--server-name", action="append", default=[], metavar="NAME",
                         help="DNS name or IP the proxies dial, put in the serving certificate (repeatable;"
                              " default: the --listen IP, localhost and 127.0.0.1)")
    control.add_argument("--admin", type=_address, metavar="IP:PORT",
                         help="admin API (plain HTTP: /ready /live /stats /metrics; port 0: any); default none")
    control.add_argument("--cert-ttl", type=float, default=86400.0, metavar="SECONDS",
                         help="lifetime of the workload certificates it signs (default 86400)")
    control.add_argument("--serving-cert-ttl", type=float, default=30 * 86400.0, metavar="SECONDS",
                         help="lifetime of its own serving certificate, renewed at two thirds of it while running"
                              " (default 2592000: 30 days)")
    control.add_argument("--token-audience", action="append", default=[], metavar="AUDIENCE",
                         help="take only ServiceAccount tokens minted for this audience (TokenReview"
                              " spec.audiences; repeatable; e.g. fastmesh; default: the API server's audiences)")
    control.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                         help="write status without holding the Lease (one replica only; default: elect a leader)")
    control.add_argument("--lease-namespace", metavar="NAME",
                         help="namespace of the leader election Lease (default: --kube-namespace, else default)")
    control.add_argument("--lease-name", default="fastmesh-control", metavar="NAME",
                         help="name of the leader election Lease (default fastmesh-control)")
    control.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                         help="how long a leader that stopped renewing keeps the Lease (default 15)")

    validate = commands.add_parser("validate", help="check config files; exit 1 if any is invalid",
                                   formatter_class=_HelpFormatter)
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")

    from fastmesh import ca_cli

    ca_cli.add_commands(commands, _HelpFormatter)
    from fastmesh import rollout_cli

    rollout_cli.add_commands(commands, _HelpFormatter)
    commands.add_parser("version", help="print the version", formatter_class=_HelpFormatter)
    return top


def validate(files: Sequence[Path]) -> int:
    from fastmesh import config

    status = 0
    for path in files:
        try:
            cfg = config.load_file(path)
            config.compile_snapshot(cfg)
        except config.ConfigError as e:
            print(e, file=sys.stderr)
            status = 1
            continue
        except OSError as e:
            print(f"{path}: {e.strerror or e}", file=sys.stderr)
            status = 1
            continue
        print(f"ok: {path} ({config.document_count(cfg)} documents)")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "version":
        print(f"fastmesh {__version__}")
        return 0
    if args.command == "validate":
        return validate(args.files)
    if args.command == "ca":
        from fastmesh import ca_cli

        return ca_cli.run(args)
    if args.command == "rollout":
        from fastmesh import rollout_cli

        return rollout_cli.run(args)
    if args.command == "control":
        return control(args)
    from fastmesh.runtime import Overrides, run_proxy

    overrides = Overrides(admin_address=args.admin_address, listeners=dict(args.listener))
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or None
    if args.control_plane:
        return proxy_control_plane(args, overrides, namespace)
    if not args.kubernetes:
        return run_proxy(args.config, overrides, namespace=namespace)
    from fastmesh.kube.source import KubeSource

    connection = _kube_connection(args, "proxy")
    if connection is None:
        return 2
    namespace = namespace or args.kube_namespace
    kube = KubeSource(connection, args.kube_namespace, proxy_namespace=namespace, write_status=args.kube_status)
    return run_proxy(None, overrides, kube=kube, namespace=namespace)


def _kube_connection(args: argparse.Namespace, command: str) -> Any:
    from fastmesh.kube.kubeconfig import KubeConfigError, connect

    try:
        return connect(args.kubeconfig, args.kube_context)
    except KubeConfigError as e:
        print(f"fastmesh {command}: {e}", file=sys.stderr)
        return None


def proxy_control_plane(args: argparse.Namespace, overrides: Any, namespace: str | None) -> int:
    import urllib.parse

    from fastmesh.control.client import ControlSource
    from fastmesh.runtime import run_proxy

    url = urllib.parse.urlsplit(args.control_plane)
    if url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
        print(f"fastmesh proxy: --control-plane {args.control_plane}: expected https://HOST:PORT", file=sys.stderr)
        return 2
    if args.ca_bundle is None:
        print("fastmesh proxy: --control-plane needs --ca-bundle (the roots its certificate chains to)",
              file=sys.stderr)
        return 2
    source = ControlSource(args.control_plane.rstrip("/"), str(args.ca_bundle), args.token_file)
    return run_proxy(None, overrides, namespace=namespace, control=source)


def control(args: argparse.Namespace) -> int:
    from fastmesh.control.server import Settings, run_control
    from fastmesh.http1 import split_hostport
    from fastmesh.kube.source import KubeSource

    if args.serving_cert_ttl <= 0 or args.lease_duration < 1:
        print("fastmesh control: --serving-cert-ttl must be > 0 and --lease-duration >= 1", file=sys.stderr)
        return 2
    connection = _kube_connection(args, "control")
    if connection is None:
        return 2
    host = split_hostport(args.listen)[0]
    names = args.server_name or sorted({"localhost", "127.0.0.1", *([host] if host not in ("0.0.0.0", "::") else [])})
    source = KubeSource(connection, args.kube_namespace, write_status=False)
    settings = Settings(args.ca_dir, args.listen, tuple(names), args.cert_ttl, args.admin,
                        serving_ttl_s=args.serving_cert_ttl, token_audiences=tuple(args.token_audience),
                        leader_elect=args.leader_elect,
                        lease_namespace=args.lease_namespace or args.kube_namespace or "default",
                        lease_name=args.lease_name, lease_duration_s=args.lease_duration)
    return run_control(source, settings)


if __name__ == "__main__":
    sys.exit(main())
