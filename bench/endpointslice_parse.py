#!/usr/bin/env python3
"""Parse alone: the EndpointSlice documents of the bench cluster into models, once, in this fresh process.

    .venv/bin/python bench/endpointslice_parse.py ext       # ext/endpointslice.pyx
    .venv/bin/python bench/endpointslice_parse.py python    # EndpointSlice.model_validate (pydantic)

The GC is paused as the compile pauses it (fastmesh.config.gcpause); prints the CPU time and the
memory the models took (resident set growth). One path per process: the heap starts the same.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

from bench.synthetic_cluster import cluster  # noqa: E402
from fastmesh.config import fastpath  # noqa: E402
from fastmesh.config.model import EndpointSlice  # noqa: E402
from fastmesh.kube.source import project  # noqa: E402


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "ext"
    parse = fastpath.AVAILABLE.get("parse_endpoint_slice") if which == "ext" else EndpointSlice.model_validate
    if parse is None:
        print("ext/endpointslice.pyx is not built (make ext)", file=sys.stderr)
        return 1
    docs = [project("EndpointSlice", "discovery.k8s.io/v1", o) for o in cluster(10_000, 100_000)["EndpointSlice"]]
    gc.collect()
    gc.freeze()
    gc.disable()
    before, t0 = _rss_mb(), time.process_time()
    models = [parse(doc) for doc in docs]
    cpu = time.process_time() - t0
    assert all(m is not None for m in models)
    print(f"{which}: {len(docs):,} EndpointSlices in {cpu:.3f} s CPU, +{_rss_mb() - before:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
