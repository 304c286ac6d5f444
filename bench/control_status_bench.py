#!/usr/bin/env python3
"""The control plane's status check at scale (no network, no apiserver): the synthetic cluster
(bench/synthetic_cluster.py: 10,000 Services, 100,000 endpoints, 1,000 HTTPRoutes, 500 TrafficPolicies)
checked as `fastmesh.control.status.Checker` does before writing status; the first run parses every
document, the next ones only check.

    .venv/bin/python bench/control_status_bench.py [--services 10000] [--endpoints 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_cluster import cluster  # noqa: E402

from fastmesh.control.protocol import canonical  # noqa: E402
from fastmesh.control.status import Checker  # noqa: E402
from fastmesh.kube.source import RESOURCES, project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    versions = {kind: api_version for kind, api_version, _ in RESOURCES}
    texts = {}
    for kind, objects in cluster(args.services, args.endpoints).items():
        for obj in objects:
            doc = project(kind, versions[kind], obj)
            if doc is not None:
                texts[(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = canonical(doc)
    print(f"{len(texts)} documents")
    checker = Checker("bench")
    for run in range(args.runs):
        started = time.perf_counter()
        _, variants = checker.reports(texts)
        print(f"check {run + 1}{' (parses every document)' if run == 0 else ''}: "
              f"{time.perf_counter() - started:.2f} s, {sum(len(r) for r in variants.values())} reports")


if __name__ == "__main__":
    main()
