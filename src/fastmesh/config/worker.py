"""`python -m fastmesh.config.worker`: load and compile one config in a short-lived process.

The proxy process runs this for every load and reload (fastmesh.compiler), so it never imports
pydantic, PyYAML and the models: they would stay resident for the life of the proxy (~13 MiB),
when they are only needed for the second a config takes to check.

    python -m fastmesh.config.worker --source FILE [--listener NAME=ADDR ...] [--cluster] [--namespace NS] < FILE

stdin is the file's content (bytes). stdout is one JSON header line, then, on success only, the
snapshot as compact JSON (without "version", listener overrides applied) on the second line:
    {"settings": {"admin_address": "127.0.0.1:15000", "worker_threads": 1, "drain_timeout_s": 10.0,
                  "admin_token_file": "/abs/token",                      # only when configured
                  "identity": {"spiffe_id": ..., "ca_directory": "/abs/ca", "cert_ttl_s": 86400.0}},
     "rollouts": [{"name": "default/reviews", "route": "default/reviews/rule/0", "stable": ..., "canary": ...,
                   "steps": [5, 100], "interval_s": 60.0, "gates": {...}}]}     # only with Rollouts
    {"problems": [{"source": ..., "message": ..., "document": 3, "label": ..., "path": ..., ...}]}
    {"override_error": "--listener x=127.0.0.1:0: the config has no listener named 'x' (...)"}
With --cluster the settings header also has "objects": what was left out or has unresolved backendRefs
    [{"kind": "HTTPRoute", "namespace": ..., "name": ..., "left_out": true,
      "problems": [{"path": "spec.rules[0]...", "message": ..., "reason": "UnsupportedValue"}]}]
The exit status is 0 in all three cases; anything else is a crash (its traceback on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from fastmesh.config.errors import ConfigError, Problem
from fastmesh.overrides import OverrideError, Overrides

if TYPE_CHECKING:
    from fastmesh.config.mesh import MeshConfig


def _listener(value: str) -> tuple[str, str]:
    name, sep, address = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=IP:PORT, got {value!r}")
    return name, address


def _beside(source: str, path: str) -> str:
    """`path` made absolute, a relative one taken from the config file's directory."""
    return os.path.abspath(os.path.join(os.path.dirname(source), os.path.expanduser(path)))


def proxy_settings(cfg: MeshConfig, source: str, cluster: bool = False) -> dict[str, Any]:
    """The header's "settings": what the proxy process reads from the Proxy document."""
    proxy = cfg.proxy
    if cluster:  # paths in a Proxy object of a cluster are relative to the proxy's working directory
        source = os.path.join(os.getcwd(), "cluster")
    settings: dict[str, Any] = {
        "admin_address": proxy.admin_address,
        "worker_threads": proxy.worker_threads,
        "drain_timeout_s": proxy.drain_timeout_s,
    }
    if proxy.admin.token_file is not None:
        settings["admin_token_file"] = _beside(source, proxy.admin.token_file)
    if proxy.identity is not None:
        from fastmesh.config.model.types import parse_duration

        settings["identity"] = {
            "spiffe_id": proxy.identity.spiffe_id,
            "ca_directory": _beside(source, proxy.identity.ca.directory),
            "cert_ttl_s": parse_duration(proxy.identity.cert_ttl),
        }
    return settings


def compile_content(
    content: bytes, source: str, overrides: Overrides, cluster: bool = False, namespace: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """(header, snapshot JSON or None), as written to stdout.

    `cluster`: objects read from a cluster, each checked on its own (fastmesh.config.cluster): an
    invalid one is left out and reported in the header's "objects" instead of refusing the config."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        problem = Problem(source, f"cannot read: not UTF-8 text ({e.reason} at byte {e.start})")
        return {"problems": [dataclasses.asdict(problem)]}, None
    from fastmesh.config import compile_snapshot, load_text
    from fastmesh.config.model import Rollout
    from fastmesh.config.snapshot.rollouts import rollout_plans

    reports: list[dict[str, Any]] = []
    try:
        if cluster:
            from fastmesh.config.cluster import load_cluster_text

            cfg, found = load_cluster_text(text, source, namespace)
            reports = [r.to_json() for r in found]
        else:
            cfg = load_text(text, source, namespace=namespace)
        snapshot = compile_snapshot(cfg)
        overrides.apply(snapshot)
    except ConfigError as e:
        return {"problems": [dataclasses.asdict(p) for p in e.problems]}, None
    except OverrideError as e:
        return {"override_error": str(e)}, None
    settings = proxy_settings(cfg, source, cluster)
    header: dict[str, Any] = {"settings": settings}
    if cluster:
        header["objects"] = reports
    if any(True for _ in cfg.objects(Rollout)):
        header["rollouts"] = rollout_plans(cfg)
    return header, json.dumps(snapshot, separators=(",", ":"))


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None, stdout: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmesh.config.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the file name used in messages")
    parser.add_argument("--listener", type=_listener, action="append", default=[], metavar="NAME=IP:PORT")
    parser.add_argument("--cluster", action="store_true",
                        help="objects read from a cluster: an invalid one is left out (reported in \"objects\")")
    parser.add_argument("--namespace", help="the proxy's own namespace (GAMMA consumer routes)")
    args = parser.parse_args(argv)
    content = (stdin or sys.stdin.buffer).read()
    overrides = Overrides(listeners=dict(args.listener))
    header, snapshot = compile_content(content, args.source, overrides, args.cluster, args.namespace)
    write_answer(stdout or sys.stdout, header, snapshot)
    return 0


def write_answer(out: TextIO, header: dict[str, Any], snapshot: str | None) -> None:
    """The header line, then the snapshot line when there is one (the protocol above)."""
    out.write(json.dumps(header) + "\n")
    if snapshot is not None:
        out.write(snapshot + "\n")
    out.flush()


if __name__ == "__main__":
    status = main()
    os._exit(status)  # output flushed: skip freeing every object of a large config one by one
