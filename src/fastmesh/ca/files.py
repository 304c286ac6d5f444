"""Writing CA files: atomically (temp file + rename) and created with their final mode."""

from __future__ import annotations

import os
from pathlib import Path

KEY_MODE = 0o600
CERT_MODE = 0o644


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`. The temp file is created with `mode` (never more open than
    that, whatever the umask: `fchmod` before the first byte), then renamed over `path`, so a
    reader sees the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
