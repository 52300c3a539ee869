"""The embedded, file-backed Redis-compatible store used when no Redis URL is configured.

burner-redis runs in process and persists to a file. One process at a time owns the file
(an exclusive lock); inside a process, concurrent ``connect()`` calls share one open store
(reference-counted) instead of queueing on the lock, and each user's writes are saved when
it leaves, so a later process (``ti get``) finds them.
"""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import itertools
import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ti_core.errors import RedisUnavailableError
from ti_core.settings import TiSettings

__all__ = ["EMBEDDED_FILE", "embedded_store", "embedded_store_path"]

EMBEDDED_FILE = "store.dat"
_LOCK_WAIT_SECONDS = 30.0


def embedded_store_path(settings: TiSettings | None = None) -> Path:
    """The embedded store's file: ``{data_dir}/store.dat``."""
    return (settings or TiSettings()).data_dir / EMBEDDED_FILE


@dataclass
class _SharedStore:
    """One open embedded store, shared by every ``connect()`` in this process while in use."""

    store: Any
    fd: int
    work: Path
    users: int = 1
    saving: bool = False


# Open stores by path. An entry lives only while a connect() uses it (not a client cache):
# concurrent tasks of one process share one store object instead of waiting on the file lock.
_OPEN: dict[Path, _SharedStore] = {}
_GUARD = threading.Lock()
_WORK_FILES: set[Path] = set()
_opened = itertools.count()


def _try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on ``path``: the fd, or None if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _remove_work_files() -> None:
    for work in list(_WORK_FILES):
        for leftover in (work, work.with_name(work.name + ".tmp")):
            leftover.unlink(missing_ok=True)


def _open_store(path: Path) -> tuple[Any, Path]:
    """Open ``path`` through a private hard link (see below); returns (store, work file).

    burner-redis saves every store it ever opened to its ``persistence_path`` at interpreter
    exit, so a store closed earlier would overwrite newer data with its stale copy. Each store
    is therefore opened from a private link to the file and saved explicitly to the real path
    (write-then-rename, which leaves the link's old inode alone); the exit-time saves land on
    the private links, which an exit hook registered before them removes afterwards.
    """
    from burner_redis import BurnerRedis  # type: ignore[import-untyped]  # embedded path only

    if not _WORK_FILES:
        atexit.register(_remove_work_files)  # registered first, so it runs after their saves
    work = path.with_name(f".{path.name}.{os.getpid()}.{next(_opened)}.work")
    _WORK_FILES.add(work)
    work.unlink(missing_ok=True)
    if path.exists():
        try:
            os.link(path, work)
        except OSError:  # a file system without hard links: copy instead
            shutil.copyfile(path, work)
    return BurnerRedis(persistence_path=str(work)), work


async def _acquire(path: Path) -> _SharedStore:
    """Join this process's open store, or open it under the file lock (waiting up to 30 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LOCK_WAIT_SECONDS
    while True:
        with _GUARD:  # never held across an await
            shared = _OPEN.get(path)
            if shared is not None:
                shared.users += 1
                return shared
            fd = _try_lock(path.with_suffix(".lock"))
            if fd is not None:
                try:
                    store, work = _open_store(path)
                except BaseException:
                    _unlock(fd)
                    raise
                shared = _OPEN[path] = _SharedStore(store, fd, work)
                return shared
        if loop.time() > deadline:
            raise RedisUnavailableError(
                f"the embedded store {path.parent} is in use by another process"
            )
        await asyncio.sleep(0.05)


async def _save(shared: _SharedStore, path: Path) -> None:
    """Save to ``path``, one save at a time (saves write the same temporary file)."""
    while True:
        with _GUARD:
            if not shared.saving:
                shared.saving = True
                break
        await asyncio.sleep(0.01)
    try:
        await shared.store.save(str(path))
    finally:
        with _GUARD:
            shared.saving = False


async def _close(shared: _SharedStore) -> None:
    """Empty and close a store nobody uses: its exit-time save then frees memory, writes nothing."""
    try:
        keys = list(await shared.store.keys("*"))
        for start in range(0, len(keys), 1000):
            await shared.store.delete(*keys[start:start + 1000])
        await shared.store.aclose()
    finally:
        _unlock(shared.fd)
        shared.work.unlink(missing_ok=True)


async def _release(path: Path, shared: _SharedStore) -> None:
    """Save what this user wrote; the last user closes the store and drops the file lock."""
    try:
        await _save(shared, path)
    finally:
        with _GUARD:
            shared.users -= 1
            last = shared.users == 0
            if last:
                del _OPEN[path]
        if last:
            await _close(shared)


@asynccontextmanager
async def embedded_store(settings: TiSettings) -> AsyncIterator[Any]:
    """The embedded store; saved when each user leaves, so what a caller wrote is on disk."""
    path = embedded_store_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    shared = await _acquire(path)
    try:
        yield shared.store
    finally:
        await _release(path, shared)
