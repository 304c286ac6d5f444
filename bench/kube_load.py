"""Bulk creation of a synthetic cluster in a (test) kube-apiserver: concurrent POSTs.

`create_all(kubeconfig, listed)` POSTs every object of `listed` (bench/synthetic_cluster.py: kind -> objects),
namespaces first, with `streams` requests in flight over `connections` HTTP/1.1 connections (aiohttp) or,
`http2`, multiplexed over HTTP/2 connections (httpx). Per object (600 of a kind, 2 shared cores): HTTP/1.1
costs this process 0.5-0.7 ms of CPU, HTTP/2 2.3-2.9 ms (httpx and h2 are pure Python), and the apiserver
~1.9 ms vs ~2.4 ms; a Service with a ClusterIP costs the apiserver ~2 ms more than a headless one. Retrying what the apiserver sheds (429, 5xx) with backoff. It shows progress on stderr every few seconds and
gives up with `LoadTimeout` (how many of how many were created) after `timeout_s`. An object that already
exists (409) counts as created, so a run can be resumed.

The test cluster is started for a load by `testcluster.start(..., extra_args=APISERVER_FLAGS)`: more requests
in flight than the defaults (the bench's own cluster instance only).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastmesh.kube.kubeconfig import connect
from fastmesh.kube.source import RESOURCES, collection_path

Obj = dict[str, Any]
Post = Callable[[str, bytes], Awaitable[tuple[int, str]]]
KINDS = ("Service", "EndpointSlice", "HTTPRoute", "TrafficPolicy")
APISERVER_FLAGS = ("--max-requests-inflight=1600", "--max-mutating-requests-inflight=800")
RETRY_STATUS = {429, 500, 502, 503, 504}
ACCEPT = "application/vnd.kubernetes.protobuf, application/json"
"""The answers are not read (only their status): protobuf where the kind has it costs the apiserver less."""


class LoadError(RuntimeError):
    """The apiserver refused an object (not a shed load): the message names it and says why."""


class LoadTimeout(LoadError):
    """The bound was reached before every object was created."""


@dataclass
class Loaded:
    created: int
    seconds: float
    retries: int
    answers: dict[str, str] = field(default_factory=dict)
    """The first answer of each status retried (and of each status on a retry): what the apiserver shed."""

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


def jobs(listed: dict[str, list[Obj]], headless: bool = False) -> list[tuple[str, Obj]]:
    """(collection path, body to POST) of every object, Services first: the objects as a client creates
    them (no uid, resourceVersion, creationTimestamp, nor the clusterIP the apiserver allocates). `headless`:
    Services with `clusterIP: None`, which spares the apiserver the IP allocation (an IPAddress object
    written per Service: most of its CPU per Service); fastmesh does not read the clusterIP."""
    plural = {kind: (api_version, p) for kind, api_version, p in RESOURCES}
    out = []
    for kind in KINDS:
        api_version, p = plural[kind]
        for obj in listed.get(kind, []):
            body = {k: v for k, v in obj.items() if k != "status"}
            body["metadata"] = {k: v for k, v in obj["metadata"].items()
                                if k in ("name", "namespace", "labels", "annotations")}
            if kind == "Service":
                body["spec"] = {k: v for k, v in obj["spec"].items() if k != "clusterIP"}
                if headless:
                    body["spec"]["clusterIP"] = "None"
            out.append((collection_path(api_version, p, obj["metadata"]["namespace"]), body))
    return out


def namespaces_of(listed: dict[str, list[Obj]]) -> list[str]:
    return sorted({o["metadata"]["namespace"] for objs in listed.values() for o in objs})


def renamespaced(listed: dict[str, list[Obj]], prefix: str) -> dict[str, list[Obj]]:
    """The same cluster in namespaces named `prefix` + the original name (a test's own namespaces in a
    shared apiserver)."""
    text = json.dumps(listed)
    for ns in sorted(namespaces_of(listed), key=len, reverse=True):
        text = text.replace(f'"namespace": "{ns}"', f'"namespace": "{prefix}{ns}"')
    moved: dict[str, list[Obj]] = json.loads(text)
    return moved


@contextlib.asynccontextmanager
async def _poster(kubeconfig: str | Path, connections: int, http2: bool) -> AsyncIterator[Post]:
    """POST (path, JSON bytes) -> (status, start of the answer): HTTP/2 (httpx; each connection carries many
    streams) or HTTP/1.1 (aiohttp, a pool of `connections`; its parser is C, so it costs less CPU a request)."""
    conn = connect(kubeconfig)
    headers = {"Content-Type": "application/json", "Accept": ACCEPT}
    if conn.bearer():
        headers["Authorization"] = f"Bearer {conn.bearer()}"
    if http2:
        import httpx

        clients = [httpx.AsyncClient(http2=True, verify=conn.ssl_context(), base_url=conn.server, headers=headers,
                                     timeout=60.0, limits=httpx.Limits(max_connections=1))
                   for _ in range(connections)]
        turn = itertools.count()

        async def post2(path: str, data: bytes) -> tuple[int, str]:
            try:
                response = await clients[next(turn) % connections].post(path, content=data)
            except httpx.TransportError as e:
                return 0, f"{type(e).__name__}: {e}"
            return response.status_code, response.text[:300]

        try:
            yield post2
        finally:
            for client in clients:
                await client.aclose()
        return
    import aiohttp

    session = aiohttp.ClientSession(conn.server, headers=headers, timeout=aiohttp.ClientTimeout(total=60),
                                    connector=aiohttp.TCPConnector(limit=connections, ssl=conn.ssl_context()))

    async def post1(path: str, data: bytes) -> tuple[int, str]:
        try:
            async with session.post(path, data=data) as response:
                return response.status, (await response.read())[:300].decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as e:
            return 0, f"{type(e).__name__}: {e}"

    try:
        yield post1
    finally:
        await session.close()


async def _create(kubeconfig: str | Path, work: Iterable[tuple[str, Obj]], total: int, state: dict[str, int],
                  answers: dict[str, str], *,
                  connections: int, streams: int, http2: bool, progress: TextIO | None, every_s: float) -> None:
    pending = iter(work)
    started = time.perf_counter()
    rng = random.Random(6)

    async def create(send: Post, path: str, body: Obj) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(8):
            status, why = await send(path, data)
            if attempt:
                answers.setdefault(f"{status} on a retry", "" if status in (201, 409) else why)
            if status in (201, 409):
                state["created"] += 1
                return
            answers.setdefault(str(status), why)
            if status and status not in RETRY_STATUS:
                break
            state["retries"] += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + rng.random()))
        raise LoadError(f"POST {path} {body['metadata']['name']}: {status or 'no answer'}: {why}")

    async def worker(send: Post) -> None:
        for path, body in pending:  # one shared iterator: each job is taken once
            await create(send, path, body)

    async def report() -> None:
        while True:
            await asyncio.sleep(every_s)
            seconds = time.perf_counter() - started
            if progress is not None:
                print(f"created {state['created']:,} of {total:,} objects in {seconds:.0f} s "
                      f"({state['created'] / seconds:.0f}/s, {state['retries']} retries)", file=progress, flush=True)

    reporter = asyncio.ensure_future(report())
    try:
        async with _poster(kubeconfig, connections, http2) as send:
            await asyncio.gather(*(worker(send) for _ in range(streams)))
    finally:
        reporter.cancel()


def create_all(kubeconfig: str | Path, listed: dict[str, list[Obj]], *, timeout_s: float = 600.0,
               connections: int = 8, streams: int = 48, http2: bool = False, headless: bool = False,
               progress: TextIO | None = sys.stderr, every_s: float = 5.0) -> Loaded:
    """Create the namespaces of `listed`, then every object; LoadTimeout after `timeout_s`."""
    work = jobs(listed, headless=headless)
    namespaces = [("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                  for ns in namespaces_of(listed)]
    total = len(namespaces) + len(work)
    state = {"created": 0, "retries": 0}
    answers: dict[str, str] = {}

    async def main() -> None:
        await _create(kubeconfig, namespaces, total, state, answers, connections=1, streams=min(8, len(namespaces)),
                      http2=http2, progress=None, every_s=every_s)
        await _create(kubeconfig, work, total, state, answers, connections=connections, streams=streams, http2=http2,
                      progress=progress, every_s=every_s)

    started = time.perf_counter()
    try:
        asyncio.run(asyncio.wait_for(main(), timeout_s))
    except TimeoutError:
        raise LoadTimeout(f"gave up creating the cluster after {time.perf_counter() - started:.0f} s (the "
                          f"{timeout_s:g} s bound): {state['created']:,} of {total:,} objects created") from None
    return Loaded(state["created"], time.perf_counter() - started, state["retries"], answers)


def count(kubeconfig: str | Path, listed: dict[str, list[Obj]]) -> dict[str, int]:
    """How many objects of each kind of `listed` the apiserver holds in the namespaces of `listed`."""
    from fastmesh.kube.source import Client

    plural = {kind: (api_version, p) for kind, api_version, p in RESOURCES}
    api = Client(connect(kubeconfig), timeout_s=60)
    found: dict[str, int] = {}
    conn = api.open()
    try:
        for kind in listed:
            api_version, p = plural[kind]
            for ns in namespaces_of({kind: listed[kind]}):
                status, body = api.call(conn, f"{collection_path(api_version, p, ns)}?limit=1")
                if status != 200:
                    raise LoadError(f"counting {kind} in {ns}: {status} {body.get('message')}")
                meta = body.get("metadata") or {}
                found[kind] = found.get(kind, 0) + len(body.get("items") or []) + int(meta.get("remainingItemCount", 0))
    finally:
        conn.close()
    return found
