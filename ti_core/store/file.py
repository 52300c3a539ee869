"""The embedded store's file on disk: a checksummed snapshot, replaced atomically, never torn.

burner-redis writes a MessagePack snapshot with no checksum, and starts EMPTY when it cannot
read one (a later save then wipes the file). So the file we keep is burner-redis's snapshot
followed by a trailer (tag, length, SHA-256, end tag), checked before burner-redis sees a
byte: a truncated, bit-flipped or emptied file is refused and left as it is. A file without
the trailer (written by an older ``ti``) is accepted if burner-redis reads it.

A save writes a new private file, fsyncs it, hard-links the current file to ``store.dat.prev``
(the previous good copy, for ``ti store restore``), renames the new file over ``store.dat``
and fsyncs the directory: a crash at any point leaves the old or the new file. Every
``OSError`` of the embedded store becomes a ``StoreError`` here (:func:`store_failure`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ti_core.errors import ConfigError, StoreDamagedError, StoreError, one_line

__all__ = [
    "PREVIOUS_SUFFIX",
    "FileCheck",
    "check_file",
    "clean_leftovers",
    "damaged",
    "keep_private",
    "move_aside",
    "private_dir",
    "private_path",
    "replace_keeping_previous",
    "restore_previous",
    "seal",
    "store_failure",
]

PREVIOUS_SUFFIX = ".prev"
_TAG, _END = b"ti-store", b"TISTORE1"
_TRAILER = struct.Struct(">8sQ32s8s")  # tag, snapshot length, SHA-256 of the snapshot, end tag
_CHUNK = 1 << 20
_names = itertools.count()

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "a directory is in the way",
    errno.ENOTDIR: "a file is in the way of a directory",
    errno.ENOENT: "no such file or directory",
    errno.EMFILE: "too many open files",
}
_OS_ERROR = re.compile(r"os error (\d+)")


def store_failure(exc: BaseException, doing: str, where: Path) -> StoreError:
    """The one line for an ``OSError`` (ours or burner-redis's) while ``doing`` ``where``."""
    code = getattr(exc, "errno", None)
    if code is None:  # burner-redis raises OSError("IO error: ... (os error 28)")
        found = _OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    reason = _REASONS.get(code or -1) or one_line(exc, 160, typed=False)
    return StoreError(
        f"embedded store: cannot {doing} {where}: {reason}; the store file is "
        "unchanged (free space or fix the directory, or set TI_DATA_DIR or "
        "TI_REDIS_URL)"
    )


def _refuse_foreign(path: Path, st: os.stat_result) -> None:
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise ConfigError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): ti keeps its "
            "data private to its user; set TI_DATA_DIR to a directory of your own"
        )


def private_dir(path: Path) -> Path:
    """``path`` (created if missing) readable by this user only: 0700, whatever the umask.

    The data directory holds decisions (the store, Prefect's database) and the local
    server's credentials: a wider directory of ours is tightened, one of another user
    refused.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
        _refuse_foreign(path, st)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise store_failure(exc, "create the data directory", path) from exc
    return path


def keep_private(*paths: Path) -> None:
    """Make existing files of ours 0600 or narrower (missing ones stay missing); refuse another
    user's."""
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise store_failure(exc, "read", path) from exc
        _refuse_foreign(path, st)
        if stat.S_IMODE(st.st_mode) & 0o077:
            try:
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
            except OSError as exc:
                raise store_failure(exc, "make private", path) from exc


def damaged(path: Path, problem: str) -> StoreDamagedError:
    """The refusal for a store file that does not load: what is wrong, and that nothing was
    changed (the ``ti`` command adds how to recover with ``ti store``)."""
    return StoreDamagedError(f"embedded store {path} is damaged ({problem}); it was left as it is")


@dataclass(frozen=True)
class FileCheck:
    """What :func:`check_file` found: ``problem`` is empty when the file may be loaded."""

    path: Path
    exists: bool
    size: int = 0
    sealed: bool = False  # carries our checksum trailer (else: an older ti's plain snapshot)
    problem: str = ""


def _file_problem(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_size == 0:
        return "it is empty (0 bytes)"
    return ""


def check_file(path: Path, out: BinaryIO | None = None) -> FileCheck:
    """Check ``path``'s trailer and checksum, copying the snapshot to ``out`` if given.

    Reads in 1 MiB chunks (memory stays flat). Never writes to ``path``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileCheck(path, exists=False)
    except OSError as exc:
        raise store_failure(exc, "read", path) from exc
    problem = _file_problem(st)
    if problem:
        return FileCheck(path, True, st.st_size, problem=problem)
    try:
        with open(path, "rb") as f:
            return _copy_checked(path, f, st.st_size, out)
    except OSError as exc:
        raise store_failure(exc, "read", path) from exc


def _copy_checked(path: Path, f: BinaryIO, size: int, out: BinaryIO | None) -> FileCheck:
    trailer = b""
    if size >= _TRAILER.size:
        f.seek(size - _TRAILER.size)
        trailer = f.read(_TRAILER.size)
        f.seek(0)
    sealed = trailer.startswith(_TAG) and trailer.endswith(_END)
    length, digest = size, b""
    if sealed:
        _, length, digest, _ = _TRAILER.unpack(trailer)
        if length != size - _TRAILER.size:
            return FileCheck(
                path,
                True,
                size,
                True,
                f"its trailer records {length} bytes of "
                f"data, the file holds {size - _TRAILER.size}: truncated or extended",
            )
    hasher = hashlib.sha256()
    left = length
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        hasher.update(chunk)
        if out is not None:
            try:
                out.write(chunk)
            except OSError as exc:  # the private copy's disk, not the store's
                raise store_failure(exc, "copy to a private file", Path(out.name)) from exc
        left -= len(chunk)
    if left:
        return FileCheck(path, True, size, sealed, "it is shorter than when it was read")
    if sealed and hasher.digest() != digest:
        return FileCheck(
            path, True, size, True, "its checksum does not match: bytes changed after it was saved"
        )
    return FileCheck(path, True, size, sealed)


def seal(snapshot: Path) -> None:
    """Append the checksum trailer to a burner-redis snapshot and fsync it."""
    hasher = hashlib.sha256()
    with open(snapshot, "r+b") as f:
        length = 0
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            length += len(chunk)
        f.write(_TRAILER.pack(_TAG, length, hasher.digest(), _END))
        f.flush()
        os.fsync(f.fileno())


def private_path(path: Path, kind: str) -> Path:
    """``.store.dat.PID.N.KIND`` beside ``path``: a file only this process writes."""
    return path.with_name(f".{path.name}.{os.getpid()}.{next(_names)}.{kind}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_keeping_previous(new: Path, path: Path) -> None:
    """Make the sealed, fsynced ``new`` the store at ``path``; the old file becomes ``.prev``.

    Each step is a rename, so ``path`` always names a complete file (old or new).
    """
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if path.is_file():
        link = private_path(path, "prev")
        try:
            os.link(path, link)
        except OSError:  # no hard links here: a copy (the old file stays in place meanwhile)
            shutil.copyfile(path, link)
            os.chmod(link, 0o600)
        os.replace(link, previous)
    os.chmod(new, 0o600)  # burner-redis wrote it with the umask's mode: only its user reads it
    os.replace(new, path)
    _fsync_dir(path.parent)


def move_aside(path: Path) -> Path | None:
    """Rename ``path`` to ``path.damaged-YYYYMMDDTHHMMSSZ`` (kept, never deleted); the new name.

    Never over another moved-aside file: a name already taken in the same second gets
    ``-2``, ``-3``, ... (a restore then a reset within one second keep both files). The new
    name is made with a hard link, which fails rather than replace an existing file; where
    hard links are not available, a rename to a name checked free (callers hold the lock).
    """
    from datetime import UTC, datetime

    if not os.path.lexists(path):
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        for number in itertools.count(1):
            suffix = "" if number == 1 else f"-{number}"
            aside = path.with_name(f"{path.name}.damaged-{stamp}{suffix}")
            try:
                os.link(path, aside, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError:  # no hard links on this file system
                if os.path.lexists(aside):
                    continue
                os.rename(path, aside)
            else:
                os.unlink(path)
            break
        _fsync_dir(path.parent)
    except OSError as exc:
        raise store_failure(exc, "move aside", path) from exc
    return aside


def restore_previous(path: Path) -> Path | None:
    """Put a copy of ``path.prev`` in place of ``path`` (moved aside first); the aside name.

    The copy is fsynced and renamed in, so ``.prev`` stays as it is for another attempt.
    """
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    copy = private_path(path, "restore")
    try:
        shutil.copyfile(previous, copy)
        os.chmod(copy, 0o600)
        with open(copy, "rb+") as f:
            os.fsync(f.fileno())
        aside = move_aside(path)
        os.replace(copy, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            copy.unlink(missing_ok=True)
        raise store_failure(exc, "restore the previous copy to", path) from exc
    return aside


def clean_leftovers(path: Path) -> list[Path]:
    """Remove the private files of processes that held the lock and died (call holding it)."""
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
