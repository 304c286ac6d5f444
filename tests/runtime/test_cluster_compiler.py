"""fastmesh.compiler.ClusterCompiler: a cluster's objects compiled in a long-lived child
(fastmesh.config.cluster_worker) that is sent only what changed; a crashed child is replaced and
given the whole cluster again, so nothing is lost."""

from __future__ import annotations

import copy
import json
import os
import signal
from typing import Any

import pytest
import uvloop

from bench.synthetic_cluster import cluster, endpoint_slice, service
from fastmesh.compiler import ClusterCompiler
from fastmesh.config import ConfigError
from fastmesh.config.worker import compile_content
from fastmesh.kube.source import RESOURCES, documents, render
from fastmesh.overrides import OverrideError, Overrides

SOURCE = "kubernetes https://127.0.0.1:6443"
KINDS = [kind for kind, _, _ in RESOURCES]
Listed = dict[str, list[dict[str, Any]]]


def reference(listed: Listed) -> str:
    header, snapshot = compile_content(render(documents(listed)), SOURCE, Overrides(), cluster=True)
    assert snapshot is not None, header
    return snapshot


def everything(listed: Listed) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, obj) for kind, objs in listed.items() for obj in objs]


def endpoints(snapshot_json: str, backend: str) -> list[str]:
    return next(b["endpoints"] for b in json.loads(snapshot_json)["backends"] if b["name"] == backend)


def test_changes_only_then_a_crash_restarts_the_child_with_everything() -> None:
    listed = cluster(services=30, endpoints=300, routes=3, policies=2)

    async def main() -> None:
        compiler = ClusterCompiler(SOURCE, Overrides(), lambda: everything(listed), kinds=KINDS)
        try:
            first = await compiler.apply(everything(listed), replace_kinds=KINDS)
            assert first is not None and first.snapshot_json == reference(listed)
            assert compiler.started == 1
            # one slice: only it is sent
            changed = endpoint_slice(4, 0, 0, 2)
            listed["EndpointSlice"] = [s for s in listed["EndpointSlice"] if s["metadata"]["name"] != "svc-4-00000"]
            listed["EndpointSlice"].append(changed)
            second = await compiler.apply([("EndpointSlice", copy.deepcopy(changed))])
            assert second is not None and second.snapshot_json == reference(listed)
            assert len(endpoints(second.snapshot_json, "ns4/svc-4:8080")) == 2
            assert await compiler.apply([("EndpointSlice", changed)]) is None  # nothing new
            # the child dies; a change made meanwhile is not lost: the new child gets everything first
            assert compiler._child is not None
            os.kill(compiler._child.pid, signal.SIGKILL)
            await compiler._child.wait()
            listed["Service"].append(service(30))
            listed["EndpointSlice"].append(endpoint_slice(30, 0, 0, 3))
            third = await compiler.apply([("EndpointSlice", listed["EndpointSlice"][-1])])
            assert compiler.started == 2
            assert third is not None and third.snapshot_json == reference(listed)
            assert len(endpoints(third.snapshot_json, "ns10/svc-30:8080")) == 3
        finally:
            await compiler.close()

    uvloop.run(main())


def test_errors_come_back_as_the_proxy_knows_them() -> None:
    async def main() -> None:
        bad = ClusterCompiler(SOURCE, Overrides(listeners={"nope": "127.0.0.1:0"}), list, kinds=KINDS)
        try:
            with pytest.raises(OverrideError, match="no listener named 'nope'"):
                await bad.apply([("Service", service(1))], replace_kinds=KINDS)
        finally:
            await bad.close()
        unknown = ClusterCompiler(SOURCE, Overrides(), list, kinds=KINDS)
        try:  # a crash (here: a kind the compiler does not read) is a ConfigError naming the compiler
            with pytest.raises(ConfigError, match="cluster_worker.*failed"):
                await unknown.apply([("Pod", {"metadata": {"name": "p"}})], replace_kinds=KINDS)
        finally:
            await unknown.close()

    uvloop.run(main())
