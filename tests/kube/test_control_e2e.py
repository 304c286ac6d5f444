"""bench/control_e2e.py's path, small, against the test cluster: the synthetic cluster created with concurrent
HTTP/2 POSTs, a real `fastmesh control`, real `fastmesh proxy --control-plane` processes, EndpointSlice PATCHes
followed through every stage. The chain is checked, not its speed."""

from __future__ import annotations

import io
import uuid

from kubernetes import client

from bench import control_e2e
from deploy.testcluster import cluster as testcluster


def test_the_e2e_bench_follows_each_endpointslice_change_from_the_apiserver_to_every_proxys_engine(
        kube_cluster: testcluster.Cluster, kube_api: client.ApiClient) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}-"
    args = control_e2e.parse_args([
        "--services", "300", "--proxies", "2", "--views", "2", "--changes", "3", "--pause", "0",
        "--cluster", kube_cluster.dir, "--namespace-prefix", prefix, "--create-timeout", "240", "--timeout", "420",
        "--min-free-mb", "500"])
    progress = io.StringIO()
    try:
        m = control_e2e.run(args, progress=progress)
    finally:
        core = client.CoreV1Api(kube_api)
        for ns in core.list_namespace().items:
            if ns.metadata.name.startswith(prefix):
                core.delete_namespace(ns.metadata.name)

    assert m["create"]["objects"] == m["objects"] + 20  # every object and its 20 namespaces
    assert "created 668 objects" in progress.getvalue()
    assert m["control"]["documents"] >= m["objects"]  # the cluster's other tests' objects may be there too
    assert m["proxies"]["n"] == 2 and m["proxies"]["views"] >= 2 and m["proxies"]["reload_failed"] == 0
    assert len(m["rows"]) == 3
    for row in m["rows"]:
        assert row["subscribers"] == 2  # the change was written to both proxies' streams
        # One clock: the PATCH, then the control plane's watch event, its deltas queued and written, then each
        # proxy received it and its engine applied it.
        assert row["called"] <= row["watched_at"] <= row["queued_at"] <= row["sent_at"]
        for received, applied in zip(row["received"], row["applied"], strict=True):
            assert row["queued_at"] <= received <= applied
    text = control_e2e.report(m, ["--services", "300"])
    assert "watch event → written to all 2 proxies' streams" in text and "objects/s" in text
