"""Config file watching: stat poll + content hash; in-place writes, rename-replace, no-op touches."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastmesh.reload import FileWatcher, fingerprint


class Recorder:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, content: bytes) -> None:
        self.seen.append(content)


def watcher_for(path: Path) -> tuple[FileWatcher, Recorder]:
    recorder = Recorder()
    watcher = FileWatcher(path, recorder, interval_s=0.01, settle_s=0.001)
    watcher.seen(path.read_bytes())  # what the runtime does after loading the file at start
    return watcher, recorder


def bump_mtime(path: Path) -> None:
    """Make a change visible to stat even on a coarse-mtime filesystem."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def poll(watcher: FileWatcher) -> bool:
    return asyncio.run(watcher.poll_once())


def test_unchanged_file_does_not_fire(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    assert poll(watcher) is False
    assert poll(watcher) is False
    assert recorder.seen == []


def test_in_place_write_fires_once_with_the_new_content(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    poll(watcher)
    path.write_text("a: 2\n")
    bump_mtime(path)
    assert poll(watcher) is True
    assert poll(watcher) is False
    assert recorder.seen == [b"a: 2\n"]


def test_touch_without_content_change_does_not_fire(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    poll(watcher)
    bump_mtime(path)
    assert poll(watcher) is False
    assert recorder.seen == []


def test_rename_replace_fires(tmp_path: Path) -> None:
    """Editors and config managers write a new file and rename it over the old one."""
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    poll(watcher)
    before = fingerprint(path)
    replacement = tmp_path / ".mesh.yaml.swp"
    replacement.write_text("a: 3\n")  # same size: only the inode tells them apart
    os.replace(replacement, path)
    after = fingerprint(path)
    assert before is not None and after is not None and before[2] != after[2]
    assert poll(watcher) is True
    assert recorder.seen == [b"a: 3\n"]


def test_missing_file_is_skipped_until_it_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    poll(watcher)
    path.unlink()
    assert poll(watcher) is False
    path.write_text("a: 4\n")
    assert poll(watcher) is True
    assert recorder.seen == [b"a: 4\n"]


def test_content_loaded_elsewhere_is_not_reloaded_again(tmp_path: Path) -> None:
    """After a SIGHUP reload read the new content, the poll must not reload it a second time."""
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    watcher, recorder = watcher_for(path)
    poll(watcher)
    path.write_text("a: 5\n")
    bump_mtime(path)
    watcher.seen(path.read_bytes())
    assert poll(watcher) is False
    assert recorder.seen == []


def test_run_loop_notices_a_change(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")

    async def scenario() -> bytes:
        changed: asyncio.Queue[bytes] = asyncio.Queue()
        watcher = FileWatcher(path, changed.put, interval_s=0.02, settle_s=0.001)
        watcher.seen(path.read_bytes())
        task = asyncio.create_task(watcher.run())
        path.write_text("a: 22\n")
        try:
            return await asyncio.wait_for(changed.get(), timeout=5)
        finally:
            task.cancel()

    assert asyncio.run(scenario()) == b"a: 22\n"
