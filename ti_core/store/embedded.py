"""The embedded, file-backed Redis-compatible store used when no Redis URL is configured.

burner-redis runs in process. Its own persistence is not used: it would start empty on a
file it cannot read and save every store it ever opened at exit. Instead the file format and
atomic saves are ``ti_core.store.file``'s, and loading is ``ti_core.store.load``'s (a checked
private copy, so burner-redis's exit-time save has nowhere to write). A loaded store is
reused while the file is unchanged: the next batch of a backfill, or a ``ti tail`` poll,
does not load it again.

Writers take an exclusive lock on ``store.lock`` (waiting up to 30 s), clean up what killed
writers left, and save atomically when each user leaves. Inside a process, concurrent writers
share one open store instead of queueing on the lock. Readers (``readonly=True``) take no
lock and never write in the data directory: renames make every file they read complete, and
they load their copy in the system's temporary directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ti_core.errors import StoreBusyError, StoreError, one_line
from ti_core.settings import TiSettings
from ti_core.store.embedded_client import EmbeddedClient
from ti_core.store.file import (
    PREVIOUS_SUFFIX,
    check_file,
    clean_leftovers,
    damaged,
    keep_private,
    private_dir,
    private_path,
    replace_keeping_previous,
    seal,
    store_failure,
)
from ti_core.store.load import empty_and_close, load_snapshot, scratch_dir

__all__ = [
    "EMBEDDED_FILE",
    "LARGE_STORE_BYTES",
    "check_store",
    "embedded_store",
    "embedded_store_path",
    "store_lock",
]

logger = logging.getLogger("ti_core.embedded")  # its name before the move

EMBEDDED_FILE = "store.dat"
# Past this size a save holds several copies of the store in memory (see docs/store.md).
LARGE_STORE_BYTES = 100 * 1024 * 1024
_LOCK_WAIT_SECONDS = 30.0


def embedded_store_path(settings: TiSettings | None = None) -> Path:
    """The embedded store's file: ``{data_dir}/store.dat``, or the file it points to when it
    is a symbolic link.

    A save renames a new file over the store: renamed over the link, it would replace the
    link by a file, silently leaving the link's target behind. Following the link, saves
    (and their lock, ``.prev`` and private files) happen beside the target, and the link
    stays.
    """
    path = (settings or TiSettings()).data_dir / EMBEDDED_FILE
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise StoreError(
            f"embedded store {path} is a symbolic link that cannot be followed "
            f"({one_line(exc, 200)}); point it at a file, or set TI_DATA_DIR"
        ) from None


@dataclass
class _SharedStore:
    """One open writable store, shared by every writer in this process while in use."""

    store: Any
    fd: int
    users: int = 1
    saving: bool = False


# Open stores by path. An entry lives only while a connect() uses it (not a client cache):
# concurrent tasks of one process share one store object instead of waiting on the file lock.
_OPEN: dict[Path, _SharedStore] = {}


@dataclass
class _Loaded:
    """A loaded store no writer holds, valid while the file keeps ``identity``."""

    identity: tuple[int, ...]
    store: Any
    readers: int = 0
    stale: bool = False


# The last store loaded or saved, by path: the next open (a poller's, the next batch of a
# backfill) reuses it while the file is unchanged instead of loading it again.
_LOADED: dict[Path, _Loaded] = {}
_GUARD = threading.Lock()
_warned: set[Path] = set()


def _lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on ``path``: the fd, or None if another holder has it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise store_failure(exc, "open the lock file", path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _make_data_dir(path: Path) -> None:
    """The data directory and the store's files in it, private to this user (decisions)."""
    private_dir(path.parent)
    keep_private(path, path.with_name(path.name + PREVIOUS_SUFFIX))


def check_store(settings: TiSettings, *, write: bool = True) -> None:
    """Refuse now, before a flow starts, when the embedded store could not be used.

    Checks the file (trailer and checksum; a file from an older ``ti`` is loaded once) and,
    for ``write``, the data directory, the lock file, and free space for one more copy.
    Nothing when a server is configured (``settings.uses_server``): the store is not used.
    """
    if settings.uses_server:
        return
    path = embedded_store_path(settings)
    if write:
        _make_data_dir(path)
        try:
            os.close(os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600))
            free = os.statvfs(path.parent)
        except OSError as exc:
            raise store_failure(exc, "write in", path.parent) from exc
    check = check_file(path)
    if check.problem:
        raise damaged(path, check.problem)
    if check.exists and not check.sealed:  # written by an older ti: only burner-redis can tell
        scratch = scratch_dir()
        try:
            store, _ = load_snapshot(path, scratch / "load")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        asyncio.run(empty_and_close(store))
    if write and free.f_bavail * free.f_frsize < check.size + (1 << 20):
        raise store_failure(OSError(28, "full"), "save a new copy of", path)


@contextlib.contextmanager
def store_lock(settings: TiSettings) -> Iterator[Path]:
    """Hold the writers' lock (waiting up to 30 s) outside any store: for ``ti store``."""
    import time

    path = embedded_store_path(settings)
    _make_data_dir(path)
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while (fd := _lock(path.with_suffix(".lock"))) is None:
        if time.monotonic() > deadline:
            raise StoreBusyError(
                f"the embedded store {path} stayed locked by another process "
                f"for {_LOCK_WAIT_SECONDS:.0f} s; retry when it finishes"
            )
        time.sleep(0.05)
    try:
        clean_leftovers(path)
        yield path
    finally:
        _unlock(fd)


def _identity(path: Path) -> tuple[int, ...]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise store_failure(exc, "read", path) from exc
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


async def _reader(path: Path) -> tuple[Any, _SharedStore | _Loaded]:
    """This process's open writer if any, else the file's snapshot (reused while unchanged)."""
    with _GUARD:
        shared = _OPEN.get(path)
        if shared is not None:
            shared.users += 1
            return shared.store, shared
    identity = _identity(path)
    with _GUARD:
        loaded = _LOADED.get(path)
        if loaded is not None and loaded.identity == identity:
            loaded.readers += 1
            return loaded.store, loaded
    scratch = scratch_dir()
    try:
        store, _ = load_snapshot(path, scratch / "load")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _empty_at_exit(store)
    fresh = _Loaded(identity, store, readers=1)
    await _retire(_LOADED.get(path))
    _LOADED[path] = fresh
    return store, fresh


async def _retire(loaded: _Loaded | None) -> None:
    """Forget a loaded store; emptied now, or by its last reader."""
    if loaded is None:
        return
    loaded.stale = True
    if loaded.readers == 0:
        await empty_and_close(loaded.store)


async def _leave_reader(path: Path, loaded: _Loaded) -> None:
    loaded.readers -= 1
    if loaded.stale and loaded.readers == 0 and _LOADED.get(path) is not loaded:
        await empty_and_close(loaded.store)


def _empty_at_exit(store: Any) -> None:
    """burner-redis serialises every store it made at exit (the write then fails, its
    directory is gone): empty ours first. atexit runs this before burner's own hook, which
    was registered earlier (at construction)."""

    def empty() -> None:
        with contextlib.suppress(Exception):
            asyncio.run(empty_and_close(store))

    atexit.register(empty)


def _reusable(path: Path) -> Any:
    """The loaded store of ``path`` if the file did not change since (call holding the lock)."""
    loaded = _LOADED.get(path)
    if loaded is None:
        return None
    if loaded.identity != _identity(path) or loaded.readers:
        return None
    del _LOADED[path]
    return loaded.store


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
            fd = _lock(path.with_suffix(".lock"))
            if fd is not None:
                try:
                    clean_leftovers(path)
                    store = _reusable(path)
                    if store is None:
                        store, _ = load_snapshot(path, private_path(path, "work"))
                        _empty_at_exit(store)
                except BaseException:
                    _unlock(fd)
                    raise
                shared = _OPEN[path] = _SharedStore(store, fd)
                return shared
        if loop.time() > deadline:
            raise StoreBusyError(
                f"the embedded store {path} stayed locked by another process for "
                f"{_LOCK_WAIT_SECONDS:.0f} s; retry when it finishes, or set TI_REDIS_URL to "
                "share a Redis server"
            )
        await asyncio.sleep(0.05)


async def _save(shared: _SharedStore, path: Path) -> None:
    """Save atomically to ``path`` (see ``ti_core.store.file``), one save at a time."""
    while True:
        with _GUARD:
            if not shared.saving:
                shared.saving = True
                break
        await asyncio.sleep(0.01)
    new = private_path(path, "new")
    try:
        await shared.store.save(str(new))
        seal(new)
        replace_keeping_previous(new, path)
    except OSError as exc:
        raise store_failure(exc, "save", path) from exc
    finally:
        for leftover in (new, new.with_name(new.name + ".tmp")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        with _GUARD:
            shared.saving = False
    _warn_if_large(path)


def _warn_if_large(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size > LARGE_STORE_BYTES and path not in _warned:
        _warned.add(path)
        logger.warning(
            "the embedded store %s is %d MB: each save now holds several copies of "
            "it in memory; set TI_REDIS_URL to publish to a Redis server "
            "(docs/store.md)",
            path,
            size >> 20,
        )


async def _release(path: Path, shared: _SharedStore, save: bool) -> None:
    """Save what this user wrote; the last user keeps the store for reuse and drops the lock."""
    saved = False
    try:
        if save:
            await _save(shared, path)
            saved = True
    finally:
        with _GUARD:
            shared.users -= 1
            last = shared.users == 0
            if last:
                del _OPEN[path]
        if last:
            try:
                stale = _LOADED.pop(path, None)
                if saved or not save:
                    _LOADED[path] = _Loaded(_identity(path), shared.store)
                else:  # a failed save: memory and file differ, drop the store
                    await empty_and_close(shared.store)
                await _retire(stale)
            finally:
                _unlock(shared.fd)


@asynccontextmanager
async def embedded_store(
    settings: TiSettings, *, readonly: bool = False
) -> AsyncIterator[EmbeddedClient]:
    """The embedded store (behind its client adapter); a writer's changes are saved when it
    leaves, a reader's never.

    ``readonly``: no lock, nothing written in the data directory, a missing file reads as
    empty. Never pass it to a block that writes: its writes would be lost.
    """
    path = embedded_store_path(settings)
    if readonly:
        store, holder = await _reader(path)
        try:
            yield EmbeddedClient(store)
        finally:
            if isinstance(holder, _SharedStore):
                await _release(path, holder, save=False)
            else:
                await _leave_reader(path, holder)
        return
    _make_data_dir(path)
    shared = await _acquire(path)
    try:
        yield EmbeddedClient(shared.store)
    finally:  # also after a failure: keep what was written before it
        await _release(path, shared, save=True)
