"""Half-published: Redis runs out of memory right after a stream write, on a real redis-server.

- The flow writes an entry and its hash in one script (publish-stream), so memory dropped as
  soon as the entry appears still leaves both; with memory already gone, nothing is written,
  the error says so, and the retried flow run publishes the pair.
- The two-step library path (``append_envelope`` then ``publish_decision_hash``, what the
  flow used to do in two tasks) does leave an entry without its hash: ``ti status`` and
  ``ti verify`` call it ``orphan_entry``; a later publish of the decision (a new flow run, or
  ``publish_many``) heals it: one entry, its hash, ``ti verify`` consistent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.arena_fixtures import counting_arena
from tests.redisproc import RedisProcess
from ti_core import DEFAULT_STREAM_NAME, PublishError, publish_many
from ti_core.build.builder import build_envelope_from_state
from ti_core.contract.keys import decision_hash_key
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.publish.publisher import append_envelope, publish_decision_hash
from ti_core.transport.connection import open_redis

pytestmark = pytest.mark.redis_server

S = DEFAULT_STREAM_NAME
ARENA = "tests.arena_fixtures:counting_arena"
DAY = "2026-05-11"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(
        tmp_path_factory.mktemp("redis-oom"), "--maxmemory-policy", "noeviction"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def admin(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[redis.Redis]:
    monkeypatch.setenv("TI_REDIS_URL", server.url)
    monkeypatch.setenv("TI_TEST_ARENA_LOG", str(tmp_path / "arena.log"))
    monkeypatch.setenv("TI_TASK_RETRIES", "2")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.1")
    with server.sync_client() as client:
        client.config_set("maxmemory", 0)
        client.flushall()
        yield client
        client.config_set("maxmemory", 0)


@pytest.fixture
async def client(server: RedisProcess, admin: redis.Redis) -> AsyncIterator[Any]:
    c = open_redis(server.url)
    try:
        yield c
    finally:
        await c.aclose()


def out_of_memory(admin: redis.Redis) -> None:
    admin.config_set("maxmemory", 1)  # below what is used: every write that grows is refused


class OomWhenEntryAppears:
    """Drops ``maxmemory`` the moment the stream has an entry (polled from another thread)."""

    def __init__(self, server: RedisProcess) -> None:
        self.server, self.fired, self.stop = server, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with self.server.sync_client() as watcher:
            while not self.stop.is_set():
                if watcher.xlen(S) > 0:
                    out_of_memory(watcher)
                    self.fired.set()
                    return
                time.sleep(0.001)

    def __enter__(self) -> OomWhenEntryAppears:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def state_of(admin: redis.Redis, ticker: str) -> tuple[str, dict[str, Any]]:
    """``(status grid state, hash fields)`` of (ticker, DAY), as ``ti status`` reads it."""
    from ti_core.backfill.status import Item, classify

    async def read() -> str:
        c = open_redis(f"redis://127.0.0.1:{admin.connection_pool.connection_kwargs['port']}/0")
        try:
            (found,) = await classify(c, [Item(ticker, DAY)])
        finally:
            await c.aclose()
        return found.state

    fields = {
        k.decode(): v.decode() for k, v in admin.hgetall(decision_hash_key(ticker, DAY)).items()
    }
    return asyncio.run(read()), fields


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from flows.cli import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_pair(admin: redis.Redis, ticker: str, capsys: pytest.CaptureFixture[str]) -> None:
    """One entry for the pair, its hash naming it, ``ti verify`` consistent, status published."""
    entries = [
        (i.decode(), json.loads(f[b"data"]))
        for i, f in admin.xrange(S)
        if json.loads(f[b"data"])["decision"]["target"]["ticker"] == ticker
    ]
    assert len(entries) == 1, entries
    fields = admin.hgetall(decision_hash_key(ticker, DAY))
    assert fields[b"entry_id"].decode() == entries[0][0]
    code, out, _ = cli(["verify"], capsys)
    assert code == 0 and ": consistent" in out, out
    code, out, _ = cli(
        ["status", "--tickers", ticker, "--start", DAY, "--end", DAY, "--json"], capsys
    )
    assert code == 0 and json.loads(out)["tickers"][ticker][DAY] == "published"


def arena_envelope(ticker: str) -> TradingIntelligenceEnvelope:
    """The envelope the flow would build for (ticker, DAY): same decision, other id and time."""
    return build_envelope_from_state(counting_arena(ticker, DAY), ticker=ticker, trade_date=DAY)


async def _orphan(client: Any, admin: redis.Redis, ticker: str) -> TradingIntelligenceEnvelope:
    """The issue's state: the entry written, then memory gone before the hash."""
    env = arena_envelope(ticker)
    await append_envelope(client, S, env)
    out_of_memory(admin)
    with pytest.raises(PublishError) as caught:
        await publish_decision_hash(client, env)
    message = str(caught.value)
    assert "out of memory" in message
    assert f"lookup hash of {ticker} {DAY} was not written" in message
    admin.config_set("maxmemory", 0)
    return env


async def test_two_step_orphan_is_named_then_healed_by_publishing_the_pair_again(
    client: Any, admin: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await _orphan(client, admin, "NVDA")
    assert admin.xlen(S) == 1 and not admin.exists(decision_hash_key("NVDA", DAY))
    code, out, _ = await asyncio.to_thread(
        cli, ["status", "--tickers", "NVDA", "--start", DAY, "--end", DAY, "--json"], capsys
    )
    assert code == 0 and json.loads(out)["tickers"]["NVDA"][DAY] == "orphan_entry"
    code, out, _ = await asyncio.to_thread(cli, ["verify"], capsys)
    assert code == 2 and "orphan_entry: 1" in out and "publish again to heal" in out

    (again,) = await publish_many(client, [env])  # the pair published again
    assert not again.created and again.own_entry and again.hash_written
    await asyncio.to_thread(assert_one_pair, admin, "NVDA", capsys)

    # a retry of the hash step alone heals it too
    admin.delete(decision_hash_key("NVDA", DAY))
    await publish_decision_hash(client, env)
    await asyncio.to_thread(assert_one_pair, admin, "NVDA", capsys)


async def test_oom_before_the_pair_writes_nothing_and_says_so(
    client: Any, admin: redis.Redis
) -> None:
    out_of_memory(admin)
    env = arena_envelope("AMD")
    with pytest.raises(PublishError) as caught:
        await publish_many(client, [env])
    assert "out of memory" in str(caught.value) and "was not written" in str(caught.value)
    assert admin.xlen(S) == 0 and admin.dbsize() == 0


# --- the flow --------------------------------------------------------------------------------


@pytest.mark.prefect
async def test_flow_under_oom_right_after_the_stream_write_then_retried(
    prefect_harness: None,
    server: RedisProcess,
    admin: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from flows.pipeline import publish_decision

    # Memory gone the moment the entry appears: the hash was written in the same script.
    with OomWhenEntryAppears(server) as oom:
        row = await publish_decision("NVDA", DAY, arena=ARENA)
    assert oom.fired.is_set() and row["status"] == "published"
    status, fields = await asyncio.to_thread(state_of, admin, "NVDA")
    assert status == "published" and fields["correlation_id"] == row["correlation_id"]
    await asyncio.to_thread(assert_one_pair, admin, "NVDA", capsys)

    # Memory still gone: the next decision writes nothing, and says so in one reason.
    failed = await publish_decision("AMD", DAY, arena=ARENA, return_state=True)
    assert failed.is_failed()
    with pytest.raises(PublishError, match=r"out of memory .*was not written"):
        await failed.result()
    assert admin.xlen(S) == 1
    assert (await asyncio.to_thread(state_of, admin, "AMD"))[0] == "missing"  # nothing written

    admin.config_set("maxmemory", 0)
    run_id = failed.state_details.flow_run_id
    async with get_client() as prefect:
        await prefect.set_flow_run_state(run_id, Scheduled(), force=True)
        flow_run = await prefect.read_flow_run(run_id)
    retried = await run_flow(
        publish_decision, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )
    assert retried.is_completed(), retried.message
    assert (await retried.result())["status"] == "published"
    await asyncio.to_thread(assert_one_pair, admin, "AMD", capsys)
    await asyncio.to_thread(assert_one_pair, admin, "NVDA", capsys)


@pytest.mark.prefect
async def test_orphan_entry_is_healed_by_the_next_flow_run(
    prefect_harness: None, client: Any, admin: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.pipeline import publish_decision

    await _orphan(client, admin, "TSLA")
    assert (await asyncio.to_thread(state_of, admin, "TSLA"))[0] == "orphan_entry"
    row = await publish_decision("TSLA", DAY, arena=ARENA)
    assert row["status"] == "unchanged"  # the identical decision's entry, now with its hash
    await asyncio.to_thread(assert_one_pair, admin, "TSLA", capsys)


@pytest.mark.prefect
async def test_a_broken_failure_record_never_fails_a_published_decision(
    prefect_harness: None, admin: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.pipeline import publish_decision
    from ti_core.contract.keys import failure_key

    admin.set(failure_key(S), "a string where the failure hash should be")  # WRONGTYPE
    state = await publish_decision("MSFT", DAY, arena=ARENA, return_state=True)
    assert state.is_completed(), state.message
    assert (await state.result())["status"] == "published"
    await asyncio.to_thread(assert_one_pair, admin, "MSFT", capsys)
