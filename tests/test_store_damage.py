"""A damaged embedded store is refused by every command and left byte for byte as it is.

The corruption matrix: truncated, bit flips, emptied, random bytes, a directory in its place
x every command that opens the store. Each must exit non-zero with one ``ti:`` line naming
the file, and leave it untouched (bytes, inode, mtime). Commands that start Prefect (``run``,
``backfill``) must refuse before Prefect is even imported: they run in a new process that
reports it. The others run in this process through ``flows.cli.main``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from tests.store_damage import (
    DAMAGES,
    copy_store,
    damage,
    fingerprint,
    publish_store,
    run_cli_each,
    single_error_line,
)

READERS = {
    "get": ["get", "T1", "2026-01-05"],
    "get --json": ["get", "T1", "2026-01-05", "--json"],
    "status": [
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
    "verify": ["verify"],
    "lag": ["lag"],
    "tail": ["tail", "--from-start"],
    "store check": ["store", "check"],
}
PREFECT_COMMANDS = {
    "run": ["run", "T1", "--date", "2026-01-05", "--arena", "demo"],
    "backfill": [
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
}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding a store of 30 decisions, written once for the module."""
    data_dir = tmp_path_factory.mktemp("good") / "ti-data"
    publish_store(data_dir, 30)
    return data_dir


def _damaged(good_store: Path, tmp_path: Path, kind: str) -> tuple[Path, Path]:
    data_dir = tmp_path / "damaged"
    store = copy_store(good_store, data_dir)
    damage(store, kind)
    return data_dir, store


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("command", list(READERS))
def test_read_commands_refuse_a_damaged_store_and_leave_it_untouched(
    good_store: Path,
    tmp_path: Path,
    kind: str,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir, store = _damaged(good_store, tmp_path, kind)
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    before = fingerprint(store)
    assert main(READERS[command]) != 0
    line = single_error_line(capsys.readouterr().err)
    assert str(store) in line and "damaged" in line, line
    assert "ti store" in line
    assert fingerprint(store) == before


@pytest.mark.parametrize("command", list(PREFECT_COMMANDS))
def test_publishing_commands_refuse_a_damaged_store_before_starting_prefect(
    good_store: Path,
    tmp_path: Path,
    command: str,
) -> None:
    """One new process per command runs it on each damage in turn (process starts are slow)."""
    damaged = {kind: _damaged(good_store, tmp_path / kind, kind) for kind in DAMAGES}
    before = {kind: fingerprint(store) for kind, (_, store) in damaged.items()}
    runs = run_cli_each(PREFECT_COMMANDS[command], [d for d, _ in damaged.values()])
    for (kind, (data_dir, store)), run in zip(damaged.items(), runs, strict=True):
        assert run["rc"] != 0, kind
        line = single_error_line(run["stderr"])
        assert str(store) in line and "damaged" in line, line
        assert run["prefect"] is False, kind
        assert fingerprint(store) == before[kind], kind
        assert sorted(p.name for p in data_dir.iterdir()) == ["store.dat", "store.lock"]


def test_the_good_store_passes_every_read_command(
    good_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The control of the matrix: the same commands on the undamaged copy succeed."""
    data_dir = tmp_path / "fine"
    store = copy_store(good_store, data_dir)
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    before = fingerprint(store)
    for command in ("get", "get --json", "status", "verify", "lag", "store check"):
        assert main(READERS[command]) == 0, command
    out = capsys.readouterr()
    assert "T1 2026-01-05: BUY" in out.out
    assert "loads" in out.out and "30 decisions" in out.out
    assert fingerprint(store) == before


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_writer_in_process_refuses_and_never_saves_over_it(
    good_store: Path,
    tmp_path: Path,
    kind: str,
) -> None:
    """connect() itself raises StoreDamagedError; no exit-time save touches the file later."""
    import asyncio

    from ti_core import TiSettings, connect
    from ti_core.errors import StoreDamagedError

    data_dir, store = _damaged(good_store, tmp_path, kind)
    before = fingerprint(store)

    async def write() -> None:
        async with connect(settings=TiSettings(data_dir=data_dir)) as client:
            await client.set("x", "1")

    with pytest.raises(StoreDamagedError, match="is damaged .*; it was left as it is$"):
        asyncio.run(write())
    assert fingerprint(store) == before


def test_no_exit_time_save_touches_a_refused_store(good_store: Path, tmp_path: Path) -> None:
    """burner-redis saves every store it made when the interpreter exits: a process that
    read a good store, then was refused a damaged one, exits without writing either."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.store_damage import ROOT

    good = copy_store(good_store, tmp_path / "good")
    data_dir, store = _damaged(good_store, tmp_path, "bit_flips")
    before = {store: fingerprint(store), good: fingerprint(good)}
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from ti_core import TiSettings, connect
        from ti_core.errors import StoreDamagedError

        async def main():
            async with connect(settings=TiSettings(data_dir=Path({str(good.parent)!r})),
                               readonly=True) as c:
                assert await c.xlen("maf:arena:trading_intelligence:output") == 30
            try:
                async with connect(settings=TiSettings(data_dir=Path({str(data_dir)!r}))):
                    pass
            except StoreDamagedError:
                print("refused")

        asyncio.run(main())
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "refused" and not done.stderr.strip(), done.stderr
    assert {p: fingerprint(p) for p in before} == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["store.dat"]
