"""Bodies through the proxy: 1 GiB both ways in bounded memory, chunked, 100-continue, HEAD,
204/304 without bodies, HTTP/2 trailers."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket

import pytest

from tests.harness import (
    MemorySampler,
    curl,
    h2_request,
    mesh_config,
    raw_http1,
    read_exact,
    read_head,
    service,
)

GIB = 1 << 30
RSS_LIMIT_KIB = 100_000_000 // 1024  # 100 MB


def report_peak_rss(direction: str, memory: MemorySampler, record_property) -> None:
    """The measurement, visible: printed (pytest -s) and in the JUnit XML (--junitxml) as properties."""
    peak_kib = max(memory.hwm_kib, memory.peak_kib)
    record_property("proxy_peak_rss_kib", peak_kib)
    record_property("proxy_vmhwm_kib", memory.hwm_kib)
    record_property("proxy_sampled_rss_max_kib", memory.peak_kib)
    print(f"1 GiB {direction}: proxy peak RSS {peak_kib / 1024:.1f} MiB (VmHWM {memory.hwm_kib} KiB, "
          f"sampled VmRSS max {memory.peak_kib} KiB; limit {RSS_LIMIT_KIB} KiB)")


@pytest.fixture
def echo(upstream_factory, proxy_factory):
    """An HTTP/1.1 upstream behind the proxy as Service `echo`."""
    up = upstream_factory("v1")
    return proxy_factory(mesh_config(services={"echo": [up.address]}))


@pytest.mark.slow
def test_1gib_download_streams_with_bounded_proxy_memory(echo, require_tools, record_property):
    require_tools("curl")
    # The client reads slower than the upstream writes, so only backpressure keeps the proxy small.
    with MemorySampler(echo.pid) as memory:
        done = curl("-H", "host: echo", "--limit-rate", "256M", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                    f"{echo.url}/bytes/{GIB}", timeout=300)
    report_peak_rss("download", memory, record_property)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"200 {GIB}"
    assert max(memory.hwm_kib, memory.peak_kib) < RSS_LIMIT_KIB, (
        f"proxy peak RSS {memory.hwm_kib} KiB (sampled max {memory.peak_kib} KiB) >= 100 MB"
    )


@pytest.mark.slow
def test_1gib_upload_streams_with_bounded_proxy_memory(echo, tmp_path, require_tools, record_property):
    require_tools("curl")
    big = tmp_path / "1gib.bin"
    with open(big, "wb") as f:  # sparse: no disk, no page cache to speak of
        f.truncate(GIB)
    with MemorySampler(echo.pid) as memory:
        done = curl("-H", "host: echo", "-T", str(big), "-w", "\n%{http_code}", f"{echo.url}/upload", timeout=300)
    os.unlink(big)
    report_peak_rss("upload", memory, record_property)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    assert code == "200"
    assert json.loads(body)["body_bytes"] == GIB
    assert max(memory.hwm_kib, memory.peak_kib) < RSS_LIMIT_KIB, (
        f"proxy peak RSS {memory.hwm_kib} KiB (sampled max {memory.peak_kib} KiB) >= 100 MB"
    )


@pytest.mark.parametrize("h2c", [False, True], ids=["upstream-h1", "upstream-h2c"])
def test_chunked_request_body_is_streamed_to_the_upstream(upstream_factory, proxy_factory, h2c):
    up = upstream_factory("v1", http2=h2c)
    px = proxy_factory(mesh_config(services=[service("echo", [up.address], h2c=h2c)]))
    pieces = [b"hello", b" ", b"chunked " * 1000, os.urandom(70_000)]
    payload = b"".join(pieces)

    sock = raw_http1(px.address)
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)
    buffered = bytearray()
    status, headers, _ = read_head(sock, buffered)
    body = json.loads(read_exact(sock, buffered, int(headers["content-length"])))
    sock.close()

    assert status == 200
    assert body["body_bytes"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("h2c", [False, True], ids=["upstream-h1", "upstream-h2c"])
def test_response_without_length_is_chunked_to_http1_clients(upstream_factory, proxy_factory, h2c):
    up = upstream_factory("v1", http2=h2c)
    px = proxy_factory(mesh_config(services=[service("echo", [up.address], h2c=h2c)]))
    size = 3 * 1024 * 1024 + 17

    conn = http.client.HTTPConnection(px.address, timeout=30)
    conn.request("GET", f"/bytes/{size}?chunked=1", headers={"host": "echo"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("transfer-encoding") == "chunked"
    assert r.getheader("content-length") is None
    assert len(r.read()) == size
    # The framing ended exactly: the same connection carries the next request.
    conn.request("GET", "/after", headers={"host": "echo"})
    r = conn.getresponse()
    assert (r.status, json.loads(r.read())["path"]) == (200, "/after")
    conn.close()


def test_expect_100_continue_gets_100_before_the_body_is_sent(echo):
    sock = raw_http1(echo.address, timeout=5)
    body = os.urandom(10_000)
    sock.sendall(
        b"POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
    )
    buffered = bytearray()
    try:
        status, _, head = read_head(sock, buffered)
    except socket.timeout:
        pytest.fail("no 100 Continue within 5s of sending headers with Expect: 100-continue")
    assert status == 100, head
    assert head.startswith(b"HTTP/1.1 100")

    sock.sendall(body)
    status, headers, _ = read_head(sock, buffered)
    answer = json.loads(read_exact(sock, buffered, int(headers["content-length"])))
    sock.close()
    assert status == 200
    assert answer["body_bytes"] == len(body)


def test_head_gets_headers_and_no_body(echo):
    conn = http.client.HTTPConnection(echo.address, timeout=10)
    conn.request("HEAD", "/bytes/5000", headers={"host": "echo"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("x-upstream-method") == "HEAD"
    assert r.getheader("content-length") == "5000"
    assert r.read() == b""
    # Had the proxy sent a body after HEAD, this response would be garbage.
    conn.request("GET", "/bytes/10", headers={"host": "echo"})
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"\0" * 10)
    conn.close()

    with echo.client(http2=True) as h2:
        r2 = h2.head("/bytes/5000", headers={"host": "echo"})
    assert (r2.status_code, r2.headers["content-length"], r2.content) == (200, "5000", b"")


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_have_no_body(echo, code):
    sock = raw_http1(echo.address)
    request = b"GET /status/%d HTTP/1.1\r\nHost: echo\r\n\r\nGET /after HTTP/1.1\r\nHost: echo\r\n\r\n" % code
    sock.sendall(request)  # pipelined: the second answer must follow the first with nothing between
    buffered = bytearray()
    status, headers, _ = read_head(sock, buffered)
    assert status == code
    assert "transfer-encoding" not in headers
    if code == 204:
        assert headers.get("content-length", "0") == "0"
    status2, headers2, _ = read_head(sock, buffered)
    assert status2 == 200, f"bytes after the {code} response: {bytes(buffered)!r}"
    assert json.loads(read_exact(sock, buffered, int(headers2["content-length"])))["path"] == "/after"
    sock.close()

    with echo.client(http2=True) as h2:
        r = h2.get(f"/status/{code}", headers={"host": "echo"})
    assert (r.status_code, r.content) == (code, b"")


def test_http2_trailers_pass_through(upstream_factory, proxy_factory, require_tools):
    up = upstream_factory("v1", http2=True)
    px = proxy_factory(mesh_config(services=[service("grpcish", [up.address], h2c=True)]))
    expected = hashlib.sha256(b"trailers follow").hexdigest()

    r = h2_request(px.address, "/trailers", "grpcish", headers=[("te", "trailers")])
    assert (r.status, r.body) == (200, b"trailers follow")
    assert r.trailers == {"x-trailer-one": "1", "x-checksum": expected}

    require_tools("curl")
    done = curl("--http2-prior-knowledge", "-v", "-H", "host: grpcish", "-H", "te: trailers", f"{px.url}/trailers")
    assert done.returncode == 0, done.stderr
    assert f"< x-checksum: {expected}" in done.stderr


@pytest.mark.parametrize("h2c", [False, True], ids=["upstream-h1", "upstream-h2c"])
def test_http2_client_bodies_stream_both_ways(upstream_factory, proxy_factory, tmp_path, h2c, require_tools):
    """64 MiB up and down over h2c with prior knowledge: flow control in both directions."""
    require_tools("curl")
    up = upstream_factory("v1", http2=h2c)
    px = proxy_factory(mesh_config(services=[service("echo", [up.address], h2c=h2c)]))
    size = 64 << 20
    blob = tmp_path / "64mib.bin"
    with open(blob, "wb") as f:
        f.truncate(size)

    down = curl("--http2-prior-knowledge", "-H", "host: echo", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{http_version}",
                f"{px.url}/bytes/{size}", timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout == f"200 {size} 2"

    upload = curl("--http2-prior-knowledge", "-H", "host: echo", "-T", str(blob), "-w", "\n%{http_code}", f"{px.url}/upload", timeout=120)
    assert upload.returncode == 0, upload.stderr
    body, _, code = upload.stdout.rpartition("\n")
    assert (code, json.loads(body)["body_bytes"]) == ("200", size)
