"""`fastmesh ca ...`: the built-in CA on the command line.

The argument definitions live here without importing the CA (and `cryptography`): the proxy
command builds the same parser and must not load them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmesh.ca import CA


def _ttl(value: str) -> float:
    from fastmesh.config.model.types import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 24h, 90m or 1h30m, got {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value!r}")
    return seconds


def add_commands(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
                 formatter: type[argparse.HelpFormatter]) -> None:
    ca = commands.add_parser("ca", help="the built-in certificate authority (mTLS identities)",
                             formatter_class=formatter)
    sub = ca.add_subparsers(dest="ca_command", required=True, metavar="CA_COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, formatter_class=formatter)
        p.add_argument("--dir", required=True, type=Path, metavar="DIR", help="the CA directory")
        return p

    init = command("init", "create a root and an intermediate in DIR (refuses to overwrite)")
    init.add_argument("--trust-domain", required=True, metavar="TD", help="e.g. cluster.local")
    issue = command("issue", "issue a workload certificate: PREFIX.pem (chain), PREFIX-key.pem")
    issue.add_argument("--identity", required=True, metavar="SPIFFE_ID",
                       help="spiffe://<trust domain>/ns/<namespace>/sa/<service account>")
    issue.add_argument("--ttl", type=_ttl, default=86400.0, metavar="DURATION",
                       help="validity (default 24h)")
    issue.add_argument("--out", required=True, type=Path, metavar="PREFIX",
                       help="writes PREFIX.pem and PREFIX-key.pem (mode 0600)")
    command("rotate-root", "new root and intermediate; the bundle trusts old and new roots")
    command("drop-old-roots", "trust only the current root (end of a rotation)")
    command("show", "print the trust domain, the roots in the bundle and the intermediate")


def run(args: argparse.Namespace) -> int:
    from fastmesh.ca import CAError

    actions: dict[str, Callable[[argparse.Namespace], None]] = {
        "init": _init, "issue": _issue, "rotate-root": _rotate_root,
        "drop-old-roots": _drop_old_roots, "show": _show,
    }
    try:
        actions[args.ca_command](args)
    except CAError as e:
        print(f"fastmesh ca {args.ca_command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"fastmesh ca {args.ca_command}: error: {e.filename}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    return 0


def _init(args: argparse.Namespace) -> None:
    from fastmesh.ca import CA

    ca = CA.init(args.dir, args.trust_domain)
    print(f"created CA for trust domain {ca.trust_domain} in {args.dir}")
    _describe(ca)


def _issue(args: argparse.Namespace) -> None:
    from datetime import timedelta

    from fastmesh.ca import CA
    from fastmesh.ca.files import CERT_MODE, KEY_MODE, write_atomic

    issued = CA.load(args.dir).issue(args.identity, ttl=timedelta(seconds=args.ttl))
    prefix: Path = args.out
    chain, key = Path(f"{prefix}.pem"), Path(f"{prefix}-key.pem")
    write_atomic(key, issued.key_pem.encode(), KEY_MODE)
    write_atomic(chain, issued.cert_chain_pem.encode(), CERT_MODE)
    print(f"issued {issued.spiffe_id}, valid {issued.not_before:%Y-%m-%dT%H:%M:%SZ} to "
          f"{issued.not_after:%Y-%m-%dT%H:%M:%SZ}: {chain}, {key}")


def _rotate_root(args: argparse.Namespace) -> None:
    from fastmesh.ca import CA

    ca = CA.load(args.dir)
    ca.rotate_root()
    print(f"new root and intermediate in {args.dir}; the bundle trusts {len(ca.bundle)} roots "
          "until `fastmesh ca drop-old-roots`")
    _describe(ca)


def _drop_old_roots(args: argparse.Namespace) -> None:
    from fastmesh.ca import CA

    ca = CA.load(args.dir)
    dropped = ca.drop_old_roots()
    print(f"dropped {dropped} old root(s); the bundle trusts the current root only")


def _show(args: argparse.Namespace) -> None:
    from fastmesh.ca import CA

    _describe(CA.load(args.dir))


def _describe(ca: CA) -> None:
    from cryptography.hazmat.primitives import hashes

    def line(cert) -> str:  # type: ignore[no-untyped-def]
        return (f"{cert.subject.rfc4514_string()}  sha256:{cert.fingerprint(hashes.SHA256()).hex()}"
                f"  not after {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")

    print(f"trust domain: {ca.trust_domain}")
    print(f"root:         {line(ca.root)}")
    print(f"intermediate: {line(ca.intermediate)}")
    for cert in ca.bundle:
        mark = "current" if cert == ca.root else "old"
        print(f"bundle ({mark}): {line(cert)}")
