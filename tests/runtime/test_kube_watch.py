"""The reflector's protocol against a small scripted API server on loopback: list, watch from the list's
resourceVersion with bookmarks, 410 relists, failures back off, bursts debounce into one reload.
(tests/kube/test_proxy_kubernetes.py shows the same against a real kube-apiserver.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fastmesh.kube.kubeconfig import Connection
from fastmesh.kube.source import Client, KubeSource
from fastmesh.kube.watch import Backoff, Changes, KubeWatcher, Reflector


def _svc(name: str, version: str, port: int = 80) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"ports": [{"name": "http", "port": port}]}}


class FakeAPI:
    """Serves /api/v1/namespaces/ns/services: lists from `lists`, watches from `watches` (each a list of
    events, or an int status); every other path is 404. Records each request with its time."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict[str, Any]], str]] = []
        self.watches: list[Any] = []  # events, a status, or (threading.Event, either) to wait for first
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.release = threading.Event()  # a watch with no script left stays open until this is set
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                api.requests.append((time.monotonic(), url.path, query))
                if url.path != "/api/v1/namespaces/ns/services":
                    return self._json(404, {"kind": "Status", "code": 404})
                if query.get("watch") != "1":
                    items, version = api.lists.pop(0)
                    return self._json(200, {"items": items, "metadata": {"resourceVersion": version}})
                script = api.watches.pop(0) if api.watches else []
                if isinstance(script, tuple):  # (gate, script): the script plays once the gate is set
                    gate, script = script
                    gate.wait(10)
                if isinstance(script, int):
                    return self._json(script, {"kind": "Status", "code": script})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in script:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                if not script or script[-1].get("type") != "ERROR":
                    api.release.wait(10)
                self.wfile.write(b"0\r\n\r\n")

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.connection = Connection(server=f"http://127.0.0.1:{self.server.server_address[1]}")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def watch_requests(self) -> list[tuple[float, dict[str, str]]]:
        return [(t, q) for t, path, q in self.requests if q.get("watch") == "1"]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()
    yield fake
    fake.close()


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _reflector(api: FakeAPI, **kwargs: Any) -> tuple[Reflector, list[int]]:
    changes: list[int] = []
    reflector = Reflector(Client(api.connection), "Service", "v1", "services", "ns",
                          lambda: changes.append(1), **kwargs)
    threading.Thread(target=reflector.run, daemon=True).start()
    return reflector, changes


def test_watch_from_the_list_version_with_bookmarks_and_relist_on_410(api: FakeAPI) -> None:
    api.lists = [([_svc("a", "9")], "10"), ([_svc("a", "9"), _svc("b", "11"), _svc("c", "19")], "20")]
    api.watches = [
        [{"type": "ADDED", "object": _svc("b", "11")},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
         {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}],
    ]
    reflector, changes = _reflector(api)
    try:
        _until(lambda: reflector.lists == 2 and len(api.watch_requests()) == 2)
        _until(lambda: sorted(n for _, n in reflector.items) == ["a", "b", "c"])
        first, second = (q for _, q in api.watch_requests())
        assert first["resourceVersion"] == "10" and first["allowWatchBookmarks"] == "true"
        assert second["resourceVersion"] == "20"  # the relist's version, not the bookmark's 15
        assert len(changes) == 3  # list, ADDED, relist: the bookmark is not a change
    finally:
        reflector.stop()


def test_a_bookmark_moves_the_version_a_closed_watch_resumes_from_it(api: FakeAPI) -> None:
    api.lists = [([], "10")]
    api.watches = [
        [{"type": "DELETED", "object": _svc("gone", "41")},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}],
    ]
    api.release.set()  # each watch ends after its events, as at the server's timeoutSeconds
    reflector, _ = _reflector(api)
    try:
        _until(lambda: len(api.watch_requests()) >= 2)
        assert api.watch_requests()[1][1]["resourceVersion"] == "42"
        assert reflector.lists == 1  # a watch that ended is resumed, not relisted
    finally:
        reflector.stop()


def test_failures_back_off_exponentially_then_the_watch_resumes(api: FakeAPI) -> None:
    api.lists = [([_svc("a", "1")], "5")]
    api.watches = [500, 500, 429, [{"type": "MODIFIED", "object": _svc("a", "6", port=81)}]]
    reflector, _ = _reflector(api, backoff=Backoff(base_s=0.1, cap_s=1.0))
    try:
        _until(lambda: reflector.items.get(("ns", "a"), {}).get("spec", {}).get("ports", [{}])[0].get("port") == 81)
        times = [t for t, _ in api.watch_requests()]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert len(gaps) == 3
        for n, gap in enumerate(gaps):  # each wait is at least half its nominal delay (jitter)
            assert gap >= 0.1 * 2**n * 0.5, gaps
        assert all(q["resourceVersion"] == "5" for _, q in api.watch_requests())
        assert reflector.lists == 1
    finally:
        reflector.stop()


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0)
    delays = [backoff.next() for _ in range(6)]
    for nominal, delay in zip([1, 2, 4, 8, 8, 8], delays):
        assert nominal / 2 <= delay <= nominal
    backoff.reset()
    assert backoff.next() <= 1.0


def test_watcher_debounces_a_burst_into_one_change_and_skips_what_it_has_seen(api: FakeAPI) -> None:
    api.lists = [([_svc("a", "1")], "5"), ([_svc("a", "1")], "5")]
    api.watches = [[{"type": "MODIFIED", "object": _svc("a", str(6 + i), port=100 + i)} for i in range(5)]]
    source = KubeSource(api.connection, "ns")
    seen: list[bytes] = []

    async def on_change(content: bytes) -> None:
        seen.append(content)

    async def main() -> None:
        watcher = KubeWatcher(source, on_change, debounce_s=0.3)
        watcher.seen(source.read())  # what the runtime loaded at start: the first sync equals it
        task = asyncio.ensure_future(watcher.run())
        try:
            deadline = time.monotonic() + 10
            while not seen or b'"port":104' not in seen[-1]:
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert len(seen) == 1, [s[:80] for s in seen]  # five events, one reload; the unchanged sync, none
    assert b'"port":104' in seen[0]
    # kinds the fake does not serve (404) count as empty: only the Service is there
    assert seen[0].count(b'"kind":"Service"') == 1 and b"HTTPRoute" not in seen[0]


def test_watcher_hands_over_only_what_changed_and_a_relist_as_a_replacement(api: FakeAPI) -> None:
    """`on_changes`: the first list replaces every kind; then each event's object (or its deletion) alone;
    after a 410 the relist is a replacement again, so what was deleted meanwhile goes too."""
    events_gate, gone_gate = threading.Event(), threading.Event()
    api.lists = [([_svc("a", "1"), _svc("b", "2")], "5"), ([_svc("b", "9"), _svc("c", "9")], "9")]
    api.watches = [
        (events_gate, [{"type": "MODIFIED", "object": _svc("a", "6", port=81)},
                       {"type": "DELETED", "object": _svc("b", "7")},
                       {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "again"}}]),
        (gone_gate, 410),
    ]
    source = KubeSource(api.connection, "ns")
    got: list[Any] = []

    async def on_changes(changes: Any) -> None:
        got.append(changes)

    async def until(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(got) < n:
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)

    async def main() -> None:
        watcher = KubeWatcher(source, on_changes=on_changes, debounce_s=0.2, backoff_base_s=0.05)
        task = asyncio.ensure_future(watcher.run())
        try:
            await until(1)
            events_gate.set()
            await until(2)
            gone_gate.set()
            await until(3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    first, events, relist = got
    assert "Service" in first.replace_kinds and "HTTPRoute" in first.replace_kinds  # 404 kinds: empty
    assert sorted(o["metadata"]["name"] for k, o in first.upserts) == ["a", "b"]
    assert [(k, o["spec"]["ports"][0]["port"]) for k, o in events.upserts] == [("Service", 81)]
    assert events.deletes == [("Service", "ns", "b")] and not events.replace_kinds
    assert relist.replace_kinds == ["Service"] and not relist.deletes
    assert sorted(o["metadata"]["name"] for k, o in relist.upserts) == ["b", "c"]
    assert {o["metadata"]["name"] for o in source.listed["Service"]} == {"b", "c"}


def test_a_reflector_keeps_what_its_transform_makes_and_none_reads_as_gone(api: FakeAPI) -> None:
    """The control plane's reflectors keep each object's document text, not the API's dict: `items` holds the
    transform's result; an object it maps to None (not proxied) is a delete, and is left out of a relist."""
    gate = threading.Event()
    api.lists = [([_svc("a", "1"), _svc("b", "2", port=0)], "5")]
    api.watches = [(gate, [{"type": "MODIFIED", "object": _svc("a", "6", port=81)},
                           {"type": "MODIFIED", "object": _svc("c", "7", port=0)}])]

    def text(obj: dict[str, Any]) -> str | None:
        port = obj["spec"]["ports"][0]["port"]
        return f"{obj['metadata']['name']}:{port}" if port else None

    changes: list[int] = []
    reflector = Reflector(Client(api.connection), "Service", "v1", "services", "ns", lambda: changes.append(1),
                          transform=text)
    reflector.track = True
    threading.Thread(target=reflector.run, daemon=True).start()
    try:
        _until(lambda: reflector.synced.is_set())
        taken = Changes()
        reflector.take_changes(taken)
        assert taken.upserts == [("Service", "a:80")] and taken.replace_kinds == ["Service"]
        assert reflector.items == {("ns", "a"): "a:80", ("ns", "b"): None} and reflector.snapshot() == ["a:80"]
        gate.set()
        _until(lambda: len(changes) == 3)
        taken = Changes()
        reflector.take_changes(taken)
        assert taken.upserts == [("Service", "a:81")] and taken.deletes == [("Service", "ns", "c")]
    finally:
        reflector.stop()
