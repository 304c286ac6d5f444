"""`fastmesh control`: watch the cluster once, serve every proxy its view (docs/control-plane.md).

- Watching: the reflectors of fastmesh.kube.watch (list + watch per kind, bookmarks, 410 relist, backoff),
  one thread per kind, as the proxy's direct mode uses them; their changes (`take_changes`) are projected
  into config documents and applied to the `Store`, which turns them into one delta per view.
- Serving: HTTP/2 over TLS (`h2`, on uvloop); the serving certificate is issued by the CA of `--ca-dir`,
  which the proxies trust (`--ca-bundle`), and renewed while running (fastmesh.control.serving).
    GET  /v1/config?epoch=E&version=V   the proxy's view: a long-lived stream of protocol messages
    POST /v1/certificate                {"csr": PEM} -> a workload certificate for the token's identity only
  Both need `Authorization: Bearer <ServiceAccount token>` (TokenReview). Streams wait until every kind is
  listed: a control plane that just (re)started never serves a partial state.
- Status: the leader (fastmesh.control.leader, a Lease) writes the status of the routes and fastmesh.io
  objects it serves (fastmesh.control.status).
- `--admin IP:PORT`: /ready, /live, /stats, /metrics (fastmesh.control.admin).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvloop

from fastmesh.ca import CA, CAError
from fastmesh.ca.authority import csr_uris
from fastmesh.control.admin import ControlAdmin
from fastmesh.control.auth import AuthError, TokenReviewer
from fastmesh.control.h2conn import H2Connection, Stream, server_context
from fastmesh.control.leader import DEFAULT_LEASE, LeaderElector, start_election
from fastmesh.control.protocol import CERTIFICATE_PATH, CONFIG_PATH, Key, canonical, key_of
from fastmesh.control.serving import ServingCertificate
from fastmesh.control.status import WRITTEN, ControlStatus, StatusLoop, touches_status
from fastmesh.control.views import Deliveries, Store, Subscriber, line
from fastmesh.http1 import split_hostport
from fastmesh.kube.apiclient import KubernetesTransport
from fastmesh.kube.source import RESOURCES, Client, KubeSource, project
from fastmesh.kube.watch import Backoff, Changes, Reflector
from fastmesh.runtime import EventWriter, setup_logging

log = logging.getLogger("fastmesh.control")
Document = tuple[Key, str | None, dict[str, Any] | None]
"""What a reflector keeps of an object: its key, its document text (None: not served), and for the kinds whose
status the control plane writes (`WRITTEN`) the object as the API served it (else None)."""
JSON = "application/json"


@dataclass(frozen=True)
class Settings:
    """`fastmesh control`'s options."""

    ca_dir: Path
    listen: str
    """ip:port of the HTTP/2 server (port 0: any)."""
    hosts: tuple[str, ...]
    """Names and IPs of the serving certificate."""
    cert_ttl_s: float = 86400.0
    admin: str | None = None
    serving_ttl_s: float = 30 * 86400.0
    """Lifetime of the serving certificate; renewed at two thirds of it."""
    token_audiences: tuple[str, ...] = ()
    """TokenReview `spec.audiences`: tokens for other audiences are refused (empty: the API server's)."""
    leader_elect: bool = True
    """Write status only while holding the Lease (off: always write, one replica only)."""
    lease_namespace: str = "default"
    lease_name: str = DEFAULT_LEASE
    lease_duration_s: float = 15.0


class ControlPlane:
    def __init__(self, source: KubeSource, settings: Settings, emit: EventWriter | None = None) -> None:
        self.source = source
        self.settings = settings
        self.emit = emit or EventWriter(open(os.devnull, "w"))
        self.store = Store()
        self.ca = CA.load(settings.ca_dir)  # fails at start (CAError) on a missing or broken CA
        self.reviewer = TokenReviewer(Client(source.connection), self.ca.trust_domain,
                                      audiences=settings.token_audiences)
        self.status = StatusLoop(ControlStatus(Client(source.connection), f"kubernetes {source.connection.server}"),
                                 lambda: dict(self.store.texts), self._status_objects, self.emit)
        self.leader: LeaderElector | None = None
        self.serving: ServingCertificate | None = None
        self.reflectors: list[Reflector] = []
        self.synced = asyncio.Event()
        self.address = ""
        self.admin: ControlAdmin | None = None
        self.connections: weakref.WeakSet[H2Connection] = weakref.WeakSet()
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._event_at: float | None = None
        """When the first watch event not yet applied came (time.time()): the `pushed` event's `watched_at`."""
        self.deliveries = Deliveries(lambda change, subscribers: self.emit(
            "sent", change=change, subscribers=subscribers, sent_at=time.time()))

    # === watching ===

    def _start_reflectors(self) -> None:
        loop = asyncio.get_running_loop()

        def changed() -> None:  # from a reflector's thread, after each event
            if self._event_at is None:
                self._event_at = time.time()
            loop.call_soon_threadsafe(self._dirty.set)

        transport = KubernetesTransport(self.source.connection)
        self.reflectors = [Reflector(transport, kind, api_version, plural, self.source.namespace, changed,
                                     backoff=Backoff(0.5), transform=self._keeper(kind, api_version))
                           for kind, api_version, plural in RESOURCES]
        for reflector in self.reflectors:
            reflector.track = True  # take_changes: only what changed reaches the store
            threading.Thread(target=reflector.run, name=f"kube-{reflector.plural}", daemon=True).start()

    def _keeper(self, kind: str, api_version: str) -> Callable[[dict[str, Any]], Document | None]:
        """What the reflectors keep of an object (in their thread, as it comes): its key and document text, or
        None when it projects to nothing (not proxied: out of the store)."""

        def keep(obj: dict[str, Any]) -> Document | None:
            if self._event_at is None and self.synced.is_set():
                self._event_at = time.time()  # the watch event came (before it is projected)
            doc = project(kind, api_version, obj)
            if kind not in WRITTEN:
                return None if doc is None else (key_of(doc), canonical(doc), None)
            key = key_of({"kind": kind, "metadata": obj.get("metadata")})  # what project() keeps of it
            return key, None if doc is None else canonical(doc), obj

        return keep

    def _sync(self) -> int:
        """Apply what the reflectors saw since the last call to the store; how many view changes it made."""
        changes = Changes()
        for reflector in self.reflectors:
            reflector.take_changes(changes)
        replaced: dict[str, dict[Key, str]] = {kind: {} for kind in changes.replace_kinds}
        upserts: dict[Key, str] = {}
        deletes: list[Key] = list(changes.deletes)
        for kind, (key, text, _) in changes.upserts:  # (the reflectors keep documents: `_keeper`)
            if text is None:  # kept for its status only: not served
                deletes.append(key)
            else:
                (replaced[kind] if kind in replaced else upserts)[key] = text
        if touches_status(self.store.texts, upserts, deletes, replaced):
            self.status.due()
        changed = sum(self.store.replace_texts(kind, texts) for kind, texts in replaced.items())
        return changed + self.store.apply(upserts, deletes)

    async def _follow(self) -> None:
        while not all(r.synced.is_set() for r in self.reflectors):
            await asyncio.sleep(0.02)
        self._event_at = None
        self._sync()
        # The listed objects live on: out of the cyclic GC's reach, so its full collections do not rescan
        # them while a change is being pushed (at 100k endpoints, ~60 ms pauses: bench/control_bench.py).
        gc.freeze()
        self.synced.set()
        log.info("cluster listed: %d documents", len(self.store.texts))
        self.emit("synced", documents=len(self.store.texts))
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            watched_at, self._event_at = self._event_at, None
            try:
                views = self._sync()
            except Exception:  # noqa: BLE001 - a bug on one object must not stop every later push
                log.exception("applying the cluster's changes failed")
                continue
            if views:
                log.info("change %d: %d views updated", self.store.changes, views)
                self.emit("pushed", change=self.store.changes, views=views, watched_at=watched_at,
                          queued_at=time.time())
                self.deliveries.track(self.store.changes, self.store.pushed)

    # === serving ===

    async def handle(self, conn: H2Connection, stream: Stream) -> None:
        method, target = stream.headers.get(":method", ""), stream.headers.get(":path", "")
        url = urllib.parse.urlsplit(target)
        try:
            if url.path == CONFIG_PATH and method == "GET":
                await self._config(conn, stream, urllib.parse.parse_qs(url.query))
            elif url.path == CERTIFICATE_PATH and method == "POST":
                await self._certificate(conn, stream)
            else:
                await self._reply(conn, stream, 404, {"error": f"no {method} {url.path} here"})
        except AuthError as e:
            log.warning("%s %s refused (%d): %s", method, url.path, e.status, e)
            await self._reply(conn, stream, e.status, {"error": str(e)})
        except ConnectionError:
            pass  # the proxy went away; it reconnects
        except Exception:  # noqa: BLE001 - one request's failure must not go unseen nor take the server down
            log.exception("%s %s failed", method, url.path)
            conn.close()

    async def _reply(self, conn: H2Connection, stream: Stream, status: int, doc: dict[str, Any]) -> None:
        body = (json.dumps(doc) + "\n").encode()
        conn.send_headers(stream.id, [(":status", str(status)), ("content-type", JSON),
                                      ("content-length", str(len(body)))])
        await conn.send_data(stream, body, end=True)

    async def _config(self, conn: H2Connection, stream: Stream, query: dict[str, list[str]]) -> None:
        workload = await self.reviewer.workload(stream.headers.get("authorization"))
        epoch = (query.get("epoch") or [""])[0] or None
        try:
            version = int((query.get("version") or ["x"])[0])
        except ValueError:
            version = None
        await self.synced.wait()
        view = self.store.view(workload.namespace)
        subscriber = Subscriber()
        hello = {"type": "hello", "epoch": self.store.epoch, "namespace": workload.namespace,
                 "identity": workload.spiffe_id}
        for message in (line(json.dumps(hello)), *view.catch_up(epoch, version)):
            subscriber.send(message)
        view.subscribers.add(subscriber)  # in the same step as the catch-up: no delta falls between
        log.info("%s connected (view %s, had %s/%s, now %d)", workload.spiffe_id, view.namespace, epoch,
                 version, view.version)
        conn.send_headers(stream.id, [(":status", "200"), ("content-type", "application/x-ndjson")])
        try:
            while (queued := await subscriber.queue.get()) is not None:
                await conn.send_data(stream, queued)
                self.deliveries.written(queued)
            conn.h2.reset_stream(stream.id)  # overflowed: the proxy reconnects and resumes
        finally:
            view.subscribers.discard(subscriber)
            subscriber.close()

    async def _certificate(self, conn: H2Connection, stream: Stream) -> None:
        workload = await self.reviewer.workload(stream.headers.get("authorization"))
        try:
            request = json.loads(await stream.read_all())
            csr_pem = str(request["csr"])
            asked = csr_uris(csr_pem)
        except (ValueError, KeyError, TypeError) as e:
            await self._reply(conn, stream, 400, {"error": f'expected {{"csr": "<PEM CSR>"}}: {e}'})
            return
        others = [uri for uri in asked if uri != workload.spiffe_id]
        if others:
            raise AuthError(403, f"the token proves {workload.spiffe_id}; the CSR asks for {', '.join(others)}: "
                                 "a certificate is signed only for the token's own identity")
        try:
            ca = await asyncio.to_thread(CA.load, self.settings.ca_dir)  # as on disk now: rotations are followed
            issued = ca.sign_csr(csr_pem, workload.spiffe_id, ttl=timedelta(seconds=self.settings.cert_ttl_s))
        except CAError as e:
            await self._reply(conn, stream, 400, {"error": str(e)})
            return
        log.info("certificate for %s, valid until %s", workload.spiffe_id, issued.not_after)
        await self._reply(conn, stream, 200, {
            "spiffe_id": issued.spiffe_id, "cert_chain_pem": issued.cert_chain_pem, "bundle_pem": ca.bundle_pem(),
            "not_before": issued.not_before.timestamp(), "not_after": issued.not_after.timestamp()})

    # === running ===

    def stats(self) -> dict[str, Any]:
        return {"epoch": self.store.epoch, "address": self.address, "synced": self.synced.is_set(),
                "documents": len(self.store.texts), "changes": self.store.changes,
                "token_reviews": self.reviewer.reviews, "status": self.status.stats(),
                "leader": self.leader.stats() if self.leader is not None else None,
                "serving_certificate": self.serving.stats() if self.serving is not None else None,
                "views": {name: {"version": view.version, "subscribers": len(view.subscribers),
                                 "documents": len(view.texts)} for name, view in sorted(self.store.views.items())}}

    def _status_objects(self) -> dict[str, list[dict[str, Any]]]:
        return {r.kind: [kept[2] for kept in r.snapshot()] for r in self.reflectors if r.kind in WRITTEN}

    def _start_leader_election(self) -> None:
        s = self.settings
        if not s.leader_elect:
            self.status.lead(True)
            return
        self.leader = start_election(Client(self.source.connection), s.lease_namespace, s.lease_name,
                                     self.store.epoch, s.lease_duration_s, self._leading)

    def _leading(self, leading: bool) -> None:
        self.status.lead(leading)
        assert self.leader is not None
        self.emit("leader", leading=leading, identity=self.leader.identity,
                  lease=f"{self.settings.lease_namespace}/{self.settings.lease_name}")

    def _accept(self) -> H2Connection:
        conn = H2Connection(client_side=False, handler=self.handle)
        self.connections.add(conn)
        return conn

    def drop_connections(self) -> None:
        """Close every proxy's connection (at stop: they reconnect, to another replica if there is one)."""
        for conn in list(self.connections):
            conn.close()

    async def serve(self, directory: Path) -> asyncio.Server:
        """Listen on --listen with a serving certificate written to `directory`; `self.address` is what was bound."""
        host, port = split_hostport(self.settings.listen)
        self.serving = ServingCertificate(self.settings.ca_dir, self.settings.hosts, directory,
                                          self.settings.serving_ttl_s, self.emit)
        context = self.serving.issue()
        server = await asyncio.get_running_loop().create_server(self._accept, host, port, ssl=context)
        bound = server.sockets[0].getsockname()
        self.address = f"{bound[0]}:{bound[1]}"
        return server

    async def run(self) -> int:
        directory = Path(tempfile.mkdtemp(prefix="fastmesh-control-"))
        try:
            self._start_reflectors()
            follow = asyncio.ensure_future(self._follow())
            server = await self.serve(directory)
            assert self.serving is not None
            tasks = [follow, asyncio.ensure_future(self.serving.renew_forever()),
                     asyncio.ensure_future(self._status_after_sync())]
            admin = ""
            if self.settings.admin is not None:
                self.admin = ControlAdmin(self.stats, self.synced.is_set)
                admin = await self.admin.start(self.settings.admin)
            log.info("control plane serving on https://%s (epoch %s), trust domain %s", self.address,
                     self.store.epoch, self.ca.trust_domain)
            self.emit("ready", address=self.address, admin=admin, epoch=self.store.epoch, pid=os.getpid())
            await self._stop.wait()
            server.close()
            self.drop_connections()
            if self.admin is not None:
                self.admin.close()
            for task in tasks:
                task.cancel()
            for reflector in self.reflectors:
                reflector.stop()
            if self.leader is not None:
                await asyncio.to_thread(self.leader.stop)  # released: another replica leads at once
            self.emit("stopped")
            return 0
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    async def _status_after_sync(self) -> None:
        await self.synced.wait()  # never judge objects on a partial list
        self._start_leader_election()
        await self.status.run()

    def stop(self) -> None:
        self._stop.set()


def run_control(source: KubeSource, settings: Settings) -> int:
    setup_logging()

    async def main() -> int:
        try:
            control = ControlPlane(source, settings, EventWriter(sys.stdout))
        except CAError as e:
            log.error("--ca-dir %s: %s", settings.ca_dir, e)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, control.stop)
        try:
            return await control.run()
        except (OSError, ValueError) as e:
            log.error("cannot listen on %s (or the admin address %s): %s", settings.listen, settings.admin, e)
            return 1

    return uvloop.run(main())
