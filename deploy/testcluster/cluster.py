"""A real kube-apiserver + etcd on loopback for fastmesh's Kubernetes tests. No controllers run.

    python deploy/testcluster/cluster.py build          # once per Kubernetes version (~20 min cold on 2 cores)
    python deploy/testcluster/cluster.py start [--dir D] # etcd + kube-apiserver, CRDs installed, kubeconfig written
    python deploy/testcluster/cluster.py env   [--dir D] # export KUBECONFIG=... PATH=<kubectl>:...
    python deploy/testcluster/cluster.py stop  [--dir D] # SIGTERM both, wait, no process left
    python deploy/testcluster/cluster.py pin v1.37.2     # regenerate gomod/ from a Kubernetes release

Authentication is by token: a static admin token (group system:masters) in the kubeconfig, and
ServiceAccount tokens from the TokenRequest API (the apiserver signs them with sa.key). Tests create
EndpointSlices themselves, as a kube-controller-manager would.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import toolchain
else:
    from . import toolchain

REPO = Path(__file__).resolve().parents[2]
FASTMESH_CRDS = REPO / "deploy" / "crds"
DEFAULT_DIR = toolchain.CACHE / "testcluster" / "run"
ADMIN_USER = "fastmesh-admin"
ISSUER = "https://kubernetes.default.svc.cluster.local"
log = toolchain.log


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A running test cluster, as recorded in <dir>/cluster.json."""

    dir: str
    server: str
    token: str
    kubeconfig: str
    ca: str
    kubectl: str
    version: str
    pids: dict[str, int] = field(default_factory=dict)
    etcd_url: str = ""
    apiserver_argv: list[str] = field(default_factory=list)
    """How kube-apiserver was started: `restart_apiserver` starts it again the same way."""

    @classmethod
    def load(cls, directory: Path) -> Cluster:
        state = directory / "cluster.json"
        if not state.exists():
            raise ClusterError(f"no test cluster recorded in {directory} (run `cluster.py start`)")
        return cls(**json.loads(state.read_text()))

    def save(self) -> None:
        (Path(self.dir) / "cluster.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    def kubectl_run(self, *args: str, timeout: float = 120.0, input: str | None = None) -> str:
        """Run kubectl against this cluster; raise with its stderr on failure."""
        proc = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True, text=True, timeout=timeout, input=input,
        )
        if proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET path on the apiserver as admin: (status, body)."""
        context = ssl.create_default_context(cafile=self.ca)
        request = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM kube-apiserver then etcd; SIGKILL what has not exited after `timeout`."""
        for name in ("kube-apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid is None or not _pid_alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                log(f"{name} (pid {pid}) did not exit {timeout:.0f} s after SIGTERM: SIGKILL")
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 5.0)
        self.pids = {}
        self.save()


    def stop_apiserver(self, timeout: float = 30.0) -> None:
        """SIGTERM kube-apiserver only (etcd keeps the data); SIGKILL if it has not exited after `timeout`."""
        pid = self.pids.pop("kube-apiserver", None)
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 5.0)
        self.save()

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver again as it was first started (same port, certificates, etcd)."""
        if not self.apiserver_argv:
            raise ClusterError("this cluster did not record how its kube-apiserver was started")
        directory = Path(self.dir)
        self.pids["kube-apiserver"] = _spawn(self.apiserver_argv, directory / "kube-apiserver.log").pid
        self.save()
        _wait("kube-apiserver /readyz", lambda: _readyz(self), self.pids, directory, timeout)

    def etcd(self, method: str, body: dict[str, object]) -> dict[str, object]:
        """A call of etcd's v3 JSON gateway (`kv/range`, `kv/compaction`, ...): the answer's JSON."""
        request = urllib.request.Request(f"{self.etcd_url}/v3/{method}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, object] = json.loads(response.read())
        return answer

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (what a watch from an older
        resourceVersion then gets is 410 Gone); the revision."""
        header = self.etcd("kv/range", {"key": base64.b64encode(b"/").decode()})["header"]
        revision = int(header["revision"])  # type: ignore[index]
        self.etcd("kv/compaction", {"revision": revision, "physical": True})
        return revision


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours has exited; reap it.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fastmesh-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "fastmesh-test", "context": {"cluster": "fastmesh-test", "user": ADMIN_USER}}],
        "current-context": "fastmesh-test",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    path.chmod(0o600)


def _wait(what: str, check: Callable[[], str | None], proc_pids: dict[str, int], logs: Path, timeout: float) -> None:
    """Poll check() (None = ready, else why not) with a progress line every 5 s; fail if a process died."""
    started = time.monotonic()
    last_note = started
    why: str | None = "not checked yet"
    while time.monotonic() - started < timeout:
        for name, pid in proc_pids.items():
            if not _pid_alive(pid):
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited while waiting for {what}; end of {logs / (name + '.log')}:\n{tail}")
        why = check()
        if why is None:
            log(f"{what}: ready after {time.monotonic() - started:.1f} s")
            return
        if time.monotonic() - last_note >= 5:
            log(f"waiting for {what} ({time.monotonic() - started:.0f} s): {why}")
            last_note = time.monotonic()
        time.sleep(0.2)
    raise ClusterError(f"{what} not ready after {timeout:.0f} s: {why}")


def start(directory: Path = DEFAULT_DIR, timeout: float = 180.0, extra_args: Sequence[str] = ()) -> Cluster:
    """Build if needed, start etcd and kube-apiserver on free loopback ports, install the CRDs.
    `extra_args`: more kube-apiserver flags (a bench's own instance: e.g. more requests in flight)."""
    bins = toolchain.build()
    version = toolchain.pinned_kubernetes_version()
    directory = directory.resolve()
    if (directory / "cluster.json").exists():
        old = Cluster.load(directory)
        if any(old.alive().values()):
            raise ClusterError(f"a test cluster already runs from {directory} (pids {old.pids}): stop it first")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("etcd-data", "etcd.log", "kube-apiserver.log"):
        path = directory / stale
        if path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        else:
            path.unlink(missing_ok=True)
    if __package__ in (None, ""):
        import pki  # needs `cryptography` (a fastmesh dependency); building does not
    else:
        from . import pki
    files = pki.write_pki(directory / "pki")
    token = secrets.token_hex(24)
    tokens = directory / "tokens.csv"
    tokens.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    tokens.chmod(0o600)

    etcd_client, etcd_peer, secure = free_port(), free_port(), free_port()
    pids: dict[str, int] = {}
    log(f"starting etcd on 127.0.0.1:{etcd_client}")
    etcd = _spawn(
        [
            str(bins["etcd"]), "--name", "fastmesh-test", "--data-dir", str(directory / "etcd-data"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"fastmesh-test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ],
        directory / "etcd.log",
    )
    pids["etcd"] = etcd.pid
    server = f"https://127.0.0.1:{secure}"
    cluster = Cluster(
        dir=str(directory), server=server, token=token, kubeconfig=str(directory / "kubeconfig"),
        ca=str(files["ca"]), kubectl=str(bins["kubectl"]), version=version, pids=pids,
        etcd_url=f"http://127.0.0.1:{etcd_client}",
    )
    cluster.save()
    try:
        _wait("etcd", lambda: _etcd_health(etcd_client), pids, directory, 30.0)
        log(f"starting kube-apiserver {version} on {server}")
        cluster.apiserver_argv = [
            str(bins["kube-apiserver"]),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={secure}",
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--tls-cert-file={files['cert']}", f"--tls-private-key-file={files['key']}",
            f"--token-auth-file={tokens}", "--authorization-mode=RBAC", "--anonymous-auth=false",
            f"--service-account-issuer={ISSUER}", f"--api-audiences={ISSUER}",
            f"--service-account-key-file={files['sa_pub']}",
            f"--service-account-signing-key-file={files['sa_key']}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",  # 127.0.0.1 may not be the kubernetes Service endpoint
            f"--cert-dir={directory / 'pki'}", "--profiling=false", "--v=1", *extra_args,
        ]
        apiserver = _spawn(cluster.apiserver_argv, directory / "kube-apiserver.log")
        pids["kube-apiserver"] = apiserver.pid
        cluster.save()
        write_kubeconfig(Path(cluster.kubeconfig), server, files["ca"], token)
        _wait("kube-apiserver /readyz", lambda: _readyz(cluster), pids, directory, timeout)
        install_crds(cluster)
    except BaseException:
        cluster.stop()
        raise
    log(f"test cluster up: KUBECONFIG={cluster.kubeconfig}")
    return cluster


def _etcd_health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as err:
        return str(err)
    return None if body.get("health") == "true" else f"health {body}"


def _readyz(cluster: Cluster) -> str | None:
    try:
        status, body = cluster.get("/readyz?verbose", timeout=3)
    except OSError as err:
        return str(getattr(err, "reason", err))
    if status == 200:
        return None
    failing = [line.strip() for line in body.splitlines() if line.startswith("[-]")]
    return f"HTTP {status}: " + ", ".join(failing[:4])


def install_crds(cluster: Cluster) -> None:
    """Server-side apply the Gateway API standard CRDs and fastmesh's, then wait until they are Established."""
    manifests = [str(p) for p in toolchain.gateway_api_crds("standard")]
    manifests += [str(p) for p in sorted(FASTMESH_CRDS.glob("*.yaml"))]
    log(f"installing {len(manifests)} CRDs (Gateway API {toolchain.GATEWAY_API_VERSION} standard, fastmesh)")
    args = ["apply", "--server-side", "--field-manager=fastmesh-testcluster"]
    for manifest in manifests:
        args += ["-f", manifest]
    cluster.kubectl_run(*args)
    cluster.kubectl_run("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def stop(directory: Path = DEFAULT_DIR) -> None:
    cluster = Cluster.load(directory.resolve())
    cluster.stop()
    log("test cluster stopped")


def env_lines(directory: Path = DEFAULT_DIR) -> str:
    cluster = Cluster.load(directory.resolve())
    return f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={Path(cluster.kubectl).parent}:$PATH\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build kube-apiserver, etcd and kubectl (cached by version)")
    for name in ("start", "stop", "env", "status"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    pin_cmd = sub.add_parser("pin", help="regenerate gomod/ for a Kubernetes release")
    pin_cmd.add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name, path in toolchain.build().items():
                print(f"{name}\t{path}")
        elif args.command == "pin":
            toolchain.pin(args.version)
        elif args.command == "start":
            cluster = start(args.dir)
            print(env_lines(args.dir), end="")
            print(f"# stop with: python {Path(__file__).relative_to(REPO)} stop --dir {cluster.dir}")
        elif args.command == "stop":
            stop(args.dir)
        elif args.command == "env":
            print(env_lines(args.dir), end="")
        elif args.command == "status":
            cluster = Cluster.load(args.dir.resolve())
            print(json.dumps({"server": cluster.server, "alive": cluster.alive()}))
            return 0 if cluster.pids and all(cluster.alive().values()) else 1
    except (ClusterError, toolchain.BuildError) as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
