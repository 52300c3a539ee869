"""Saves of the embedded store are atomic and durable; readers never write; recovery works.

- A writer killed with SIGKILL at random moments (many times): the file always loads, with
  the last completed save or the one in progress, never a mix; the next lock holder removes
  what the killed process left.
- ``ti tail`` and the one-shot readers running for seconds leave the file as it is.
- Every save keeps the previous file as ``store.dat.prev``; ``ti store restore|reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from flows.cli import main
from tests.store_damage import ROOT, damage, fingerprint, publish_store, single_error_line
from tests.test_cli_tail import Running
from ti_core import TiSettings, connect
from ti_core.store.load import empty_and_close, load_snapshot

WRITER = textwrap.dedent("""
    import asyncio, os, sys
    from ti_core import connect

    BLOB = os.urandom(400_000).hex()  # ~800 KB: a save takes long enough to be hit

    async def write():
        async with connect() as c:
            generation = int(await c.get("gen") or 0)
        while True:
            generation += 1
            async with connect() as c:
                await c.set("gen", str(generation))
                await c.set("blob", f"{generation}:{BLOB}")
            print(generation, flush=True)  # saved: the file holds this generation

    # One writer per line read, forked from here with Python and ti_core already loaded
    # (a new interpreter per writer cost more than the writing); the test SIGKILLs it.
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            asyncio.run(write())
            os._exit(0)
        print("pid", pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)  # after whatever the writer printed
""")


def _started(lines: list[str]) -> bool:
    """The writer's pid and its first completed save are both printed (in either order)."""
    return any(line.startswith("pid ") for line in lines) and len(lines) >= 2


def _lines_until(stream: IO[str], done: Callable[[list[str]], bool]) -> list[str]:
    lines: list[str] = []
    while not done(lines):
        line = stream.readline()
        assert line, f"the writer process ended: {lines}"
        lines.append(line.strip())
    return lines


async def _read_generation(store_file: Path, scratch: Path) -> tuple[int, str]:
    store, _ = load_snapshot(store_file, scratch)
    try:
        gen, blob = await store.get("gen"), await store.get("blob")
    finally:
        await empty_and_close(store)
    return int(gen or 0), (blob or b"0:").decode().split(":", 1)[0]


@pytest.mark.slow
def test_sigkill_at_random_points_of_saves_leaves_old_or_new_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "ti-data"
    env = {**os.environ, "TI_DATA_DIR": str(data_dir)}
    rng = random.Random(7)
    last_saved = 0
    with subprocess.Popen(
        [sys.executable, "-c", WRITER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as forker:
        assert forker.stdin is not None and forker.stdout is not None
        pid = 0
        try:
            for attempt in range(20):
                forker.stdin.write("write\n")
                forker.stdin.flush()
                # its pid, and one save done: now kill somewhere in later ones
                started = _lines_until(forker.stdout, _started)
                (pid,) = [int(line.split()[1]) for line in started if line.startswith("pid ")]
                time.sleep(rng.uniform(0.0, 0.6))
                os.kill(pid, signal.SIGKILL)
                rest = _lines_until(forker.stdout, lambda got: got[-1:] == ["reaped"])
                pid = 0
                printed = [line for line in started + rest[:-1] if not line.startswith("pid ")]
                last_saved = int(printed[-1])
                gen, blob_gen = asyncio.run(
                    _read_generation(data_dir / "store.dat", tmp_path / f"load-{attempt}")
                )
                assert gen in (last_saved, last_saved + 1), (attempt, gen, last_saved)
                assert blob_gen == str(gen), "a torn store: keys from two different saves"
            forker.stdin.close()
            assert forker.wait(timeout=30) == 0
        finally:
            if forker.poll() is None:  # a failed check: stop the writer, then the forker
                if pid:
                    with contextlib.suppress(ProcessLookupError):  # keep the real failure
                        os.kill(pid, signal.SIGKILL)
                forker.kill()
    leftovers = [p.name for p in data_dir.iterdir() if p.name.startswith(".")]

    async def next_holder() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir)) as client:
            assert int(await client.get("gen")) >= last_saved

    asyncio.run(next_holder())
    assert not [p.name for p in data_dir.iterdir() if p.name.startswith(".")], leftovers
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "store.dat",
        "store.dat.prev",
        "store.lock",
    ]


def test_a_killed_writers_private_files_are_removed_by_the_next_lock_holder(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "ti-data"
    publish_store(data_dir, 3)
    stale = [data_dir / ".store.dat.4242.0.work", data_dir / ".store.dat.4242.1.new.tmp"]
    stale[0].mkdir()
    (stale[0] / "snapshot").write_bytes(b"x" * 1000)
    stale[1].write_bytes(b"partial")

    async def read_only() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir), readonly=True):
            pass

    asyncio.run(read_only())  # a reader does not clean (it holds no lock): still there
    assert all(p.exists() for p in stale)
    publish_store(data_dir, 4)
    assert not any(p.exists() for p in stale)


def test_every_save_keeps_the_previous_file_and_restore_brings_it_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "ti-data"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    publish_store(data_dir, 5)
    first = (data_dir / "store.dat").read_bytes()
    publish_store(data_dir, 6)  # one more decision (T5)
    assert (data_dir / "store.dat.prev").read_bytes() == first
    assert main(["get", "T5", "2026-01-05"]) == 0
    capsys.readouterr()

    assert main(["store", "restore"]) == 1  # store.dat loads: refused without --force
    assert "--force" in single_error_line(capsys.readouterr().err)
    damage(data_dir / "store.dat", "bit_flips")
    damaged = (data_dir / "store.dat").read_bytes()
    assert main(["store", "restore"]) == 0
    assert "restored" in capsys.readouterr().out
    assert (data_dir / "store.dat").read_bytes() == first
    aside = [p for p in data_dir.iterdir() if p.name.startswith("store.dat.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert main(["get", "T4", "2026-01-05"]) == 0  # the restored copy: T5 came later
    assert main(["get", "T5", "2026-01-05"]) == 1


def test_reset_needs_yes_moves_the_file_aside_and_starts_empty(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "ti-data"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    publish_store(data_dir, 3)
    damage(data_dir / "store.dat", "truncated")
    kept = (data_dir / "store.dat").read_bytes()
    assert main(["store", "reset"]) == 1
    assert "--yes" in single_error_line(capsys.readouterr().err)
    assert (data_dir / "store.dat").read_bytes() == kept
    assert main(["store", "reset", "--yes"]) == 0
    assert not (data_dir / "store.dat").exists()
    aside = [p for p in data_dir.iterdir() if p.name.startswith("store.dat.damaged-")]
    assert [p.read_bytes() for p in aside] == [kept]
    assert main(["store", "check"]) == 0
    assert "absent" in capsys.readouterr().out
    publish_store(data_dir, 2)  # writable again
    assert main(["get", "T1", "2026-01-05"]) == 0


def _readers_for(seconds: float) -> int:
    """Run the one-shot read commands in turn for ``seconds``; how many ran."""
    commands = [
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
    runs, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline or runs < len(commands):
        assert main(commands[runs % len(commands)]) == 0
        runs += 1
    return runs


@pytest.mark.slow  # readers run for 3 s
def test_read_commands_never_write_the_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "ti-data"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    publish_store(data_dir, 30)
    listing = sorted(p.name for p in data_dir.iterdir())
    before = fingerprint(data_dir / "store.dat")
    assert _readers_for(3.0) >= 5
    capsys.readouterr()
    assert fingerprint(data_dir / "store.dat") == before
    assert sorted(p.name for p in data_dir.iterdir()) == listing


@pytest.mark.slow  # readers run for seconds
def test_ti_tail_on_the_embedded_store_does_not_rewrite_it(tmp_path: Path) -> None:
    """Seconds of polling: same bytes and mtime; a new decision still shows up."""
    data_dir = tmp_path / "ti-data"
    envelopes = publish_store(data_dir, 30)
    env = {**os.environ, "TI_DATA_DIR": str(data_dir)}
    store = data_dir / "store.dat"
    before, listing = fingerprint(store), sorted(p.name for p in data_dir.iterdir())
    with Running([sys.executable, "-m", "flows.cli", "tail", "--from-start"], env) as tail:
        lines = [tail.line(timeout=60) for _ in envelopes]
        assert all(" T" in line for line in lines)
        time.sleep(3.0)  # three polls at least, nothing new: nothing may be written
        assert fingerprint(store) == before
        assert sorted(p.name for p in data_dir.iterdir()) == listing
        more: Any = publish_store(data_dir, 31)[-1]  # a writer saves T0 of a later day
        assert more.decision.target.trade_date in tail.line(timeout=60)
        after = fingerprint(store)
        time.sleep(2.0)
        assert fingerprint(store) == after
        code, err = tail.stop()
    assert code == 0 and "Traceback" not in err


def test_a_store_past_the_size_limit_warns_once_pointing_at_redis(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("ti_core.store.embedded.LARGE_STORE_BYTES", 10_000)
    publish_store(tmp_path / "ti-data", 5)
    publish_store(tmp_path / "ti-data", 6)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ti_core.embedded"]
    assert len(warnings) == 1 and "set TI_REDIS_URL" in warnings[0], warnings


def test_ti_store_help_explains_the_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["store", "--help"])
    text = capsys.readouterr().out
    for phrase in ("store.dat.prev", "ti store restore", "ti store reset --yes", "damaged-"):
        assert phrase in text


def test_a_store_from_an_older_ti_without_checksum_is_read_then_sealed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before the trailer existed, store.dat was burner-redis's plain snapshot."""
    from ti_core.store.file import check_file

    data_dir = tmp_path / "ti-data"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    publish_store(data_dir, 3)
    store = data_dir / "store.dat"
    store.write_bytes(store.read_bytes()[:-56])  # strip the trailer: an older ti's file
    assert not check_file(store).sealed
    assert main(["store", "check"]) == 0
    assert "no checksum (written by an older ti)" in capsys.readouterr().out
    assert main(["get", "T1", "2026-01-05"]) == 0
    publish_store(data_dir, 4)
    assert check_file(store).sealed
    assert main(["get", "T3", "2026-01-05"]) == 0
