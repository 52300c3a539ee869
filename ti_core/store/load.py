"""Loading a store file into burner-redis without ever letting burner-redis write it.

The file is checked (``ti_core.store.file``) and copied into a private directory, burner-redis
loads the copy, and the directory is removed at once: burner-redis's exit-time save then has
nowhere to write. burner-redis reports a failed load only on file descriptor 2 (from Rust)
and starts empty; the capture here turns that into ``StoreDamagedError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ti_core.contract.keys import DECISION_HASH_PREFIX
from ti_core.errors import StoreDamagedError
from ti_core.store.file import FileCheck, check_file, damaged, store_failure

__all__ = ["StoreSummary", "empty_and_close", "inspect_store", "load_snapshot", "scratch_dir"]

_LOAD_FAILED = "failed to load persistence file"
_CAPTURE = threading.Lock()


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[bytes]]:
    """Capture file descriptor 2 (burner-redis reports a failed load there, from Rust).

    One capture at a time: fd 2 is the process's, and nested swaps would lose it.
    """
    with _CAPTURE:
        with _fd2_to_pipe() as chunks:
            yield chunks


@contextlib.contextmanager
def _fd2_to_pipe() -> Iterator[list[bytes]]:
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield chunks
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        reader.join(timeout=5)
        os.close(read_end)


def load_snapshot(path: Path, workdir: Path) -> tuple[Any, FileCheck]:
    """A burner-redis store holding ``path``'s data, loaded through ``workdir`` (then removed).

    Raises ``StoreDamagedError`` (nothing written to ``path``) when the file does not load;
    a missing file gives an empty in-memory store.
    """
    from burner_redis import BurnerRedis  # type: ignore[import-untyped]  # embedded path only

    try:
        workdir.mkdir(mode=0o700)
    except OSError as exc:
        raise store_failure(exc, "create the private directory", workdir) from exc
    try:
        snapshot = workdir / "snapshot"
        try:
            with open(snapshot, "wb") as out:
                check = check_file(path, out)
        except OSError as exc:
            raise store_failure(exc, "copy the store to", workdir) from exc
        if check.problem:
            raise damaged(path, check.problem)
        if not check.exists:
            return BurnerRedis(), check
        with _stderr_captured() as said:
            store = BurnerRedis(persistence_path=str(snapshot))
        text = b"".join(said).decode("utf-8", "replace")
        if _LOAD_FAILED in text:
            reason = text.split("': ", 1)[-1].split(". Starting with empty store", 1)[0]
            raise damaged(path, f"burner-redis cannot read it: {' '.join(reason.split())}")
        if text:
            sys.stderr.write(text)  # someone else's output during the load
        return store, check
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def empty_and_close(store: Any) -> None:
    """Delete every key, then close: burner-redis keeps a store alive until exit (its exit
    hook holds it), so emptying is what frees the memory."""
    keys = list(await store.keys("*"))
    for start in range(0, len(keys), 1000):
        await store.delete(*keys[start : start + 1000])
    await store.aclose()


def scratch_dir() -> Path:
    """A new private directory in the system's temporary directory (readers load there)."""
    try:
        return Path(tempfile.mkdtemp(prefix="ti-store-"))
    except OSError as exc:
        raise store_failure(
            exc, "create a private directory in", Path(tempfile.gettempdir())
        ) from exc


@dataclass(frozen=True)
class StoreSummary:
    """What ``ti store check`` reports of one store file (``problem`` empty: it loads)."""

    path: Path
    exists: bool
    size: int = 0
    sealed: bool = False
    problem: str = ""
    keys: int = 0
    decisions: int = 0
    entries: int = 0


async def inspect_store(path: Path, stream_name: str) -> StoreSummary:
    """Load ``path`` privately (never writing it) and count its keys, hashes and entries."""
    scratch = scratch_dir()
    try:
        store, check = load_snapshot(path, scratch / "load")
    except StoreDamagedError:
        check = check_file(path)
        return StoreSummary(
            path,
            check.exists,
            check.size,
            check.sealed,
            check.problem or "burner-redis cannot read it",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in await store.keys("*")]
        decisions = sum(k.startswith(DECISION_HASH_PREFIX + ":") for k in keys)
        entries = int(await store.xlen(stream_name)) if stream_name in keys else 0
    finally:
        await empty_and_close(store)
    return StoreSummary(
        path, check.exists, check.size, check.sealed, "", len(keys), decisions, entries
    )
