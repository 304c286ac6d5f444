"""The machine, the versions of the peers and tools, and the commit a run measured."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench import fortio

REPO = Path(__file__).resolve().parent.parent


def _run(argv: list[str]) -> str:
    """stdout+stderr of a version command, first line; '' when it is not there."""
    if not shutil.which(argv[0]):
        return ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out = (done.stdout + done.stderr).strip()
    return out.splitlines()[0].strip() if out else ""


def machine() -> dict[str, str]:
    model = ""
    try:
        if m := re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M):
            model = m.group(1).strip()
    except OSError:
        pass
    mem_gb = ""
    try:
        if m := re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M):
            mem_gb = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "memory": mem_gb,
            "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        if m := re.search(r'^PRETTY_NAME="?([^"\n]+)', Path("/etc/os-release").read_text(), re.M):
            return m.group(1)
    except OSError:
        pass
    return platform.system()


def versions() -> dict[str, str]:
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=REPO, check=False).stdout.strip() if shutil.which("git") else ""
    return {
        "nginx": _run(["nginx", "-v"]).removeprefix("nginx version: "),
        "haproxy": _run(["haproxy", "-v"]),
        "wrk": _run(["wrk", "--version"]),
        "h2load": _run(["h2load", "--version"]),
        "fortio": "fortio " + v if (v := _run([str(fortio.binary()), "version"])) else "",
        "rustc": _run([rustc, "--version"]) if Path(rustc).exists() else "",
        "python": sys.version.split()[0],
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def footer(load_start: tuple[float, ...] | list[float], load_end: tuple[float, ...] | list[float],
           extra: str = "") -> str:
    """The line a kube bench's report ends with: machine, Python, commit, load averages (the machine is shared)."""
    box = machine()
    commit = _run(["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short=12", "HEAD"])
    return (f"Machine: {box['nproc']} CPUs ({box['cpu']}), {box['memory']}, {box['os']}; Python "
            f"{sys.version.split()[0]}; commit {commit}; load average at the start "
            f"{', '.join(f'{x:.1f}' for x in load_start)}, at the end {', '.join(f'{x:.1f}' for x in load_end)}"
            f"{extra} (shared machine: other engineers' builds and tests ran alongside).")
