"""`fastmesh proxy`: load the config, drive the engine, reload on change, drain on SIGTERM.

Events for machines go to stdout as one JSON object per line (docs/operations.md); logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import uvloop

from fastmesh.admin import Admin
from fastmesh.compiler import ClusterCompiler, Compiled, IdentitySettings, compile_config, with_version
from fastmesh.config.errors import ConfigError, Problem
from fastmesh.engine import Engine, EngineNotBuilt
from fastmesh.identity import Identity, IdentityError
from fastmesh.kube import KubeError
from fastmesh.overrides import OverrideError, Overrides
from fastmesh.reload import FileWatcher, fingerprint
from fastmesh.rollout import FileStore, RolloutController, override_weights, state_path
from fastmesh.state import AppliedConfig, ReloadError, State

if TYPE_CHECKING:  # the Kubernetes client (http.client, ssl) is imported only with --kubernetes
    from fastmesh.control.client import ControlSource, ControlWatcher
    from fastmesh.kube.source import KubeSource
    from fastmesh.kube.status import StatusWriter
    from fastmesh.kube.watch import Changes, KubeWatcher

log = logging.getLogger("fastmesh")

EngineFactory = Callable[[int], Engine]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


__all__ = ["OverrideError", "Overrides", "Runtime", "run_proxy"]


class EventWriter:
    """Machine-readable events, one JSON line each, flushed: tests and supervisors wait on them."""

    def __init__(self, out: TextIO) -> None:
        self.out: TextIO | None = out

    def __call__(self, event: str, **fields: Any) -> None:
        if self.out is None:
            return
        try:
            self.out.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # Whoever read the events is gone (a supervisor killed, a closed pipe): the proxy goes
            # on serving without them, and the interpreter must not fail flushing at exit.
            out, self.out = self.out, None
            if out is sys.stdout:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Runtime:
    def __init__(
        self,
        config_path: Path | None,
        overrides: Overrides | None = None,
        engine_factory: EngineFactory = Engine.start,
        events: TextIO | None = None,
        watch_interval_s: float = 0.5,
        handle_signals: bool = True,
        kube: KubeSource | None = None,
        namespace: str | None = None,
        control: ControlSource | None = None,
    ) -> None:
        """Serve `config_path` (a file, watched), or with `kube` the objects of a cluster (watched), or with
        `control` the view a control plane streams. `namespace`: the proxy's own (GAMMA consumer routes);
        None: the control plane's word for it, else the Proxy document's."""
        self.path = config_path
        self.namespace = namespace
        self.kube = kube
        self.control = control
        self.label = kube.label if kube is not None else control.label if control is not None else str(config_path)
        self.handle_signals = handle_signals  # False in unit tests: they call stop() and reload()
        self.overrides = overrides or Overrides()
        self.engine_factory = engine_factory
        self.emit = EventWriter(events or sys.stdout)
        self.state = State(source=self.label)
        self.watcher: FileWatcher | KubeWatcher | ControlWatcher
        self.control_watcher: ControlWatcher | None = None
        self.cluster: ClusterCompiler | None = None
        if control is not None:
            from fastmesh.control.client import ControlWatcher

            self.watcher = self.control_watcher = ControlWatcher(control, None, self.state,
                                                                 on_update=self._on_control_update)
        elif kube is not None:
            from fastmesh.kube.source import RESOURCES
            from fastmesh.kube.watch import KubeWatcher

            self.watcher = KubeWatcher(kube, on_changes=self._on_kube_changes)
            self.cluster = ClusterCompiler(self.label, self.overrides, self._kube_objects,
                                           kinds=[kind for kind, _, _ in RESOURCES],
                                           namespace=namespace, proxy_namespace=kube.proxy_namespace)
        else:
            assert config_path is not None
            self.watcher = FileWatcher(config_path, self._on_file_change, interval_s=watch_interval_s)
        self.status: StatusWriter | None = None
        if kube is not None and kube.write_status:
            from fastmesh.kube.source import Client
            from fastmesh.kube.status import StatusWriter

            self.status = StatusWriter(Client(kube.connection))
        self._status_lock = asyncio.Lock()
        self._left_out: dict[tuple[str, str, str], str] = {}  # the objects left out, as last warned of
        self.engine: Engine | None = None
        self.admin: Admin | None = None
        self.admin_requested = ""  # as configured (may have port 0)
        self.admin_address = ""  # as bound
        self.drain_timeout_s = 10.0
        self.worker_threads = 1
        self.watch_interval_s = watch_interval_s
        self.identity: Identity | None = None
        self.admin_token_file: str | None = None
        self.rollouts: RolloutController | None = None  # file mode only (docs/config.md "Rollout")
        if kube is None and config_path is not None:
            self.rollouts = RolloutController(FileStore(state_path(config_path)), self._engine_stats, self._reapply, self.emit)
        self._rollout_base: Compiled | None = None  # the config as compiled, while it has Rollouts
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # === loading ===

    def _read(self) -> bytes | Changes:
        if self.control_watcher is not None:
            return self.control_watcher.replica.take_changes()
        if self.kube is not None:
            from fastmesh.kube.watch import Changes

            self.kube.objects()  # a full list: every kind replaced
            return Changes.everything(self.kube.listed)
        assert self.path is not None and isinstance(self.watcher, FileWatcher)
        fp = fingerprint(self.path)  # before the read: a write landing in between is still seen
        content = self.path.read_bytes()
        self.watcher.seen(content, fp)
        return content

    def _kube_objects(self) -> list[tuple[str, dict[str, Any]]]:
        assert self.kube is not None
        return [(kind, obj) for kind, objs in self.kube.listed.items() for obj in objs]

    async def _load(self, content: bytes | Changes) -> Compiled | None:
        """Parse, validate and compile (in a child process); ConfigError or OverrideError say what is wrong.
        From a cluster (`content` is what changed): None when nothing the compiler reads changed."""
        if not isinstance(content, bytes):
            if self.control_watcher is not None:
                await self._control_compiler()
            assert self.cluster is not None
            return await self.cluster.apply(content.upserts, content.deletes, content.replace_kinds)
        return await compile_config(content, self.label, self.overrides, cluster=self.kube is not None,
                                    namespace=self.namespace)

    async def _control_compiler(self) -> None:
        """With --control-plane: the incremental compiler of the view's documents, for the namespace
        given (`--namespace`) or else the control plane's; a new one (sent every document) if that changed."""
        assert self.control_watcher is not None
        replica = self.control_watcher.replica
        namespace = self.namespace if self.namespace is not None else replica.namespace
        if self.cluster is not None and self.cluster.namespace == namespace:
            return
        if self.cluster is not None:
            await self.cluster.close()
        from fastmesh.kube.source import RESOURCES

        self.cluster = ClusterCompiler(self.label, self.overrides, replica.documents,
                                       kinds=[kind for kind, _, _ in RESOURCES], namespace=namespace)

    async def _apply(self, loaded: Compiled) -> int:
        assert self.engine is not None
        snapshot_json = loaded.snapshot_json
        if self.rollouts is not None:
            self.rollouts.configure(list(loaded.rollouts))
            snapshot_json = override_weights(snapshot_json, self.rollouts.weights())
            self._rollout_base = loaded if loaded.rollouts else None
        snapshot_json = with_version(snapshot_json, self.state.version + 1)
        applied = await self.engine.apply_json(snapshot_json)
        if self.rollouts is not None:
            self.rollouts.applied()
        self.state.applied = AppliedConfig(applied, snapshot_json, time.time())  # the only copy kept
        self.drain_timeout_s = loaded.settings.drain_timeout_s
        self.admin_token_file = loaded.settings.admin_token_file
        return applied

    def _engine_stats(self) -> dict[str, Any]:
        assert self.engine is not None
        return self.engine.stats()

    async def _reapply(self) -> bool:
        """The config last compiled, applied again with the rollouts' current weights (a rollout step)."""
        async with self._lock:
            if self.state.draining or self._rollout_base is None:
                return False
            try:
                version = await self._apply(self._rollout_base)
            except (ValueError, OSError) as e:
                log.error("%s: the engine refused the rollout's weights: %s", self.label, e)
                return False
            self.emit("rollout_applied", version=version)
            return True

    # === identity ===

    async def _apply_with_identity(self, loaded: Compiled) -> int:
        """Install the configured identity (when it changed) BEFORE the snapshot that may need it;
        if the engine then refuses the snapshot, the previous identity is put back."""
        wanted = loaded.settings.identity
        old = self.identity
        if (old.settings if old else None) == wanted:
            return await self._apply(loaded)
        new = self._new_identity(wanted) if wanted is not None else None
        if old is not None:
            await old.stop()  # its renewals must not overwrite the new identity
        try:
            if new is not None:
                await new.renew("start" if self.state.applied is None else "config")
            version = await self._apply(loaded)
        except BaseException:
            if old is not None:
                if new is not None and new.current is not None:
                    await old.reinstall()  # the engine holds the new one: put the old one back
                else:
                    old.start()
            raise
        self.identity = new
        if new is not None:
            new.start()
        return version

    def _new_identity(self, settings: IdentitySettings) -> Identity:
        assert self.engine is not None
        issuer = None
        if self.control is not None:  # certificates from the control plane, not a CA directory
            from fastmesh.control.client import issue

            control = self.control
            issuer = lambda s: issue(control, s)  # noqa: E731
        return Identity(settings, self.engine, self.emit, watch_interval_s=self.watch_interval_s, issuer=issuer)

    # === start ===

    async def start(self) -> bool:
        """Load, start the engine and the admin API, emit `ready`. False (logged) if anything fails."""
        try:
            loaded = await self._load(self._read())
            if loaded is None:  # a first compile always changes something
                raise ConfigError([Problem(self.label, "the cluster compiler gave no snapshot")])
        except OSError as e:
            log.error("cannot read %s: %s", self.label, e.strerror or e)
            return False
        except KubeError as e:
            log.error("%s", e)
            return False
        except (ConfigError, OverrideError) as e:
            log.error("%s", e)
            return False
        proxy = loaded.settings
        self.worker_threads = proxy.worker_threads
        self.admin_requested = self.overrides.admin_address or proxy.admin_address
        try:
            self.engine = self.engine_factory(proxy.worker_threads)
        except EngineNotBuilt as e:
            log.error("%s", e)
            return False
        self.admin = Admin(self.state, self.engine, identity=lambda: self.identity,
                           token_file=lambda: self.admin_token_file,
                           rollouts=self.rollouts.view if self.rollouts is not None else list,
                           rollout_action=self.rollouts.act if self.rollouts is not None else None)
        # first: a taken admin port fails before listeners bind
        try:
            self.admin_address = await self.admin.start(self.admin_requested)
        except (ValueError, OSError) as e:
            log.error("admin API: cannot listen on %s: %s", self.admin_requested, e)
            return False
        try:
            await self._apply_with_identity(loaded)
        except IdentityError as e:
            log.error("%s: %s", self.label, e)
            return False
        except (ValueError, OSError) as e:
            log.error("%s: the engine refused the config: %s", self.label, e)
            return False
        self._write_status(loaded)
        listeners = self.engine.listeners()
        log.info(
            "serving %s (version %d): admin %s, listeners %s",
            self.label, self.state.version, self.admin_address, listeners,
        )
        self.emit(
            "ready",
            version=self.state.version,
            admin=self.admin_address,
            listeners=listeners,
            pid=os.getpid(),
        )
        return True

    # === reload ===

    async def reload(self, content: bytes | Changes | None = None, reason: str = "SIGHUP") -> bool:
        """Apply the file (or `content` already read from it); a failure is refused and recorded."""
        async with self._lock:
            if self.state.draining or self.state.applied is None:  # stopping, or start not done yet
                return False
            try:
                loaded = await self._load(content if content is not None else self._read())
                if loaded is None:
                    return True  # from a cluster: nothing the config reads changed (a status write)
                self._check_restart_only(loaded)
                version = await self._apply_with_identity(loaded)
            except (ConfigError, OverrideError, IdentityError, KubeError) as e:
                self._refuse(str(e))
                return False
            except ValueError as e:
                self._refuse(f"{self.label}: the engine refused the config: {e}")
                return False
            except OSError as e:  # reading the file, or binding a new listener
                what = e.strerror if e.filename else f"the engine could not apply the config: {e}"
                self._refuse(f"{self.label}: {what}")
                return False
            self._write_status(loaded)
            self.state.reloads += 1
            self.state.last_reload_error = None
            # per change from a cluster or a control plane: not at info (100s of proxies, each change)
            level = logging.INFO if self.path is not None or reason == "SIGHUP" else logging.DEBUG
            log.log(level, "reloaded %s (%s): version %d", self.label, reason, version)
            self.emit("reloaded", version=version)
            return True

    def _write_status(self, loaded: Compiled) -> None:
        """From a cluster: report on the objects of the config just applied (fastmesh.kube.status)."""
        reports = list(loaded.objects)
        warned: dict[tuple[str, str, str], str] = {}
        for report in reports:
            if report["left_out"]:
                problems = "; ".join(f"{p['path']}: {p['message']}" for p in report["problems"])
                name = (report["kind"], report["namespace"], report["name"])
                if self._left_out.get(name) != problems:  # once, not again with every change that follows
                    log.warning("%s %s/%s left out: %s", *name, problems)
                warned[name] = problems
        self._left_out = warned
        if self.kube is None or self.status is None or not self.status.enabled:
            return
        own = self.kube.proxy_namespace
        listed = {kind: [o for o in objects if kind != "Proxy" or own is None or o["metadata"].get("namespace") == own]
                  for kind, objects in self.kube.listed.items()}  # other proxies' settings are not ours

        async def write() -> None:
            async with self._status_lock:  # in order: a later load's status is written last
                assert self.status is not None
                await asyncio.to_thread(self.status.write, listed, reports)

        self._spawn(write())

    def _check_restart_only(self, loaded: Compiled) -> None:
        """Settings bound at start cannot change by reload: say so instead of silently ignoring them."""
        proxy = loaded.settings
        if proxy.worker_threads != self.worker_threads:
            log.warning("workerThreads changed to %d: takes effect on restart", proxy.worker_threads)
        if self.overrides.admin_address is None and proxy.admin_address != self.admin_requested:
            log.warning("admin address changed to %s: takes effect on restart", proxy.admin_address)

    def _refuse(self, error: str) -> None:
        self.state.reload_failures += 1
        self.state.last_reload_error = ReloadError(error, time.time())
        log.error("reload refused, version %d keeps serving:\n%s", self.state.version, error)
        self.emit("reload_failed", error=error)

    async def _on_file_change(self, content: bytes) -> None:
        await self.reload(content, reason="file changed")

    async def _on_kube_changes(self, changes: Changes) -> None:
        await self.reload(changes, reason="cluster changed")

    async def _on_control_update(self) -> None:
        await self.reload(reason="control plane")  # takes the changes under the lock (`_read`)

    # === run and drain ===

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(reason="SIGHUP")))
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop.set)

    def _ignore_signals(self) -> None:
        """Once stopped, a repeated SIGTERM (a supervisor insisting) must not turn exit 0 into a kill.

        Removed from the loop first, so closing the loop does not restore the default action.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, *STOP_SIGNALS):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        if self.handle_signals:
            self._install_signals()  # before `ready`: a SIGHUP right after it must not kill us
        if self.control_watcher is not None:  # the first state comes from the control plane: wait for it
            self._spawn(self.control_watcher.run())
            ready = asyncio.ensure_future(self.control_watcher.ready.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stop.cancel()
            if self._stop.is_set():
                for task in list(self._tasks):
                    task.cancel()
                return 1
        if not await self.start():
            if self.cluster is not None:
                await self.cluster.close()
            if self.admin is not None:
                self.admin.close()
            if self.identity is not None:
                await self.identity.stop()
            return 1
        if self.control_watcher is None:
            self._spawn(self.watcher.run())
        elif self.control_watcher.replica.pending:  # came while starting (a reload then is refused)
            self._spawn(self.reload(reason="control plane"))
        if self.rollouts is not None:
            self._spawn(self.rollouts.run())
        await self._stop.wait()
        return await self.drain()

    async def drain(self) -> int:
        assert self.engine is not None
        async with self._lock:  # a reload in progress finishes first; later ones are refused
            self.state.draining = True
        for task in list(self._tasks):
            task.cancel()
        if self.identity is not None:
            await self.identity.stop()
        if self.cluster is not None:
            await self.cluster.close()
        log.info("draining (deadline %.1fs, %d requests in flight)",
                 self.drain_timeout_s, self.engine.active_requests())
        self.emit("draining")
        drained = await self.engine.drain(self.drain_timeout_s)
        if not drained:
            log.warning("drain deadline passed with requests still in flight")
        if self.handle_signals:
            self._ignore_signals()
        self.emit("stopped", drained=drained)
        if self.admin is not None:
            self.admin.close()
        return 0


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_proxy(
    config_path: Path | None, overrides: Overrides, kube: KubeSource | None = None, namespace: str | None = None,
    control: ControlSource | None = None,
) -> int:
    """Entry point of `fastmesh proxy`: the orchestrator on uvloop; returns the exit status."""
    setup_logging()

    async def main() -> int:
        return await Runtime(config_path, overrides, kube=kube, namespace=namespace, control=control).run()

    return uvloop.run(main())
