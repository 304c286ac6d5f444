#!/usr/bin/env python3
"""Where one proxy's time goes for one control-plane delta (issue 6), at the bench's size (200 Services).

    .venv/bin/python bench/profile_delta.py [--services 200] [--rounds 50] [--cprofile]

Replays what `fastmesh proxy --control-plane` does per delta, each stage timed on its own (median of
`--rounds`): the parent parses the stream's message (`Replica.apply`), takes the changes and sends them
to the compiler child (JSON), the child decodes them and compiles (`IncrementalCompiler.apply`) and
writes its answer, the parent reads it, and the engine applies the snapshot (`apply_json`, when the
engine is built). `--cprofile` prints the top functions of the child's compile. Results in
bench/results/2026-11-26-control-scale.md.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench.synthetic_cluster import changed_slice, cluster  # noqa: E402
from fastmesh.compiler import with_version  # noqa: E402
from fastmesh.config.cluster_worker import serve  # noqa: E402
from fastmesh.config.incremental import IncrementalCompiler  # noqa: E402
from fastmesh.config.worker import write_answer  # noqa: E402
from fastmesh.control.protocol import Replica  # noqa: E402
from fastmesh.kube.source import documents  # noqa: E402
from fastmesh.overrides import Overrides  # noqa: E402

def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _engine() -> Any:
    try:
        from fastmesh import _engine
    except ImportError:
        return None
    return _engine.Engine(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    n = args.services
    listed = cluster(n, n * 10, max(1, n // 10), max(1, n // 20))
    docs = documents(listed, None)
    replica = Replica()
    replica.apply(json.dumps({"type": "hello", "epoch": "e", "namespace": "ns0", "identity": "x"}))
    replica.apply(json.dumps({"type": "full", "epoch": "e", "version": 1, "documents": docs}))
    compiler = IncrementalCompiler("control plane", namespace="ns0",
                                   overrides=Overrides(listeners={"outbound": "127.0.0.1:0"}), freeze_gc=True)
    changes = replica.take_changes()
    compiler.apply(changes.upserts, changes.deletes, changes.replace_kinds)
    engine = _engine()
    rows: list[tuple[str, str, float]] = []
    for what in ("EndpointSlice", "HTTPRoute"):
        times: dict[str, list[float]] = {}
        profile = cProfile.Profile() if args.cprofile else None
        for r in range(args.rounds):
            if what == "EndpointSlice":
                obj = changed_slice(listed, random.Random(r), r + 1)
            else:
                obj = copy.deepcopy(listed["HTTPRoute"][r % len(listed["HTTPRoute"])])
                obj["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50 + r
            doc = documents({what: [obj]}, None)[0]
            line = json.dumps({"type": "delta", "epoch": "e", "from": replica.version, "version": replica.version + 1,
                               "upserts": [doc], "deletes": []}).encode()
            stages = []
            t0 = time.perf_counter()
            replica.apply(line)
            ch = replica.take_changes()
            stages.append(("parent: message decode + take_changes", time.perf_counter()))
            request = json.dumps({"upserts": ch.upserts, "deletes": ch.deletes, "replace_kinds": ch.replace_kinds},
                                 separators=(",", ":")).encode() + b"\n"
            stages.append(("parent: request encode", time.perf_counter()))
            req = json.loads(request)
            stages.append(("child: request decode", time.perf_counter()))
            if profile is not None:
                profile.enable()
            header, snapshot = serve(compiler, req)
            if profile is not None:
                profile.disable()
            stages.append(("child: compile", time.perf_counter()))
            out = io.StringIO()
            write_answer(out, header, snapshot)
            answer = out.getvalue().encode()
            stages.append(("child: answer encode", time.perf_counter()))
            head_line, snap_line, _ = answer.split(b"\n")
            parsed_header = json.loads(head_line)
            snap = str(memoryview(snap_line), "utf-8")
            versioned = with_version(snap, r + 2)
            stages.append(("parent: answer decode", time.perf_counter()))
            if engine is not None:
                engine.apply(versioned)
                stages.append(("engine: apply", time.perf_counter()))
            last = t0
            for name, t in stages:
                times.setdefault(name, []).append(t - last)
                last = t
            times.setdefault("total", []).append(last - t0)
            assert "settings" in parsed_header, parsed_header
        for name, samples in times.items():
            rows.append((what, name, _ms(samples)))
        print(f"{what}: incremental={header.get('incremental')} request {len(request)} B, "
              f"answer {len(answer)} B", file=sys.stderr)
        if profile is not None:
            s = io.StringIO()
            pstats.Stats(profile, stream=s).sort_stats("cumulative").print_stats(25)
            print(s.getvalue(), file=sys.stderr)
    print("| change | stage | median ms |\n|---|---|---|")
    for what, name, ms in rows:
        print(f"| {what} | {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
