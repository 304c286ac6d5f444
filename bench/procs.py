"""Child processes of a benchmark run: start pinned, wait for readiness, stop them all, read /proc."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

LOOPBACK = "127.0.0.1"
# The proxy under test gets CPU 0; the upstream and the load generator share CPU 1.
PROXY_CPU = "0"
LOAD_CPU = "1"


class BenchError(RuntimeError):
    """Something the benchmark depends on failed (a process did not start, a tool is missing)."""


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


def free_port() -> int:
    """A port the kernel just handed out on loopback; the caller binds it right after."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Proc:
    """A long-running child (server or proxy) in its own process group; stderr goes to a log."""

    def __init__(self, label: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.label = label
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            env=env, cwd=cwd, start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, name=f"{label}-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def died(self) -> BenchError:
        return BenchError(f"{self.label} exited with {self.popen.poll()}: {self.argv}\n{self.log_tail()}")

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """Waits for a JSON line {"event": event, ...} on stdout (fastmesh's readiness signal)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"{self.label}: no {event!r} event within {timeout}s\n{self.log_tail()}") from None
            if line is None:
                raise self.died()
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == event:
                return doc

    def wait_listening(self, ports: Sequence[int], timeout: float = 15.0) -> None:
        """Waits until every port accepts a connection (nginx and HAProxy print no readiness line)."""
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self.popen.poll() is not None:
                    raise self.died()
                try:
                    socket.create_connection((LOOPBACK, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError(f"{self.label}: port {port} not listening after {timeout}s\n"
                                         f"{self.log_tail()}") from None
                    time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        # Workers left behind by a master that died first share the process group.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


class Registry:
    """Every Proc started in a run, so they are all stopped at the end, on error too."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []
        self._lock = threading.Lock()

    def add(self, proc: Proc) -> Proc:
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs[::-1], []
        for proc in procs:
            try:
                proc.stop()
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping {proc.label}: {e}", flush=True)


# === /proc ===


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (nginx master + worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return sorted(tree)


def read_proc(pids: Sequence[int], reader: Callable[[str], Any], name: str) -> list[Any]:
    out = []
    for pid in pids:
        try:
            out.append(reader(Path(f"/proc/{pid}/{name}").read_text()))
        except OSError:
            continue
    return out
