"""`python -m fastmesh.config.cluster_worker`: the incremental compiler of a cluster's objects, in a
long-lived child of `fastmesh proxy --kubernetes` (fastmesh.compiler.ClusterCompiler).

The proxy process never imports pydantic and the models (see fastmesh.config.worker); this child keeps
them, and the compiled state, for the life of the proxy, so a change costs what it touches
(fastmesh.config.incremental) instead of a full load in a new process.

    python -m fastmesh.config.cluster_worker --source LABEL [--listener NAME=ADDR ...] [--namespace NS]
                                             [--proxy-namespace NS]

stdin: one JSON line per request:
    {"upserts": [[kind, object], ...], "deletes": [[kind, namespace, name], ...], "replace_kinds": [kind, ...]}
stdout, per request: one JSON header line as fastmesh.config.worker writes it with --cluster
({"settings": ..., "objects": [...]}, {"problems": [...]} or {"override_error": ...}), with "version" and
"incremental" added on success, then the snapshot line; or only {"unchanged": true} when the request
changed nothing the compiler reads. The child exits when stdin closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

from fastmesh.config.errors import ConfigError
from fastmesh.config.worker import _listener, write_answer
from fastmesh.overrides import OverrideError, Overrides


def serve(compiler: Any, request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(header, snapshot JSON or None) of one request."""
    try:
        result = compiler.apply(
            [(kind, obj) for kind, obj in request.get("upserts", ())],
            [(kind, ns, name) for kind, ns, name in request.get("deletes", ())],
            request.get("replace_kinds", ()),
        )
    except ConfigError as e:
        return {"problems": [dataclasses.asdict(p) for p in e.problems]}, None
    except OverrideError as e:
        return {"override_error": str(e)}, None
    if not result.changed:
        return {"unchanged": True}, None
    return {**result.header, "version": result.version, "incremental": result.incremental}, result.snapshot_json


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None, stdout: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmesh.config.cluster_worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the cluster's name in messages")
    parser.add_argument("--listener", type=_listener, action="append", default=[], metavar="NAME=IP:PORT")
    parser.add_argument("--namespace", help="the proxy's own namespace (GAMMA consumer routes)")
    parser.add_argument("--proxy-namespace", help="only the Proxy object of this namespace counts")
    args = parser.parse_args(argv)
    from fastmesh.config.incremental import IncrementalCompiler

    compiler = IncrementalCompiler(
        args.source, namespace=args.namespace, proxy_namespace=args.proxy_namespace,
        overrides=Overrides(listeners=dict(args.listener)), freeze_gc=True,
    )
    source, out = stdin or sys.stdin.buffer, stdout or sys.stdout
    for line in source:
        if not line.strip():
            continue
        write_answer(out, *serve(compiler, json.loads(line)))
    return 0


if __name__ == "__main__":
    status = main()
    os._exit(status)  # skip freeing every object of a large cluster one by one
