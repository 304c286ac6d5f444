"""Authorization end to end: the real `fastmesh proxy` process with AuthorizationPolicy documents,
real sockets, a real upstream that counts the requests it received (and a raw one that records every
byte), plaintext and mTLS callers (certificates from `fastmesh.ca`, Python's ssl/OpenSSL as client).

One proxy serves the whole matrix: each case reloads the config with its policies, then sends its
requests; an allowed request must reach the upstream (+1 request there), a denied one must get the
403 body of the contract and leave the upstream untouched.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fastmesh.ca import CA
from tests.engine.mtls import client_ssl_context, write_pems
from tests.harness import Proxy, Upstream, mesh_config, raw_http1, read_head, read_exact, service

TD = "td.test"
NO_MATCH = "RBAC: access denied: no ALLOW policy matched\n"


def denied_by(policy: str) -> str:
    return f"RBAC: access denied: policy default/{policy}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Recorder:
    """A raw TCP upstream that records every byte it receives and answers each request head
    (and its content-length body) with `200 ok`, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        buffered = bytearray()
        with conn:
            conn.settimeout(10)
            try:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self._record(data)
                    buffered += data
                head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                while len(rest) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self._record(data)
                    rest += data
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            except OSError:
                return

    def _record(self, data: bytes) -> None:
        with self.lock:
            self.received += data

    def seen(self) -> tuple[int, int]:
        with self.lock:
            return self.connections, len(self.received)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Mesh:
    proxy: Proxy
    upstream: Upstream
    recorder: Recorder
    ca: CA
    pem_dir: Path
    ports: dict[str, int]
    applied: str = ""

    def apply(self, policies: list[dict[str, Any]], default_deny: bool = False) -> None:
        """Reloads the proxy with `policies` (an unchanged file is not reloaded by the proxy)."""
        text = config(self.ca.directory, self.upstream.address, self.recorder.address, self.ports, policies, default_deny)
        if text != self.applied:
            self.proxy.reload(text)
            self.applied = text

    def requests_seen(self) -> int:
        count: int = self.upstream.stats()["requests"]
        return count


def config(
    ca_dir: Path,
    upstream: str,
    recorder: str,
    ports: dict[str, int],
    policies: list[dict[str, Any]],
    default_deny: bool,
) -> str:
    proxy = {
        "identity": {"trustDomain": TD, "namespace": "default", "serviceAccount": "web", "ca": {"directory": str(ca_dir)}},
        "listeners": [
            {"name": "outbound", "port": 0},
            {"name": "in1", "port": ports["in1"], "inboundService": "web", "mtls": "PERMISSIVE"},
            {"name": "in2", "port": ports["in2"], "inboundService": "web"},
        ],
        "authorization": {"defaultDeny": default_deny},
    }
    return mesh_config(services=[service("web", [upstream]), service("raw", [recorder])], proxy=proxy, extra=policies)


def policy(name: str, action: str = "ALLOW", rules: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, **spec}
    if rules is not None:
        body["rules"] = rules
    return {"apiVersion": "fastmesh.io/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": name}, "spec": body}


def to(**operation: Any) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def source(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("authz")
    ca = CA.init(tmp / "ca", TD)
    upstream = Upstream.start("web", log_dir=tmp)
    recorder = Recorder()
    ports = {"in1": free_port(), "in2": free_port()}
    text = config(ca.directory, upstream.address, recorder.address, ports, [], False)
    proxy = Proxy.start(text, tmp, listeners=("outbound",))
    try:
        yield Mesh(proxy, upstream, recorder, ca, tmp / "pem", ports, applied=text)
    finally:
        proxy.terminate()
        upstream.stop()
        recorder.close()


@dataclass
class Req:
    expect: str | int  # 200, or the 403 body
    path: str = "/"
    method: str = "GET"
    host: str = "web"
    listener: str = "in1"
    caller: str | None = None  # SPIFFE ID of an mTLS client certificate; None: plaintext
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    id: str
    policies: list[dict[str, Any]]
    requests: list[Req]
    default_deny: bool = False


def port_policy(mesh: Mesh, which: str, negate: bool) -> dict[str, Any]:
    key = "notPorts" if negate else "ports"
    return policy("by-port", rules=[to(**{key: [str(mesh.ports[which])]})])


CASES = [
    Case("no policy allows everything", [], [Req(200), Req(200, method="DELETE", path="/admin")]),
    Case("default deny without ALLOW policies denies", [], [Req(NO_MATCH), Req(NO_MATCH, listener="in2")], default_deny=True),
    Case("default deny with a matching ALLOW policy", [policy("get", rules=[to(methods=["GET"])])],
         [Req(200), Req(NO_MATCH, method="POST")], default_deny=True),
    Case("method allowed and denied", [policy("reads", rules=[to(methods=["GET", "HEAD"])])],
         [Req(200), Req(200, method="HEAD"), Req(NO_MATCH, method="DELETE")]),
    Case("exact path", [policy("exact", rules=[to(paths=["/exact"])])],
         [Req(200, path="/exact"), Req(200, path="/exact?q=1"), Req(NO_MATCH, path="/exact/more"), Req(NO_MATCH, path="/Exact")]),
    Case("prefix path wildcard", [policy("prefix", rules=[to(paths=["/api/*"])])],
         [Req(200, path="/api/users/1"), Req(NO_MATCH, path="/apix"), Req(NO_MATCH, path="/")]),
    Case("suffix path wildcard", [policy("suffix", rules=[to(paths=["*.json"])])],
         [Req(200, path="/data/x.json"), Req(NO_MATCH, path="/data/x.jsonp")]),
    Case("host exact and wildcard, case-insensitive, port ignored",
         [policy("hosts", rules=[to(hosts=["web.default", "*.svc.cluster.local"])])],
         [Req(200, host="web.default"), Req(200, host="WEB.default.svc.cluster.local:8080"), Req(NO_MATCH, host="web")]),
    Case("notHosts", [policy("not-hosts", rules=[to(notHosts=["web"])])],
         [Req(NO_MATCH, host="web"), Req(200, host="web.default")]),
    Case("notMethods and notPaths", [policy("negations", rules=[to(notMethods=["DELETE"], notPaths=["/admin/*"])])],
         [Req(200, path="/x"), Req(NO_MATCH, method="DELETE", path="/x"), Req(NO_MATCH, path="/admin/users")]),
    Case("DENY overrides ALLOW", [policy("allow-all", rules=[{}]), policy("deny-admin", "DENY", [to(paths=["/admin/*"])])],
         [Req(denied_by("deny-admin"), path="/admin/x"), Req(200, path="/public")]),
    Case("AUDIT does not change decisions", [policy("audit-all", "AUDIT", [{}]), policy("deny-delete", "DENY", [to(methods=["DELETE"])])],
         [Req(200), Req(denied_by("deny-delete"), method="DELETE")]),
    Case("ALLOW without rules allows nothing", [policy("nothing")], [Req(NO_MATCH), Req(NO_MATCH, path="/x")]),
    Case("DENY without rules denies nothing", [policy("deny-nothing", "DENY", [])], [Req(200)]),
    Case("policy targeting another Service does not apply",
         [policy("for-raw", "DENY", [{}], targetRefs=[{"kind": "Service", "name": "raw"}])], [Req(200)]),
    Case("policy targeting this Service applies",
         [policy("for-web", "DENY", [to(paths=["/x"])], targetRefs=[{"kind": "Service", "name": "web"}])],
         [Req(denied_by("for-web"), path="/x"), Req(200, path="/y")]),
    # === callers: mTLS principals and namespaces (in1 is PERMISSIVE: mTLS and plaintext on one port) ===
    Case("principal in Istio form allows that caller only",
         [policy("from-client", rules=[source(principals=[f"{TD}/ns/tools/sa/client"])])],
         [Req(200, caller=f"spiffe://{TD}/ns/tools/sa/client"), Req(NO_MATCH, caller=f"spiffe://{TD}/ns/tools/sa/other"),
          Req(NO_MATCH)]),
    Case("principal as spiffe URI with a prefix wildcard",
         [policy("from-tools", rules=[source(principals=[f"spiffe://{TD}/ns/tools/*"])])],
         [Req(200, caller=f"spiffe://{TD}/ns/tools/sa/any"), Req(NO_MATCH, caller=f"spiffe://{TD}/ns/prod/sa/any")]),
    Case("principals * is any authenticated caller", [policy("any-mtls", rules=[source(principals=["*"])])],
         [Req(200, caller=f"spiffe://{TD}/ns/x/sa/y"), Req(NO_MATCH)]),
    Case("notPrincipals * denies plaintext (require mTLS)", [policy("require-mtls", "DENY", [source(notPrincipals=["*"])])],
         [Req(denied_by("require-mtls")), Req(200, caller=f"spiffe://{TD}/ns/x/sa/y")]),
    Case("namespaces and notNamespaces from the SPIFFE ID",
         [policy("namespaces", rules=[source(namespaces=["prod", "team-*"], notNamespaces=["team-x"])])],
         [Req(200, caller=f"spiffe://{TD}/ns/prod/sa/a"), Req(200, caller=f"spiffe://{TD}/ns/team-a/sa/a"),
          Req(NO_MATCH, caller=f"spiffe://{TD}/ns/team-x/sa/a"), Req(NO_MATCH, caller=f"spiffe://{TD}/ns/dev/sa/a"),
          Req(NO_MATCH)]),
    Case("source and operation must both match",
         [policy("prod-reads", rules=[{**source(namespaces=["prod"]), **to(methods=["GET"])}])],
         [Req(200, caller=f"spiffe://{TD}/ns/prod/sa/a"), Req(NO_MATCH, method="POST", caller=f"spiffe://{TD}/ns/prod/sa/a"),
          Req(NO_MATCH)]),
]


def send(mesh: Mesh, req: Req) -> httpx.Response:
    port = mesh.ports[req.listener]
    headers = {"host": req.host, **req.headers}
    if req.caller is None:
        with httpx.Client(timeout=10) as client:
            return client.request(req.method, f"http://127.0.0.1:{port}{req.path}", headers=headers)
    name = req.caller.rsplit("/", 1)[1] + "-" + req.caller.split("/ns/")[1].split("/")[0]
    files = write_pems(mesh.pem_dir, name, mesh.ca.issue(req.caller), mesh.ca.bundle_pem())
    ctx = client_ssl_context(files, files.bundle)
    with httpx.Client(timeout=10, verify=ctx) as client:
        return client.request(req.method, f"https://127.0.0.1:{port}{req.path}", headers=headers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_authorization_matrix(mesh: Mesh, case: Case) -> None:
    mesh.apply(case.policies, case.default_deny)
    for req in case.requests:
        before = mesh.requests_seen()
        response = send(mesh, req)
        after = mesh.requests_seen()
        where = f"{req.method} {req.path} host={req.host} on {req.listener} from {req.caller or 'plaintext'}"
        if req.expect == 200:
            assert response.status_code == 200, f"{where}: {response.status_code} {response.text!r}"
            if req.method != "HEAD":
                assert response.json()["upstream"] == "web"
            assert after == before + 1, f"{where}: the upstream did not get the request"
        else:
            assert response.status_code == 403, f"{where}: {response.status_code} {response.text!r}"
            assert response.text == req.expect, where
            assert response.headers["content-type"] == "text/plain"
            assert after == before, f"{where}: a denied request reached the upstream"


def test_ports_are_the_listener_port(mesh: Mesh) -> None:
    mesh.apply([port_policy(mesh, "in1", negate=False)])
    assert send(mesh, Req(200, listener="in1")).status_code == 200
    denied = send(mesh, Req(NO_MATCH, listener="in2"))
    assert (denied.status_code, denied.text) == (403, NO_MATCH)
    mesh.apply([port_policy(mesh, "in1", negate=True)])
    assert send(mesh, Req(NO_MATCH, listener="in1")).status_code == 403
    assert send(mesh, Req(200, listener="in2")).status_code == 200


def test_outbound_listener_enforces_nothing(mesh: Mesh) -> None:
    mesh.apply([policy("deny-all", "DENY", [{}])], default_deny=True)
    assert send(mesh, Req(denied_by("deny-all"))).status_code == 403
    with httpx.Client(timeout=10) as client:
        response = client.get(mesh.proxy.url + "/", headers={"host": "web"})
    assert response.status_code == 200


def test_http2_request_is_denied_with_the_body(mesh: Mesh) -> None:
    mesh.apply([policy("deny-admin", "DENY", [to(paths=["/admin"])])])
    before = mesh.requests_seen()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        denied = client.get(f"http://127.0.0.1:{mesh.ports['in1']}/admin", headers={"host": "web"})
        allowed = client.get(f"http://127.0.0.1:{mesh.ports['in1']}/ok", headers={"host": "web"})
    assert denied.http_version == "HTTP/2"
    assert (denied.status_code, denied.text) == (403, denied_by("deny-admin"))
    assert allowed.status_code == 200
    assert mesh.requests_seen() == before + 1


def test_denied_upload_with_expect_continue_never_reaches_upstream(mesh: Mesh) -> None:
    """A POST with a body and `Expect: 100-continue` on a raw socket: the 403 comes without a
    `100 Continue`, and the upstream (a raw recorder) receives no connection and no byte. The same
    request to an allowed path gets its `100 Continue` and reaches the recorder: the check can fail."""
    mesh.apply([policy("no-uploads", "DENY", [to(paths=["/upload-denied"])])])
    body = b"x" * 4096

    def head(path: str) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: raw\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()

    sock = raw_http1(f"127.0.0.1:{mesh.ports['in1']}")
    with sock:
        sock.sendall(head("/upload-denied"))
        buffered = bytearray()
        status, headers, _ = read_head(sock, buffered)
        assert status == 403, headers
        text = read_exact(sock, buffered, int(headers["content-length"])).decode()
        assert text == denied_by("no-uploads")
    assert mesh.recorder.seen() == (0, 0), "no connection and no byte upstream"

    sock = raw_http1(f"127.0.0.1:{mesh.ports['in1']}")
    with sock:
        sock.sendall(head("/upload-ok"))
        buffered = bytearray()
        status, _, _ = read_head(sock, buffered)
        assert status == 100
        sock.sendall(body)
        status, headers, _ = read_head(sock, buffered)
        assert status == 200
    connections, received = mesh.recorder.seen()
    assert connections == 1 and received > len(body)


def test_decisions_are_counted_by_policy_in_stats_and_metrics(mesh: Mesh) -> None:
    policies = [
        policy("allow-get", rules=[to(methods=["GET"])]),
        policy("deny-secret", "DENY", [to(paths=["/secret"])]),
        policy("audit-all", "AUDIT", [{}]),
    ]
    mesh.apply(policies)

    def counts() -> tuple[dict[tuple[str, str], int], int]:
        stats = mesh.proxy.stats()
        return {(e["policy"], e["action"]): e["matched"] for e in stats["authz"]}, stats["authz_denied_no_match"]

    before, no_match_before = counts()
    for req in [Req(200), Req(200), Req(denied_by("deny-secret"), path="/secret"), Req(NO_MATCH, method="POST")]:
        assert send(mesh, req).status_code == (req.expect if req.expect == 200 else 403)
    after, no_match_after = counts()

    def delta(key: tuple[str, str]) -> int:
        return after.get(key, 0) - before.get(key, 0)

    assert delta(("default/allow-get", "ALLOW")) == 2
    assert delta(("default/deny-secret", "DENY")) == 1
    assert delta(("default/audit-all", "AUDIT")) == 4, "audited whatever the decision"
    assert no_match_after - no_match_before == 1

    text = httpx.get(mesh.proxy.admin_url + "/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    matched = {
        (s.labels["policy"], s.labels["action"]): s.value
        for s in families["fastmesh_authz_policy_matched"].samples
        if s.name.endswith("_total")
    }
    assert matched[("default/deny-secret", "DENY")] == after[("default/deny-secret", "DENY")]
    assert matched[("default/audit-all", "AUDIT")] == after[("default/audit-all", "AUDIT")]
    (no_match,) = [s.value for s in families["fastmesh_authz_denied_no_match"].samples if s.name.endswith("_total")]
    assert no_match == no_match_after
