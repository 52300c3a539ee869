"""Reports that equal what Redis holds (issue 22, finding 5): after an out-of-memory failure,
``--only failed`` does not count unpublished items as done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redisproc import RedisProcess
from ti_core.arenas.registry import load_arena
from ti_core.backfill.runner import backfill_batch, plan_items
from ti_core.contract.keys import DEFAULT_STREAM_NAME, failure_key
from ti_core.transport.connection import open_redis
from ti_core.transport.retry import RetryPolicy, redis_policy

pytestmark = pytest.mark.redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server of this test's own: its memory limit is changed."""
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.stop()


async def test_after_out_of_memory_only_failed_reports_the_unrecorded_items_as_not_published(
    own_redis: RedisProcess,
) -> None:
    client: Any = open_redis(own_redis.url)
    items = list(plan_items(["NVDA", "AAPL"], ["2026-05-11", "2026-05-12"]))
    runner = load_arena("demo")
    fast = {"retry": RetryPolicy(retries=0, delay=0.001), "redis": redis_policy(0.2)}
    try:
        await client.config_set("maxmemory", "1")  # every write refused: OOM
        first = await backfill_batch(client, runner, items, **fast)
        assert [o.failed for o in first.outcomes] == [True] * 4
        assert all("memory" in (o.error or "") for o in first.outcomes)
        # Redis refused the failure records as well: there is nothing for --only failed to find
        assert not await client.exists(failure_key(DEFAULT_STREAM_NAME))
        await client.config_set("maxmemory", "0")
        retried = await backfill_batch(client, runner, items, only="failed", **fast)
        assert (retried.skipped, retried.skipped_unpublished, retried.outcomes) == (4, 4, [])
        again = await backfill_batch(client, runner, items, only="missing", **fast)
        assert [o.status for o in again.outcomes] == ["published"] * 4
        done = await backfill_batch(client, runner, items, only="failed", **fast)
        assert (done.skipped, done.skipped_unpublished) == (4, 0)
    finally:
        await client.aclose()


async def test_a_replica_shortfall_says_the_decision_is_on_the_primary_and_visible(
    redis_url: str,
) -> None:
    """A lone server has no replica: the write is on the primary (a consumer reads it) and
    the error says exactly that, not "not published"."""
    from tests.publish_workload import envelope
    from ti_core import get_decision, publish_many
    from ti_core.errors import ReplicaAckError
    from ti_core.settings import TiSettings
    from ti_core.transport.connection import connect

    env = envelope(verdict="SELL", confidence=0.61)
    async with connect(redis_url, settings=TiSettings(min_replicas=1, replica_timeout=0.1)) as c:
        with pytest.raises(ReplicaAckError) as caught:
            await publish_many(c, [env])
    text = str(caught.value)
    assert "written to the primary; consumers may see it; not acknowledged by 1 replicas" in text
    assert "not published" not in text and "not counted" not in text
    async with connect(redis_url, settings=TiSettings()) as consumer:
        seen = await get_decision(consumer, "NVDA", "2026-05-11")
    assert seen is not None and seen.correlation_id == env.correlation_id


@pytest.mark.slow  # a child ti and the Prefect test server
@pytest.mark.prefect
def test_ti_run_with_a_replica_shortfall_does_not_say_not_published(
    tmp_path: Path, prefect_harness: None, redis_url: str
) -> None:
    import redis
    from prefect.settings import PREFECT_API_URL

    from tests.test_cli_run import clean_env, ti
    from ti_core.contract.keys import decision_hash_key

    env = clean_env(
        tmp_path,
        TI_REDIS_URL=redis_url,
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        TI_MIN_REPLICAS="1",
        TI_REPLICA_TIMEOUT="0.1",
        TI_TASK_RETRIES="0",
    )
    out = ti("run", "AAPL", "--date", "2026-05-11", "--allow-demo", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "consumers may see it; not acknowledged by 1 replicas" in out.stderr, out.stderr
    assert "not published" not in out.stderr
    with redis.Redis.from_url(redis_url) as client:  # what consumers see: the decision
        assert client.exists(decision_hash_key("AAPL", "2026-05-11")) == 1


def test_a_symlinked_store_is_written_through_and_the_link_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from tests.store_damage import publish_store

    data_dir, elsewhere = tmp_path / "ti-data", tmp_path / "bigdisk"
    data_dir.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    link = data_dir / "store.dat"
    link.symlink_to(elsewhere / "decisions.dat")  # dangling until the first save
    publish_store(data_dir, 3)
    publish_store(data_dir, 4)  # a second save: the first becomes the previous copy
    assert link.is_symlink() and link.readlink() == elsewhere / "decisions.dat"
    assert (elsewhere / "decisions.dat").is_file()
    assert (elsewhere / "decisions.dat.prev").is_file()
    assert main(["get", "T3", "2026-01-05"]) == 0
    capsys.readouterr()
    assert main(["store", "reset", "--yes"]) == 0  # moves the target aside; the link stays
    assert link.is_symlink() and not (elsewhere / "decisions.dat").exists()
    assert len(list(elsewhere.glob("decisions.dat.damaged-*"))) == 1
    publish_store(data_dir, 1)
    assert link.is_symlink() and (elsewhere / "decisions.dat").is_file()


def test_restore_then_reset_within_a_second_keeps_both_moved_aside_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from tests.store_damage import damage, publish_store

    data_dir = tmp_path / "ti-data"
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    publish_store(data_dir, 3)
    publish_store(data_dir, 4)
    damage(data_dir / "store.dat", "truncated")
    damaged = (data_dir / "store.dat").read_bytes()
    assert main(["store", "restore"]) == 0
    restored = (data_dir / "store.dat").read_bytes()
    assert main(["store", "reset", "--yes"]) == 0
    capsys.readouterr()
    aside = sorted(data_dir.glob("store.dat.damaged-*"))
    assert sorted(p.read_bytes() for p in aside) == sorted([damaged, restored])


def test_moving_aside_never_replaces_a_file_of_the_same_second(tmp_path: Path) -> None:
    """Every name this second (and the next two) already taken: a new one is made."""
    from datetime import UTC, datetime, timedelta

    from ti_core.store.file import move_aside

    store = tmp_path / "store.dat"
    store.write_bytes(b"current")
    now = datetime.now(UTC)
    taken = []
    for seconds in range(3):
        stamp = (now + timedelta(seconds=seconds)).strftime("%Y%m%dT%H%M%SZ")
        name = tmp_path / f"store.dat.damaged-{stamp}"
        name.write_bytes(f"earlier {seconds}".encode())
        taken.append(name)
    aside = move_aside(store)
    assert aside is not None and aside not in taken and aside.read_bytes() == b"current"
    assert [p.read_bytes() for p in taken] == [f"earlier {s}".encode() for s in range(3)]
    assert not store.exists()


@pytest.fixture(scope="module")
def guarded_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A primary and one Sentinel that requires a password (``sent-pw``): its port."""
    import redis

    from tests.sentinel_cluster import SentinelProcess

    tmp = tmp_path_factory.mktemp("guarded")
    server = RedisProcess(tmp / "primary").start()
    sentinel = SentinelProcess(tmp / "sentinel", server.port, 1000, 3000, "requirepass sent-pw")

    def client() -> redis.Redis:
        return redis.Redis(
            port=sentinel.port, password="sent-pw", socket_timeout=1, socket_connect_timeout=1
        )

    sentinel.client = client  # type: ignore[method-assign]  # its pings need the password
    try:
        sentinel.start()
        yield sentinel.port
    finally:
        sentinel.stop()
        server.stop()


SENTINEL_MISTAKES = {
    "missing-password": ({}, "requires a password: set TI_REDIS_SENTINEL_PASSWORD"),
    "wrong-password": (
        {"redis_sentinel_password": "wrong-pw"},
        "refused TI_REDIS_SENTINEL_PASSWORD",
    ),
    "tls-against-plain": (
        {"redis_sentinel_password": "sent-pw", "redis_tls": True},
        "speaks plain text, not TLS",
    ),
    "missing-ca": (
        {
            "redis_sentinel_password": "sent-pw",
            "redis_tls": True,
            "redis_tls_ca_certs": "/nope.pem",
        },
        "TI_REDIS_TLS_CA_CERTS /nope.pem cannot be used as a CA bundle",
    ),
}


@pytest.mark.parametrize(
    ("mistake", "says"), list(SENTINEL_MISTAKES.values()), ids=list(SENTINEL_MISTAKES)
)
async def test_sentinel_misconfigurations_are_configuration_errors_not_outages(
    guarded_sentinel: int, mistake: dict[str, Any], says: str
) -> None:
    """Each is a ``ConfigError`` on the first attempt (never retried), where it was
    ``RedisUnavailableError`` once ``TI_REDIS_FAILOVER_WAIT`` had passed."""
    from tests.sentinel_cluster import SERVICE
    from ti_core.errors import ConfigError
    from ti_core.settings import TiSettings
    from ti_core.transport.connection import connect

    base = {
        "redis_sentinels": f"127.0.0.1:{guarded_sentinel}",
        "redis_sentinel_master": SERVICE,
        "redis_failover_wait": 2.0,
        "connect_timeout": 0.5,
    }
    with pytest.raises(ConfigError) as caught:
        async with connect(settings=TiSettings(**base, **mistake)) as client:
            await client.ping()
    assert says in str(caught.value)
    assert "wrong-pw" not in str(caught.value) and "sent-pw" not in str(caught.value)
    async with connect(settings=TiSettings(**base, redis_sentinel_password="sent-pw")) as client:
        assert await client.ping()  # the same Sentinel, configured right


@pytest.mark.parametrize(
    "listed",
    [":s3cret-pw@127.0.0.1:26379", "user:s3cret-pw@127.0.0.1:26379", "s3cret-pw%40127.0.0.1:26379"],
)
def test_credentials_in_the_sentinel_list_are_refused_and_never_printed(
    listed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from flows.pipeline import where_written
    from ti_core.errors import ConfigError
    from ti_core.settings import TiSettings
    from ti_core.transport.sentinel import sentinel_target

    settings = TiSettings(redis_sentinels=f"10.0.0.5:26379,{listed}", redis_sentinel_master="prod")
    assert "s3cret-pw" not in where_written(settings)  # what events and run lines carry
    assert "10.0.0.5:26379,***@" in settings.redis_url_redacted()
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        sentinel_target(settings)
    assert "s3cret-pw" not in str(caught.value)
    monkeypatch.setenv("TI_REDIS_SENTINELS", listed)
    monkeypatch.setenv("TI_REDIS_SENTINEL_MASTER", "prod")
    monkeypatch.setenv("TI_REDIS_FAILOVER_WAIT", "0")
    monkeypatch.setenv("TI_RETRIES", "0")
    assert main(["get", "NVDA", "2026-05-11"]) == 1
    out = capsys.readouterr()
    assert "carries credentials" in out.err and "s3cret-pw" not in out.err + out.out


def test_a_dry_run_over_two_centuries_is_refused_at_once_naming_its_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1900-2100 x 1,000 tickers: 52 million items, refused before anything is read (it ran
    for 11 minutes, silent, its memory growing)."""
    from flows.cli import main

    tickers = ",".join(f"T{i}" for i in range(1000))
    span = ["--start", "1900-01-01", "--end", "2100-12-31", "--calendar", "weekdays"]
    assert main(["backfill", "--tickers", tickers, *span, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "a dry run of 52,440,000 items (52,440 sessions x 1,000 tickers)" in err
    assert "over the limit of 1,000,000" in err and "--max-items" in err


def test_a_dry_run_prints_its_size_then_an_estimate_and_takes_a_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    tickers = ",".join(f"T{i}" for i in range(120))
    span = ["--start", "2026-01-01", "--end", "2026-05-31", "--calendar", "weekdays"]
    assert main(["backfill", "--tickers", tickers, *span, "--dry-run"]) == 0
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert lines[0] == "dry run: reading 12,840 items (107 sessions x 120 tickers) from Redis"
    assert lines[1].startswith("dry run: about ") and lines[1].endswith(
        " s more at the rate so far"
    )
    assert "12840 to do; nothing published" in out.out
    assert main(["backfill", "--tickers", tickers, *span, "--dry-run", "--max-items", "100"]) == 1
    assert "over the limit of 100" in capsys.readouterr().err
    assert main(["backfill", "--tickers", "T1", *span, "--max-items", "100"]) == 1
    assert "with --dry-run" in capsys.readouterr().err
