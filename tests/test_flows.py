"""The Prefect flows under one session-scoped test harness, against a real redis-server.

Arena calls are counted through ``tests.arena_fixtures:counting_arena`` (a log file), so a
retried flow run can be shown not to run the arena again. Retry delays are shortened through
``TI_TASK_RETRY_DELAY``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redisproc import RedisProcess
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key, failure_key

pytestmark = [pytest.mark.prefect, pytest.mark.redis_server]

ARENA = "tests.arena_fixtures:counting_arena"


@pytest.fixture
def arena_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "arena-calls.log"
    monkeypatch.setenv("TI_TEST_ARENA_LOG", str(log))
    monkeypatch.delenv("TI_TEST_ARENA_FAIL", raising=False)
    monkeypatch.setenv("TI_TASK_RETRIES", "5")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.2")
    monkeypatch.setenv("TI_RETRIES", "0")
    monkeypatch.setenv("TI_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("TI_SOCKET_TIMEOUT", "1")
    return log


@pytest.fixture
def server(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def entries(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields["data"]) for _, fields in client.xrange(DEFAULT_STREAM_NAME)]


async def artifacts(key: str, flow_run_id: Any) -> list[Any]:
    """This flow run's artifacts under ``key`` (other tests share the session's server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )


async def wait_for_event(
    name: str, resource_id: str, match: Callable[[Any], bool], timeout: float = 20.0
) -> list[Any]:
    """Events ``name`` on ``resource_id`` that ``match`` (polled: the server stores them async)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
    )
    deadline = asyncio.get_running_loop().time() + timeout
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=flt, limit=50)
            found = [e for e in page.events if match(e)]
            if found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.25)


async def test_publish_decision_happy_path(
    prefect_harness: None, arena_log: Path, server: redis.Redis
) -> None:
    from flows.pipeline import publish_decision

    state = await publish_decision("nvda", "2026-05-11", arena=ARENA, return_state=True)
    run_id = state.state_details.flow_run_id
    row = await state.result()
    assert row["status"] == "published" and row["verdict"] == "BUY" and row["error"] is None
    (entry,) = entries(server)
    assert entry["decision"]["target"] == {
        "ticker": "NVDA",
        "trade_date": "2026-05-11",
        "exchange": "",
        "asset_class": "equity",
    }
    assert entry["meta"].get("demo") is None
    stored = server.hgetall(decision_hash_key("NVDA", "2026-05-11"))
    assert stored["correlation_id"] == entry["correlation_id"] == row["correlation_id"]
    assert row["entry_id"] == server.xrange(DEFAULT_STREAM_NAME)[0][0]
    assert calls(arena_log) == ["NVDA 2026-05-11"]

    (card,) = await artifacts("decision-nvda-2026-05-11", run_id)
    assert "NVDA 2026-05-11: BUY" in card.data and row["entry_id"] in card.data
    assert "technical_analyst" in card.data
    (table,) = await artifacts("publish-nvda-2026-05-11", run_id)
    assert json.loads(table.data)[0]["status"] == "published"

    events = await wait_for_event(
        "ti.decision.published",
        "ti.decision.NVDA.2026-05-11",
        lambda e: e.payload.get("correlation_id") == row["correlation_id"],
    )
    assert events, "no ti.decision.published event"
    labels = events[0].resource
    assert labels["ti.ticker"] == "NVDA" and labels["ti.trade-date"] == "2026-05-11"

    # A new flow run of the same decision appends nothing: same content is already last.
    again = await publish_decision("NVDA", "2026-05-11", arena=ARENA)
    assert again["status"] == "unchanged" and again["entry_id"] == row["entry_id"]
    assert row["appended"] is True and again["appended"] is False
    assert len(entries(server)) == 1


async def test_redis_down_then_back_retries_recover_with_one_entry(
    prefect_harness: None, arena_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import publish_decision

    proc = RedisProcess(tmp_path / "late")
    monkeypatch.setenv("TI_REDIS_URL", proc.url)
    starter = threading.Timer(0.8, proc.start)
    starter.start()
    try:
        row = await publish_decision("AAPL", "2026-05-11", arena=ARENA)
        starter.join()
        with proc.sync_client() as client:
            assert client.xlen(DEFAULT_STREAM_NAME) == 1
            assert client.hget(decision_hash_key("AAPL", "2026-05-11"), "correlation_id") == (
                row["correlation_id"].encode()
            )
        assert row["status"] == "published"
        assert calls(arena_log) == ["AAPL 2026-05-11"]  # the arena ran once; publishing retried
    finally:
        starter.cancel()
        proc.stop()


async def test_redis_down_for_good_fails_visibly_and_writes_nothing(
    prefect_harness: None, arena_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import daily

    monkeypatch.setenv("TI_TASK_RETRIES", "2")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.05")
    proc = RedisProcess(tmp_path / "dead")  # never started: connection refused
    monkeypatch.setenv("TI_REDIS_URL", proc.url)
    state = await daily(["MSFT", "TSLA"], "2026-05-12", arena=ARENA, return_state=True)
    assert state.is_failed()
    assert "2 of 2 decisions failed" in state.message
    run_id = state.state_details.flow_run_id
    (table,) = await artifacts("daily-2026-05-12", run_id)
    rows = {r["ticker"]: r for r in json.loads(table.data)}
    assert set(rows) == {"MSFT", "TSLA"}
    for row in rows.values():
        assert row["status"] == "failed" and row["entry_id"] == ""
        assert row["error"].startswith("publish-stream: Redis") and "unavailable" in row["error"]
    assert await artifacts("decision-msft-2026-05-12", run_id) == []
    events = await wait_for_event(
        "ti.decision.failed",
        "ti.decision.MSFT.2026-05-12",
        lambda e: proc.url.rsplit(":", 1)[1].split("/")[0] in e.payload.get("error", ""),
    )
    assert events and "unavailable" in events[0].payload["error"]
    proc.start()
    try:
        with proc.sync_client() as client:
            assert client.dbsize() == 0
    finally:
        proc.stop()


async def test_invalid_state_fails_at_once_with_the_builders_message(
    prefect_harness: None, arena_log: Path, server: redis.Redis
) -> None:
    from flows.pipeline import publish_decision
    from ti_core.errors import InvalidStateError

    state = await publish_decision("BAD", "2026-05-11", arena=ARENA, return_state=True)
    assert state.is_failed()
    with pytest.raises(InvalidStateError, match=r"synthesis_confidence must be in \[0.0, 1.0\]"):
        await state.result()
    assert calls(arena_log) == ["BAD 2026-05-11"]
    assert server.xlen(DEFAULT_STREAM_NAME) == 0
    reason = json.loads(server.hget(failure_key(DEFAULT_STREAM_NAME), "BAD:2026-05-11"))
    assert reason["reason"].startswith("build-envelope: synthesis_confidence")

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    build = [r for r in runs if r.name.startswith("build-envelope")]
    assert len(build) == 1 and build[0].run_count == 1  # no retry


async def test_retried_flow_run_publishes_the_failed_only(
    prefect_harness: None,
    arena_log: Path,
    server: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from flows.pipeline import daily

    monkeypatch.setenv("TI_TEST_ARENA_FAIL", "AMD")
    first = await daily(["NVDA", "AMD"], "2026-05-13", arena=ARENA, return_state=True)
    assert first.is_failed() and "AMD: run-arena: arena " in first.message
    assert "RuntimeError: arena crashed on AMD" in first.message
    assert [e["decision"]["target"]["ticker"] for e in entries(server)] == ["NVDA"]
    assert server.hexists(failure_key(DEFAULT_STREAM_NAME), "AMD:2026-05-13")

    # The arena recovers; retry the same flow run the way `prefect flow-run retry` does.
    monkeypatch.delenv("TI_TEST_ARENA_FAIL")
    flow_run_id = first.state_details.flow_run_id
    async with get_client() as client:
        await client.set_flow_run_state(flow_run_id, Scheduled(), force=True)
        flow_run = await client.read_flow_run(flow_run_id)
    retried = await run_flow(
        daily, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )
    assert retried.is_completed(), retried.message
    result = await retried.result()
    # Both are this run's decisions: NVDA's entry was appended by the failed first attempt.
    assert {r["ticker"]: (r["status"], r["appended"]) for r in result["rows"]} == {
        "NVDA": ("published", False),
        "AMD": ("published", True),
    }
    assert sorted(e["decision"]["target"]["ticker"] for e in entries(server)) == ["AMD", "NVDA"]
    assert sorted(calls(arena_log)) == ["AMD 2026-05-13", "AMD 2026-05-13", "NVDA 2026-05-13"]
    assert not server.hexists(failure_key(DEFAULT_STREAM_NAME), "AMD:2026-05-13")


async def test_daily_on_a_closed_day_does_nothing_and_says_why(
    prefect_harness: None,
    arena_log: Path,
    server: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no date, the session comes from when the run was scheduled: a run scheduled for a
    Saturday does nothing, even if it starts on a weekday (it is started now, a late run)."""
    result, name = await _scheduled_daily(datetime(2026, 11, 28, 22, 30, tzinfo=UTC))
    assert result == {"trade_date": None, "skipped": "2026-11-28 is a weekend (XNYS)", "rows": []}
    assert name == "daily-2026-11-28"  # the day it was scheduled for, not "daily-None"
    assert calls(arena_log) == [] and server.dbsize() == 0


async def test_a_late_daily_run_publishes_its_scheduled_session(
    prefect_harness: None,
    arena_log: Path,
    server: redis.Redis,
) -> None:
    result, name = await _scheduled_daily(datetime(2026, 5, 15, 21, 30, tzinfo=UTC))  # Fri
    assert result["trade_date"] == "2026-05-15" and result["rows"][0]["status"] == "published"
    assert name == "daily-2026-05-15"  # the UI names it after the session it publishes


async def _scheduled_daily(when: datetime) -> tuple[Any, str]:
    """Run ``daily`` (no date) as the flow run a schedule created for ``when``, started now;
    its result and the flow run's name."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow_async
    from prefect.states import Scheduled

    import flows.pipeline as pipeline

    async with get_client() as client:
        run = await client.create_flow_run(
            pipeline.daily,
            parameters={"tickers": ["NVDA"], "arena": ARENA},
            state=Scheduled(scheduled_time=when),
        )
    result = await run_flow_async(pipeline.daily, flow_run=run, parameters=run.parameters)
    async with get_client() as client:
        return result, (await client.read_flow_run(run.id)).name


async def test_daily_fans_out_within_the_concurrency_limit_on_the_embedded_store(
    prefect_harness: None, arena_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent tasks share the embedded store: no deadlock on its lock, no lost write."""
    from flows.pipeline import daily
    from tests.arena_fixtures import IN_FLIGHT
    from ti_core.transport.connection import connect

    monkeypatch.setenv("TI_ARENA_CONCURRENCY", "2")
    IN_FLIGHT["max"] = 0
    tickers = ["A", "B", "C", "D", "E", "F"]
    result = await daily(
        tickers + ["a", "NOT A TICKER!"],
        "2026-05-11",
        arena="tests.arena_fixtures:tracking_arena",
        return_state=True,
    )
    assert IN_FLIGHT["max"] == 2  # overlapping, but never more than the limit
    assert result.is_failed() and "1 of 7 decisions failed" in result.message
    async with connect() as client:
        assert await client.xlen(DEFAULT_STREAM_NAME) == 6
        for ticker in tickers:
            assert await client.hget(decision_hash_key(ticker, "2026-05-11"), "verdict") == b"BUY"
    assert sorted(calls(arena_log)) == [f"{t} 2026-05-11" for t in tickers]
