"""Installs what the benchmark needs when it is missing (Debian packages, matplotlib in the venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# command -> Debian packages to try, in order
TOOLS = {
    "nginx": ["nginx-light", "nginx"],
    "haproxy": ["haproxy"],
    "wrk": ["wrk"],
    "h2load": ["nghttp2-client"],
    "taskset": ["util-linux"],
}
OPTIONAL = {"perf": ["linux-perf"], "strace": ["strace"]}


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _apt(packages: list[str]) -> bool:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not getattr(_apt, "updated", False):
        _say("apt-get update")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
        _apt.updated = True  # type: ignore[attr-defined]
    _say(f"apt-get install {' '.join(packages)}")
    done = subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stderr.strip()[-2000:], flush=True)
    return done.returncode == 0


def _stop_services() -> None:
    """Debian starts nginx and HAProxy on install; the benchmark runs its own."""
    for service in ("nginx", "haproxy"):
        for argv in (["systemctl", "disable", "--now", service], ["service", service, "stop"]):
            if shutil.which(argv[0]):
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                break


def ensure_tools(optional: bool) -> list[str]:
    """Installs missing tools; returns the names of those still missing (optional ones only)."""
    installed_servers = False
    wanted = dict(TOOLS, **(OPTIONAL if optional else {}))
    for command, packages in wanted.items():
        if shutil.which(command):
            continue
        _say(f"{command} is missing")
        if not any(_apt([pkg]) for pkg in packages) and command in TOOLS:
            raise SystemExit(f"cannot install {command} (tried {', '.join(packages)})")
        installed_servers |= command in ("nginx", "haproxy")
    if installed_servers:
        _stop_services()
    return [c for c in wanted if not shutil.which(c)]


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    _say(f"pip install matplotlib (into {sys.prefix})")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
    if done.returncode != 0:
        print("warning: matplotlib could not be installed; no plot", flush=True)
        return False
    import importlib

    importlib.invalidate_caches()
    return True


def perf_syscalls_usable() -> bool:
    """`perf stat` can count the syscalls tracepoints (needs tracefs and perf_event access)."""
    if not shutil.which("perf"):
        return False
    done = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0 and "raw_syscalls:sys_enter" in done.stderr and "<not" not in done.stderr
