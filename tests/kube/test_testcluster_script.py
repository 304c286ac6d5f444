"""deploy/testcluster/cluster.py as a person runs it: start, env, status, stop (no process left), and
the wrapper Go module pinned to what its Kubernetes release says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from deploy.testcluster import cluster as testcluster
from deploy.testcluster import toolchain

SCRIPT = Path(testcluster.__file__)


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_start_env_status_stop_leave_no_process(tmp_path: Path, kube_cluster: testcluster.Cluster) -> None:
    # kube_cluster: the binaries are built (a second cluster beside the session's, on other ports)
    state = tmp_path / "tc"
    started = _run("start", "--dir", str(state))
    assert started.returncode == 0, started.stderr
    assert "kube-apiserver /readyz: ready after" in started.stderr  # progress is shown
    assert f"export KUBECONFIG={state}/kubeconfig" in started.stdout
    running = testcluster.Cluster.load(state)
    try:
        assert running.server != kube_cluster.server
        assert _run("status", "--dir", str(state)).returncode == 0
        assert _run("env", "--dir", str(state)).stdout == started.stdout.split("# stop")[0]
        again = _run("start", "--dir", str(state))
        assert again.returncode == 1 and "already runs" in again.stderr
        crds = running.kubectl_run("get", "crd", "-o", "json")
        assert "trafficpolicies.fastmesh.io" in {c["metadata"]["name"] for c in json.loads(crds)["items"]}
    finally:
        stopped = _run("stop", "--dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    for name, pid in running.pids.items():
        assert not testcluster._pid_alive(pid), f"{name} (pid {pid}) still running"
    status = _run("status", "--dir", str(state))
    assert status.returncode == 1 and json.loads(status.stdout)["alive"] == {}


def test_gomod_replaces_each_staging_module_of_the_release() -> None:
    version = toolchain.pinned_kubernetes_version()
    release = Path(toolchain.download("k8s.io/kubernetes", version, toolchain.CACHE)["GoMod"]).read_text()
    wanted = toolchain.staging_replacements(release, "v0." + version.split(".", 1)[1])
    gomod = (toolchain.GOMOD_DIR / "go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", gomod, re.M)
    assert sorted(replaced) == sorted(wanted)
    assert f"go.etcd.io/etcd/server/v3 {toolchain.pinned_require(release, 'go.etcd.io/etcd/server/v3')}" in gomod


def test_binaries_report_the_release_and_are_rebuilt_when_their_inputs_change(kube_cluster: testcluster.Cluster) -> None:
    version = toolchain.pinned_kubernetes_version()
    out = subprocess.run([kube_cluster.kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
    assert json.loads(out.stdout)["clientVersion"]["gitVersion"] == version
    assert toolchain.built(version)
    key = toolchain.bin_dir(version) / ".build-key"
    assert key.read_text() == toolchain.build_key(version)
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in toolchain.ldflags(version)
