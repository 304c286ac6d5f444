#!/usr/bin/env python3
"""The control plane's store at scale (no network, no apiserver): 10,000 Services / 100,000 endpoints in 100
namespaces, one view per namespace with one subscriber each, then one EndpointSlice change at a time.

    .venv/bin/python bench/control_bench.py [--services 10000] [--endpoints-per-slice 10] [--views 100] [--no-freeze]

Prints the time to load the documents, make the views, encode one full state, and apply one change
(a delta per view that sees it, queued for every subscriber): median and max over --changes changes.
The proxies' side (a full compile per update) is measured by config_bench.py (`mesh:N`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fastmesh.control.protocol import canonical, key_of  # noqa: E402
from fastmesh.control.views import Store, Subscriber  # noqa: E402


def service(ns: str, i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": f"s{i}"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}


def endpoint_slice(ns: str, i: int, n: int, generation: int = 0) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": ns, "name": f"s{i}-x", "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "endpoints": [{"addresses": [f"10.{i // 250 % 250}.{i % 250}.{j + generation}"]} for j in range(n)],
            "ports": [{"port": 8080, "protocol": "TCP"}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints-per-slice", type=int, default=10)
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--changes", type=int, default=21)
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="leave the loaded documents to the cyclic GC (the control plane freezes them)")
    args = parser.parse_args()
    n = args.endpoints_per_slice
    docs = [d for i in range(args.services)
            for d in (service(f"ns{i % args.views}", i), endpoint_slice(f"ns{i % args.views}", i, n))]
    store = Store()
    started = time.perf_counter()
    store.apply({key_of(d): canonical(d) for d in docs}, [])
    if args.freeze:
        gc.freeze()  # as the control plane does once the cluster is listed
    print(f"load {len(docs)} documents ({args.services * n} endpoints): {(time.perf_counter() - started) * 1e3:.0f} ms")
    started = time.perf_counter()
    for v in range(args.views):
        store.view(f"ns{v}").subscribers.add(Subscriber())
    print(f"{args.views} views made: {(time.perf_counter() - started) * 1e3:.0f} ms")
    started = time.perf_counter()
    full = store.view("ns0").catch_up(None, None)[0]
    print(f"one full state: {len(full) / 1e6:.1f} MB encoded in {(time.perf_counter() - started) * 1e3:.0f} ms")
    times, views = [], 0
    for k in range(args.changes):
        changed = endpoint_slice("ns5", 5, n, generation=k + 1)
        started = time.perf_counter()
        views = store.apply({key_of(changed): canonical(changed)}, [])
        times.append(time.perf_counter() - started)
    times.sort()
    print(f"one EndpointSlice change -> {views} view deltas queued: median {times[len(times) // 2] * 1e3:.2f} ms,"
          f" max {times[-1] * 1e3:.2f} ms over {args.changes}")


if __name__ == "__main__":
    main()
