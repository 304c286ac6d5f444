"""The `fastmesh` command line: `proxy`, `validate`, `ca`, `rollout`, `version`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fastmesh import __version__


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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="fastmesh", description="fastmesh: a service mesh proxy with a compiled data plane.",
        formatter_class=_HelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    proxy = commands.add_parser("proxy", help="run the proxy with a config file (hot reloaded) or a cluster's objects",
                                formatter_class=_HelpFormatter)
    source = proxy.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="multi-document YAML config (see docs/config.md)")
    source.add_argument("--kubernetes", action="store_true",
                        help="read Services, EndpointSlices, HTTPRoutes and fastmesh.io objects from the API server")
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
    from fastmesh.runtime import Overrides, run_proxy

    overrides = Overrides(admin_address=args.admin_address, listeners=dict(args.listener))
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or None
    if not args.kubernetes:
        return run_proxy(args.config, overrides, namespace=namespace)
    from fastmesh.kube.kubeconfig import KubeConfigError, connect
    from fastmesh.kube.source import KubeSource

    try:
        connection = connect(args.kubeconfig, args.kube_context)
    except KubeConfigError as e:
        print(f"fastmesh proxy: {e}", file=sys.stderr)
        return 2
    namespace = namespace or args.kube_namespace
    kube = KubeSource(connection, args.kube_namespace, proxy_namespace=namespace, write_status=args.kube_status)
    return run_proxy(None, overrides, kube=kube, namespace=namespace)


if __name__ == "__main__":
    sys.exit(main())
