"""Counts the syscalls a target makes during a short load run: `perf stat` on the syscall
tracepoints (cheap), or `strace -c -f` (slows the target a lot, so only the ratio is kept)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.measure import parse_perf_syscalls, parse_strace_summary
from bench.procs import LOAD_CPU, BenchError, pinned

# The calls a proxy's request path makes; everything else is counted as "other". Enabling all
# ~360 syscall tracepoints takes perf 15 s to set up and halves the target's throughput.
NAMED = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "recvmmsg",
         "sendmmsg", "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "poll", "ppoll",
         "accept", "accept4", "connect", "close", "shutdown", "socket", "setsockopt", "getsockopt",
         "getsockname", "getpeername", "futex", "sched_yield", "io_uring_enter", "timerfd_settime",
         "clock_gettime", "clock_nanosleep", "nanosleep", "splice", "sendfile64", "madvise", "mmap",
         "munmap", "mprotect", "brk", "ioctl", "fcntl", "statx", "openat")
TRACEFS = Path("/sys/kernel/tracing/events/syscalls")

# (argv wrapper prefix or None, run the load) -> stdout of the load generator
LoadRunner = Callable[[Sequence[str]], str]


def perf_events() -> str:
    available = {p.name.removeprefix("sys_enter_") for p in TRACEFS.glob("sys_enter_*")} if TRACEFS.is_dir() else set()
    named = [f"syscalls:sys_enter_{n}" for n in NAMED if n in available]
    return ",".join(["raw_syscalls:sys_enter", *named])


def count_with_perf(pids: Sequence[int], out: Path, run_load: LoadRunner) -> tuple[dict[str, int], str]:
    """perf counts the target's threads for exactly the load generator's lifetime (it is perf's
    workload); per-task counters only tick while the target runs, so idle time adds nothing."""
    wrap = ["perf", "stat", "-x,", "-o", str(out), "-e", perf_events(), "-p", ",".join(map(str, pids)), "--"]
    stdout = run_load(wrap)
    return parse_perf_syscalls(out.read_text()), stdout


def count_with_strace(pids: Sequence[int], out: Path, run_load: LoadRunner) -> tuple[dict[str, int], str]:
    argv = pinned(LOAD_CPU, ["strace", "-c", "-f", "-o", str(out), *[f"-p{p}" for p in pids]])
    tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert tracer.stderr is not None
        attached = 0
        while attached < len(pids):  # "strace: Process N attached" once per pid, then load
            line = tracer.stderr.readline()
            if not line:
                raise BenchError(f"strace exited with {tracer.wait()} before attaching")
            attached += line.startswith("strace: Process ") and line.rstrip().endswith(" attached")
        stdout = run_load([])
    finally:
        tracer.send_signal(signal.SIGINT)  # detach; strace writes the summary
        tracer.communicate(timeout=30)
    return parse_strace_summary(out.read_text()), stdout


COUNTERS = {"perf": count_with_perf, "strace": count_with_strace}
