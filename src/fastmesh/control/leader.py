"""Leader election among control plane replicas: a coordination.k8s.io/v1 Lease (client-go's leaderelection,
in small). Every replica serves proxies; only the leader writes status (fastmesh.control.status).

- The Lease `--lease-name` (default `fastmesh-control`) in `--lease-namespace` (default: `--kube-namespace`,
  else `default`) names its holder (`holderIdentity`: host, pid and the replica's epoch).
- The holder renews `renewTime` every `retry_s` (a quarter of `--lease-duration`, default 15 s). Writes
  carry the resourceVersion read: of two replicas racing, one gets 409 and stays a follower.
- A follower takes the Lease when its record has not changed for `leaseDurationSeconds`, measured on its
  own clock from when it saw the record change (not from `renewTime`: no trust in the clocks of others).
- A leader that cannot renew for half the lease duration (`renew_deadline_s`, client-go's
  renewDeadline) stops leading (it no longer writes), before anyone else can take over; its requests time
  out within a third of the duration, so a hung API server connection cannot hold it past that.
- On a clean stop it releases the Lease (holder emptied, duration 1 s): another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastmesh.kube import KubeError
from fastmesh.kube.source import Client

log = logging.getLogger("fastmesh.control")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
DEFAULT_LEASE = "fastmesh-control"


def _micro_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Runs in its own thread (`run`); `leading` says whether this replica holds the Lease now, and
    `on_change(leading)` is called (from that thread) when it changes."""

    def __init__(self, client: Client, namespace: str, name: str, identity: str, duration_s: float,
                 on_change: Callable[[bool], None]) -> None:
        self.client = Client(client.connection, timeout_s=max(0.5, duration_s / 3))
        self.namespace, self.name = namespace, name
        self.identity = identity
        self.duration_s = duration_s
        self.retry_s = max(0.2, duration_s / 4)
        self.renew_deadline_s = duration_s / 2  # two renewals missed; the others wait the whole duration
        self.on_change = on_change
        self.leading = False
        self.holder = ""
        self.transitions = 0
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._stopped = threading.Event()

    @staticmethod
    def default_identity(epoch: str) -> str:
        return f"{socket.gethostname()}_{os.getpid()}_{epoch}"

    @property
    def path(self) -> str:
        return f"{LEASES.format(namespace=self.namespace)}/{self.name}"

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._try()
            except (KubeError, OSError, ValueError) as e:
                log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            if self.leading and time.monotonic() - self._renewed_at > self.renew_deadline_s:
                log.warning("lease %s/%s not renewed for %.1fs: no longer leading", self.namespace, self.name,
                            self.renew_deadline_s)
                self._set(False)
            self._stopped.wait(self.retry_s)

    def stop(self) -> None:
        """Stop, and release the Lease if held (blocking: one request)."""
        self._stopped.set()
        if not self.leading:
            return
        self._set(False)
        try:
            conn = self.client.open()
            try:
                status, lease = self.client.call(conn, self.path)
                if status == 200 and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    lease["spec"].update(holderIdentity="", leaseDurationSeconds=1)
                    self.client.call(conn, self.path, "PUT", lease)
            finally:
                conn.close()
        except KubeError as e:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, e)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("lease %s/%s: %s", self.namespace, self.name, "leading" if leading else "following")
            self.on_change(leading)

    def _spec(self, now: float, acquire: bool, transitions: int) -> dict[str, Any]:
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.duration_s)),
                "renewTime": _micro_time(now), "leaseTransitions": transitions}
        if acquire:
            spec["acquireTime"] = _micro_time(now)
        return spec

    def _try(self) -> None:
        now_wall, now = time.time(), time.monotonic()
        conn = self.client.open()
        try:
            status, lease = self.client.call(conn, self.path)
            if status == 404:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now_wall, True, 0)}
                status, lease = self.client.call(conn, LEASES.format(namespace=self.namespace), "POST", body)
                if status == 201:
                    self._took(lease, now)
                elif status != 409:  # 409: another replica created it first
                    raise KubeError(f"creating the Lease: {status} {lease.get('message', lease)}")
                return
            if status != 200:
                raise KubeError(f"GET {self.path}: {status} {lease.get('message', lease)}")
            spec = lease.get("spec") or {}
            self.holder = str(spec.get("holderIdentity") or "")
            record = {k: spec.get(k) for k in ("holderIdentity", "renewTime", "leaseDurationSeconds")}
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
            mine = self.holder == self.identity
            if not mine and self.holder and now - self._observed_at < duration:
                self._set(False)  # held by another replica that renews it
                return
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            lease["spec"] = {**spec, **self._spec(now_wall, not mine, transitions)}
            status, answer = self.client.call(conn, self.path, "PUT", lease)  # metadata.resourceVersion guards it
            if status == 200:
                self._took(answer, now)
            elif status == 409:
                self._set(False)  # someone else wrote it since we read it
            else:
                raise KubeError(f"PUT {self.path}: {status} {answer.get('message', answer)}")
        finally:
            conn.close()

    def _took(self, lease: dict[str, Any], now: float) -> None:
        spec = lease.get("spec") or {}
        self.holder = self.identity
        self.transitions = int(spec.get("leaseTransitions") or 0)
        self._observed = {k: spec.get(k) for k in ("holderIdentity", "renewTime", "leaseDurationSeconds")}
        self._observed_at = self._renewed_at = now
        self._set(True)

    def stats(self) -> dict[str, Any]:
        return {"lease": f"{self.namespace}/{self.name}", "identity": self.identity, "leading": self.leading,
                "holder": self.holder, "transitions": self.transitions}


def start_election(client: Client, namespace: str, name: str, epoch: str, duration_s: float,
                   on_change: Callable[[bool], None]) -> LeaderElector:
    """A `LeaderElector` running in its own thread; `on_change` is called on the running event loop."""
    loop = asyncio.get_running_loop()

    def changed(leading: bool) -> None:  # from the elector's thread
        loop.call_soon_threadsafe(on_change, leading)

    elector = LeaderElector(client, namespace, name, LeaderElector.default_identity(epoch), duration_s, changed)
    threading.Thread(target=elector.run, name="lease", daemon=True).start()
    return elector
