"""Backfills against a real redis-server: the core (ti_core.backfill.runner) and the Prefect
flow."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backfill_replay import (
    PREFECT_SOCKETS,
    assert_exactly_once,
    prefect_sockets_collected,  # noqa: F401  (fixture)
    write_replay_dir,
)
from ti_core.arenas.registry import load_arena
from ti_core.arenas.runner import CallableArena
from ti_core.backfill.calendar import sessions
from ti_core.backfill.runner import BatchReport, backfill_batch, batched, plan_items, run_items
from ti_core.backfill.status import Item, classify, status_grid
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key, failure_key
from ti_core.errors import InvalidStateError, RedisUnavailableError, TiError
from ti_core.transport.connection import open_redis
from ti_core.transport.retry import RetryPolicy, redis_policy

pytestmark = pytest.mark.redis_server

TICKERS = ["NVDA", "AAPL", "BRK.B"]
APRIL = sessions("2026-04-01", "2026-04-30")  # 21 sessions; Good Friday 2026-04-03 is closed
HOLE = ("AAPL", "2026-04-15")
FAST_RETRY = RetryPolicy(retries=2, delay=0.01)  # transient arena failures, retried quickly


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return write_replay_dir(tmp_path / "replay", TICKERS, APRIL.sessions)


def _all_pairs() -> list[tuple[str, str]]:
    return [(i.ticker, i.trade_date) for i in plan_items(TICKERS, APRIL.sessions)]


async def _core_backfill(client: Any, replay: Path, only: str = "missing") -> BatchReport:
    runner = load_arena(f"replay:{replay}")
    total = BatchReport()
    for chunk in batched(plan_items(TICKERS, APRIL.sessions), 20):
        report = await backfill_batch(client, runner, chunk, only=only, retry=FAST_RETRY)
        total.planned += report.planned
        total.skipped += report.skipped
        total.outcomes += report.outcomes
    return total


def test_plan_is_streamed_session_by_session_with_normalised_tickers() -> None:
    items = plan_items(["nvda", " brk.b", "NVDA"], ["2026-04-01", "2026-04-02"])
    assert next(items) == Item("NVDA", "2026-04-01")
    assert list(items) == [
        Item("BRK.B", "2026-04-01"),
        Item("NVDA", "2026-04-02"),
        Item("BRK.B", "2026-04-02"),
    ]
    assert [len(b) for b in batched(range(7), 3)] == [3, 3, 1]
    with pytest.raises(InvalidStateError):
        list(plan_items([], ["2026-04-01"]))
    with pytest.raises(InvalidStateError):
        list(plan_items(["NV:DA*"], ["2026-04-01"]))


async def test_month_backfill_isolates_a_missing_state_then_retries_only_failed(
    real_redis: Any, redis_url: str, replay: Path
) -> None:
    missing = replay / HOLE[0] / f"{HOLE[1]}.json"
    saved = missing.read_text()
    missing.unlink()

    first = await _core_backfill(real_redis, replay)
    failed = [o for o in first.outcomes if o.status == "failed"]
    assert [(o.ticker, o.trade_date) for o in failed] == [HOLE]
    assert "does not exist" in failed[0].error and str(missing) in failed[0].error
    assert first.count("published") == 62
    record = json.loads(await real_redis.hget(failure_key(DEFAULT_STREAM_NAME), "AAPL:2026-04-15"))
    assert "does not exist" in record["reason"] and record["at"]

    again = await _core_backfill(real_redis, replay)  # only the hole is still missing
    assert again.skipped == 62 and [o.status for o in again.outcomes] == ["failed"]
    everything = await _core_backfill(real_redis, replay, only="all")
    assert everything.count("published") == 0 and everything.count("unchanged") == 62
    assert await real_redis.xlen(DEFAULT_STREAM_NAME) == 62

    missing.write_text(saved)
    retried = await _core_backfill(real_redis, replay, only="failed")
    assert retried.skipped == 62
    assert [(o.ticker, o.trade_date, o.status) for o in retried.outcomes] == [(*HOLE, "published")]
    assert await real_redis.hlen(failure_key(DEFAULT_STREAM_NAME)) == 0
    assert_exactly_once(redis_url, _all_pairs())


async def test_bad_state_and_refused_write_fail_only_their_item(
    real_redis: Any, redis_url: str, replay: Path
) -> None:
    (replay / "NVDA" / "2026-04-02.json").write_text(
        json.dumps({"synthesis_verdict": "BUY", "synthesis_score": "high"})
    )
    # A key of the wrong type makes Redis refuse that item's script: the batch is re-published
    # one by one so only that item fails.
    await real_redis.set(decision_hash_key("BRK.B", "2026-04-06"), "not a hash")
    report = await _core_backfill(real_redis, replay)
    failed = {(o.ticker, o.trade_date): o.error for o in report.outcomes if o.failed}
    assert set(failed) == {("NVDA", "2026-04-02"), ("BRK.B", "2026-04-06")}
    assert failed[("NVDA", "2026-04-02")].startswith("InvalidStateError")
    assert "WRONGTYPE" in failed[("BRK.B", "2026-04-06")]
    assert report.count("published") == 61

    grid = await status_grid(real_redis, TICKERS, APRIL)
    assert grid.counts() == {"published": 61, "orphan_entry": 0, "failed": 2, "missing": 0}
    assert grid.cells["NVDA"][APRIL.sessions.index("2026-04-02")] == "failed"
    assert set(grid.failures) == {"NVDA:2026-04-02", "BRK.B:2026-04-06"}
    assert grid.as_dict()["tickers"]["AAPL"]["2026-04-01"] == "published"


async def test_transient_arena_failures_are_retried(real_redis: Any, replay: Path) -> None:
    calls: dict[str, int] = {}

    async def flaky(ticker: str, day: str) -> dict[str, Any]:
        calls[ticker + day] = calls.get(ticker + day, 0) + 1
        if calls[ticker + day] == 1:
            raise TimeoutError("rate limited")
        return json.loads((replay / ticker / f"{day}.json").read_text())

    runner = CallableArena("tests:flaky", flaky)
    items = [Item("NVDA", "2026-04-01"), Item("AAPL", "2026-04-01")]
    outcomes = await run_items(real_redis, runner, items, retry=FAST_RETRY)
    assert [o.status for o in outcomes] == ["published", "published"]
    assert sorted(calls.values()) == [2, 2]
    found = await classify(real_redis, items + [Item("MSFT", "2026-04-01")])
    assert [f.state for f in found] == ["published", "published", "missing"]


async def test_unreachable_redis_ends_the_batch_in_bounded_time(replay: Path) -> None:
    from tests.redisproc import free_port

    client = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    runner = load_arena(f"replay:{replay}")
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError):
        await run_items(client, runner, [Item("NVDA", "2026-04-01")], redis=redis_policy(0.3))
    assert time.monotonic() - started < 10
    await client.aclose()


# --- the Prefect flow ------------------------------------------------------------------------


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> str:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_BATCH_SIZE", "25")
    return redis_url


@pytest.mark.prefect
@PREFECT_SOCKETS
@pytest.mark.usefixtures("prefect_sockets_collected")
async def test_flow_dry_run_matches_the_real_run_and_failures_fail_the_run(
    prefect_harness: None, small_batches: str, replay: Path
) -> None:
    from flows.backfill import ON_PROGRESS, backfill

    (replay / HOLE[0] / f"{HOLE[1]}.json").unlink()
    arena = f"replay:{replay}"
    plan = await backfill.fn(TICKERS, "2026-04-01", "2026-04-30", arena, dry_run=True)
    assert len(plan.todo) == 63 and plan.published == 0
    assert ("2026-04-03", "holiday") in plan.skipped_days
    async with open_redis(small_batches) as client:
        assert await client.xlen(DEFAULT_STREAM_NAME) == 0  # a dry run publishes nothing

    seen: list[tuple[str, str]] = []
    reports: list[BatchReport] = []

    def collect(report: BatchReport) -> None:
        reports.append(report)
        seen.extend((o.ticker, o.trade_date) for o in report.outcomes)

    token = ON_PROGRESS.set(collect)
    try:
        state = await backfill(TICKERS, "2026-04-01", "2026-04-30", arena, return_state=True)
    finally:
        ON_PROGRESS.reset(token)
    assert state.is_failed()
    assert "AAPL 2026-04-15" in state.message and "does not exist" in state.message
    assert seen == plan.todo  # the dry run's plan is what the real run did, in order
    assert len(reports) == 3  # 63 items in batches of 25: three tasks, not 63

    again = await backfill.fn(
        TICKERS, "2026-04-01", "2026-04-30", arena, only="failed", dry_run=True
    )
    assert again.todo == [HOLE] and again.published == 62
    assert "does not exist" in again.failed["AAPL:2026-04-15"]
    await _assert_artifacts(state.state_details.flow_run_id)


async def test_backfill_outcomes_use_the_pipelines_words(fake_redis: Any) -> None:
    """One outcome type: ``published`` with ``appended`` for this run's entry, ``unchanged``
    for another run's identical decision, a degraded decision's reason as its note, the
    error of a failed item; as the pipeline reports them."""

    async def no_verdict(ticker: str, day: str) -> dict[str, Any]:
        if day == "2026-04-02":
            raise InvalidStateError("no state for that day")
        return {}

    runner = CallableArena("tests:no_verdict", no_verdict)
    items = [Item("NVDA", "2026-04-01"), Item("NVDA", "2026-04-02")]
    first = await run_items(fake_redis, runner, items, publish_degraded=True)
    published, failed = first
    assert (published.status, published.appended, published.degraded) == (
        "published",
        True,
        True,
    )
    assert (published.note or "").startswith("degraded: no verdict")
    assert published.entry_id and published.hash_key == decision_hash_key("NVDA", "2026-04-01")
    assert (published.verdict, published.stream) == ("HOLD", DEFAULT_STREAM_NAME)
    assert failed.failed and failed.entry_id is None and "no state" in (failed.error or "")
    again, _ = await run_items(fake_redis, runner, items, publish_degraded=True)
    assert (again.status, again.appended, again.entry_id) == (
        "unchanged",
        False,
        published.entry_id,
    )


async def _assert_artifacts(flow_run_id: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    kinds = {a.type for a in artifacts}
    assert {"progress", "table"} <= kinds
    progress = next(a for a in artifacts if a.type == "progress")
    assert float(progress.data) == pytest.approx(100.0)
    summary = next(a for a in artifacts if a.key == "backfill-summary")
    rows = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    expected = {"ticker": "AAPL", "trade_date": "2026-04-15", "status": "failed"}
    assert expected.items() <= rows[0].items()
    batches = [a for a in artifacts if a.type == "table" and a.key != "backfill-summary"]
    table = [
        r for b in batches for r in (json.loads(b.data) if isinstance(b.data, str) else b.data)
    ]
    assert all(list(r) == ["ticker", "trade_date", "status", "entry_id", "reason"] for r in table)
    hole = next(r for r in table if (r["ticker"], r["trade_date"]) == HOLE)
    assert hole["status"] == "failed" and "does not exist" in hole["reason"]
    assert sum(r["status"] == "published" and r["entry_id"] != "" for r in table) == 62


@pytest.mark.prefect
@PREFECT_SOCKETS
@pytest.mark.usefixtures("prefect_sockets_collected")
async def test_flow_refuses_bad_arguments_before_running(
    prefect_harness: None, small_batches: str, replay: Path
) -> None:
    from flows.backfill import backfill

    with pytest.raises(InvalidStateError, match="only must be one of"):
        await backfill.fn(TICKERS, "2026-04-01", "2026-04-30", f"replay:{replay}", only="some")
    with pytest.raises(TiError, match="get_calendar_names"):
        await backfill.fn(TICKERS, "2026-04-01", "2026-04-30", f"replay:{replay}", calendar="X")
    assert asyncio.iscoroutinefunction(backfill.fn)


async def test_embedded_store_backfill_records_and_clears_failures(replay: Path) -> None:
    """No TI_REDIS_URL: the same core on the embedded store (its pipeline has no HMGET)."""
    from ti_core.transport.connection import connect

    missing = replay / "NVDA" / "2026-04-02.json"
    saved = missing.read_text()
    missing.unlink()
    runner = load_arena(f"replay:{replay}")
    items = list(plan_items(["NVDA"], APRIL.sessions[:3]))
    async with connect() as client:
        first = await backfill_batch(client, runner, items)
        assert [o.status for o in first.outcomes] == ["published", "failed", "published"]
        grid = await status_grid(client, ["NVDA"], APRIL)
        assert grid.cells["NVDA"][:3] == ["published", "failed", "published"]
        missing.write_text(saved)
        retried = await backfill_batch(client, runner, items, only="failed")
        assert retried.skipped == 2 and [o.status for o in retried.outcomes] == ["published"]
        assert [f.state for f in await classify(client, items)] == ["published"] * 3
        assert (await status_grid(client, ["NVDA"], APRIL)).failures == {}
