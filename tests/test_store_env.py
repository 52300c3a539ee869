"""The embedded store on a hostile machine: full disk, read-only or missing directory, a lock
held too long. Every command answers in one line (or just works, for readers), never a
traceback, and the store file is left as it is.

Full disk and read-only use a real 1 MiB tmpfs (the tests run as root in CI); they are skipped
with the reason when ``mount`` is refused.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from tests.store_damage import fingerprint, publish_store, run_cli_each, single_error_line
from tests.test_cli_tail import Running
from ti_core import TiSettings, connect
from ti_core.errors import StoreError
from ti_core.store.file import store_failure

READERS = [
    ["get", "T1", "2026-01-05"],
    ["verify"],
    ["lag"],
    ["store", "check"],
    [
        "status",
        "--tickers",
        "T0,T1",
        "--start",
        "2026-01-05",
        "--end",
        "2026-01-07",
        "--calendar",
        "weekdays",
    ],
]
PUBLISHERS = [
    ["run", "T1", "--date", "2026-01-05", "--arena", "demo"],
    [
        "backfill",
        "--tickers",
        "T1",
        "--start",
        "2026-01-05",
        "--end",
        "2026-01-06",
        "--arena",
        "demo",
        "--calendar",
        "weekdays",
    ],
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> None:
    try:
        with open(directory / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


def _readers_work(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    for args in READERS:
        assert main(args) == 0, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and not err.strip(), (args, err)
    with Running(
        [sys.executable, "-m", "flows.cli", "tail", "--from-start"],
        {**os.environ, "TI_DATA_DIR": str(data_dir)},
    ) as tail:
        assert "T0" in tail.line(timeout=60)
        code, err = tail.stop()
    assert code == 0 and not err.strip()


def _writers_refuse(data_dir: Path, reason: str) -> None:
    """An in-process writer and both Prefect commands: one line naming ``reason``."""
    store = data_dir / "store.dat"
    before = fingerprint(store)

    async def write() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir)) as client:
            await client.set("x", "1")

    with pytest.raises(StoreError, match=reason):
        asyncio.run(write())
    for args in PUBLISHERS:
        (run,) = run_cli_each(args, [data_dir])
        assert run["rc"] == 1 and reason in single_error_line(run["stderr"]), run
        assert run["prefect"] is False
    assert fingerprint(store) == before
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # a child ti per command
def test_full_disk_readers_work_writers_say_so_in_one_line(
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = small_disk / "ti-data"
    publish_store(data_dir, 20)
    _fill(small_disk)
    _readers_work(data_dir, monkeypatch, capsys)
    _writers_refuse(data_dir, "no space left on the device")


def test_a_save_that_hits_a_full_disk_leaves_the_old_file(small_disk: Path) -> None:
    """The disk fills between the check and the save: the save fails, the old file stays."""
    data_dir = small_disk / "ti-data"
    publish_store(data_dir, 20)
    store = data_dir / "store.dat"
    before = fingerprint(store)

    async def grow() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir)) as client:
            _fill(small_disk)  # after the load: only the save needs room now
            await client.set("blob", "x" * 300_000)

    with pytest.raises(StoreError, match="cannot save .*no space left on the device"):
        asyncio.run(grow())
    assert fingerprint(store) == before
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]


def test_read_only_data_dir_readers_work_writers_say_so_in_one_line(
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = small_disk / "ti-data"
    publish_store(data_dir, 20)
    done = subprocess.run(
        ["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
    _readers_work(data_dir, monkeypatch, capsys)
    _writers_refuse(data_dir, "the file system is read-only")


def test_a_data_dir_that_cannot_exist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TI_DATA_DIR under a regular file: readers and writers say why, in one line."""
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "ti"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    for args in (["get", "T1", "2026-01-05"], ["verify"], ["store", "reset", "--yes"]):
        assert main(args) == 1
        assert "a file is in the way" in single_error_line(capsys.readouterr().err)
    (run,) = run_cli_each(PUBLISHERS[0], [data_dir])
    assert run["rc"] == 1 and "a file is in the way" in single_error_line(run["stderr"])


def test_a_lock_held_too_long_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "ti-data"
    publish_store(data_dir, 2)
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    monkeypatch.setattr("ti_core.store.embedded._LOCK_WAIT_SECONDS", 0.3)
    fd = os.open(data_dir / "store.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process, as far as flock is concerned
    try:
        assert main(["store", "reset", "--yes"]) == 1
        assert "stayed locked by another process" in single_error_line(capsys.readouterr().err)
        assert main(["get", "T1", "2026-01-05"]) == 0  # readers take no lock
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only"),
        (errno.EISDIR, "a directory is in the way"),
    ],
)
def test_os_errors_map_to_one_store_error_line(code: int, reason: str) -> None:
    """Root ignores file modes, so "permission denied" is checked at the one mapping place;
    burner-redis's own OSError carries the errno only in its text."""
    ours = store_failure(OSError(code, os.strerror(code)), "save", Path("/d/store.dat"))
    burners = store_failure(OSError(f"IO error: x (os error {code})"), "save", Path("/d"))
    for error in (ours, burners):
        assert reason in str(error) and "\n" not in str(error)
