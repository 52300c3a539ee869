"""One answer to "a Redis server or the embedded store?": ``TiSettings.uses_server``.

Every caller follows it: ``connect`` opens the embedded store only when it is False, and the
store's checks (``check_store`` before ``ti run``/``daily``/``backfill``, ``ti store``) apply
only then. The bug this guards against: with Sentinels configured (no ``TI_REDIS_URL``) a
damaged ``store.dat`` in the data directory made ``ti run``, ``ti daily`` and ``ti backfill``
refuse because of a store they never use.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tests.redisproc import free_port
from tests.store_damage import fingerprint, run_cli, single_error_line
from ti_core.errors import StoreDamagedError
from ti_core.settings import TiSettings
from ti_core.store.embedded import check_store, embedded_store_path
from ti_core.store.embedded_client import EmbeddedClient
from ti_core.transport.connection import connect

SENTINELS = {"redis_sentinels": "127.0.0.1:1", "redis_sentinel_master": "prod"}
CONFIGS: dict[str, dict[str, Any]] = {
    "embedded": {},
    "url": {"redis_url": "redis://127.0.0.1:1/0"},
    "sentinels": SENTINELS,
}


def _damaged_store(data_dir: Path) -> Path:
    """A ``store.dat`` that does not load (no trailer, no checksum: random text)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = data_dir / "store.dat"
    store.write_bytes(b"not a store at all\n" * 50)
    return store


@pytest.mark.parametrize("config", list(CONFIGS))
async def test_the_store_check_and_connect_follow_the_one_predicate(
    config: str, tmp_path: Path
) -> None:
    """A damaged store.dat is refused exactly when the embedded store would be used; with a
    server configured, neither the check nor ``connect`` opens, writes or creates anything in
    the data directory."""
    data_dir = tmp_path / "data"
    store = _damaged_store(data_dir)
    settings = TiSettings(data_dir=data_dir, retries=0, **CONFIGS[config])
    assert embedded_store_path(settings) == store
    before = fingerprint(store)
    assert settings.uses_server is (config != "embedded")
    if not settings.uses_server:
        with pytest.raises(StoreDamagedError):
            check_store(settings)
        with pytest.raises(StoreDamagedError):
            async with connect(settings=settings):
                pass
    else:
        check_store(settings)  # not the store this configuration uses: no refusal
        check_store(settings, write=False)
        async with connect(settings=settings) as client:  # no command: no network either
            assert not isinstance(client, EmbeddedClient)
        async with connect(settings=settings, readonly=True) as client:
            assert not isinstance(client, EmbeddedClient)
    assert fingerprint(store) == before
    expected = ["store.dat"] if settings.uses_server else ["store.dat", "store.lock"]
    assert sorted(p.name for p in data_dir.iterdir()) == expected


def test_run_and_daily_prepare_past_a_damaged_store_they_do_not_use(tmp_path: Path) -> None:
    """``ti run`` and ``ti daily`` share this preflight (before Prefect): with Sentinels it
    passes a damaged store.dat; with the embedded store it refuses it."""
    from flows.cmd_run import _prepare

    data_dir = tmp_path / "data"
    store = _damaged_store(data_dir)
    args = argparse.Namespace(arena="demo")
    sentinel = TiSettings(data_dir=data_dir, allow_demo_publish=True, **SENTINELS)
    _prepare(args, sentinel)
    with pytest.raises(StoreDamagedError):
        _prepare(args, TiSettings(data_dir=data_dir))
    assert sorted(p.name for p in data_dir.iterdir()) == ["store.dat", "store.lock"]
    assert store.read_bytes().startswith(b"not a store")


def test_store_check_with_sentinels_says_a_server_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What it says for TI_REDIS_URL, naming the variable that is set: not "DAMAGED"."""
    data_dir = tmp_path / "data"
    store = _damaged_store(data_dir)
    before = fingerprint(store)
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TI_REDIS_SENTINELS", "127.0.0.1:1")
    monkeypatch.setenv("TI_REDIS_SENTINEL_MASTER", "prod")
    assert main(["store", "check"]) != 0
    line = single_error_line(capsys.readouterr().err)
    assert line == (
        "ti: ti store works on the embedded store; TI_REDIS_SENTINELS is set "
        "(sentinel:prod@127.0.0.1:1): unset it to use these commands"
    )
    monkeypatch.delenv("TI_REDIS_SENTINELS")
    monkeypatch.delenv("TI_REDIS_SENTINEL_MASTER")
    monkeypatch.setenv("TI_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["store", "check"]) != 0
    assert "; TI_REDIS_URL is set (redis://127.0.0.1:1/0)" in capsys.readouterr().err
    assert fingerprint(store) == before


def test_backfill_with_sentinels_goes_to_the_server_not_the_damaged_store(
    tmp_path: Path,
) -> None:
    """The command as users run it (a new process): it gets past the store check and fails
    on the unreachable Sentinel, naming it, before Prefect is imported."""
    data_dir = tmp_path / "data"
    store = _damaged_store(data_dir)
    before = fingerprint(store)
    sentinel = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = run_cli(
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
            "--dry-run",
        ],
        data_dir,
        TI_REDIS_SENTINELS=sentinel,
        TI_REDIS_SENTINEL_MASTER="prod",
        TI_REDIS_FAILOVER_WAIT="0",
        TI_RETRIES="0",
    )
    assert done.returncode != 0
    line = single_error_line(done.stderr)
    assert line.startswith("ti: Redis at sentinel:prod ") and "unavailable" in line, line
    assert "damaged" not in line and str(store) not in line
    assert done.stdout.strip().splitlines()[-1] == "PREFECT_IMPORTED=False"
    assert fingerprint(store) == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["store.dat"]
