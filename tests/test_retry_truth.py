"""A retry reports the decision consumers see, never one it did not publish.

A retried flow run rebuilds its decisions' correlation ids; the arena's cached result makes
the retry publish the same decision again. When that cache is gone (result storage may be
cleaned at will; a retry on another worker) an LLM arena may answer otherwise: the stream
already holds this run's first decision under the correlation id, so the new one is not
published, and the outcome, the decision card, the event and the flow run must say so
(issue 22, finding 2). Runs under the session's Prefect harness against a real redis-server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key

ARENA = "tests.arena_fixtures:counting_arena"
DAY = "2026-05-13"


@pytest.fixture
def server(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    for name in ("TI_TEST_ARENA_FAIL", "TI_TEST_ARENA_LOG", "TI_TEST_ARENA_VERDICT"):
        monkeypatch.delenv(name, raising=False)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def _forget_cached_results() -> None:
    """Remove every result Prefect stored (what cleaning the result storage does)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    for path in storage.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_a_retry_after_cache_loss_reports_the_decision_on_the_stream(
    prefect_harness: None, server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from flows.pipeline import daily

    monkeypatch.setenv("TI_TEST_ARENA_FAIL", "AMD")
    first = await daily(["NVDA", "AMD"], DAY, arena=ARENA, return_state=True)
    assert first.is_failed()
    nvda_hash = decision_hash_key("NVDA", DAY)
    assert server.hget(nvda_hash, "verdict") == "BUY"
    held_entry = server.hget(nvda_hash, "entry_id")
    _forget_cached_results()
    monkeypatch.delenv("TI_TEST_ARENA_FAIL")
    monkeypatch.setenv("TI_TEST_ARENA_VERDICT", "SELL")  # the LLM answers otherwise now
    async with get_client() as client:
        await client.set_flow_run_state(first.state_details.flow_run_id, Scheduled(), force=True)
        flow_run = await client.read_flow_run(first.state_details.flow_run_id)
    retried = await run_flow(
        daily, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )
    assert retried.is_failed()  # never success for a decision that was not published
    message = str(await retried.result(raise_on_failure=False))
    assert "1 of 2 decisions failed" in message, message
    assert (
        "NVDA: the stream already holds BUY 0.70 (entry " + held_entry + ") for "
        "this run's correlation id; the new SELL 0.70 was not published" in message
    ), message
    # Consumers see BUY, on one entry; the hash never named the new SELL.
    assert server.hget(nvda_hash, "verdict") == "BUY"
    assert server.hget(nvda_hash, "entry_id") == held_entry
    assert [f["data"].count('"BUY"') > 0 for _, f in server.xrange(DEFAULT_STREAM_NAME)].count(
        True
    ) == 1
    assert server.hget(decision_hash_key("AMD", DAY), "verdict") == "SELL"
    async with get_client() as client:
        # This flow run's artifacts only: the session's harness holds every test's.
        tables = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    ours = sorted(tables, key=lambda a: a.created)
    table = [a for a in ours if a.type == "table"][-1]  # the retry's (same flow run id)
    rows = {row["ticker"]: row for row in _table_rows(table.data)}
    assert (rows["NVDA"]["status"], rows["NVDA"]["verdict"]) == ("failed", "BUY")
    assert rows["NVDA"]["entry_id"] == held_entry
    cards = [a for a in ours if a.key == "decision-nvda-2026-05-13"]
    assert cards, "no NVDA card for the retry"
    card = str(cards[-1].data)  # the retry's
    assert card.startswith("# NVDA 2026-05-13: BUY (on the stream)"), card
    assert "the new SELL 0.70 was not published" in card


def _table_rows(data: object) -> list[dict[str, object]]:
    import json

    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_a_replica_shortfall_is_labelled_unacked_and_not_recorded_as_a_failure(
    prefect_harness: None, server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone server has no replica: the decision is on the primary (consumers see it), the
    outcome says UNACKED, and no failure record invites ``--only failed`` to re-run it."""
    from flows.cmd_run import format_outcome
    from flows.pipeline import ON_DECISION, daily
    from ti_core.contract.keys import failure_key
    from ti_core.publish.outcome import DecisionOutcome
    from ti_core.settings import TiSettings

    for name, value in (("MIN_REPLICAS", "1"), ("REPLICA_TIMEOUT", "0.1"), ("TASK_RETRIES", "0")):
        monkeypatch.setenv(f"TI_{name}", value)
    seen: list[DecisionOutcome] = []
    ON_DECISION.set(seen.append)
    state = await daily(["NVDA"], DAY, arena=ARENA, return_state=True)
    assert state.is_failed()  # not durable yet: the run says so
    (outcome,) = seen
    assert outcome.failed and outcome.unacked
    line = format_outcome(outcome, TiSettings())
    assert line.startswith(f"NVDA {DAY}: UNACKED publish-stream: "), line
    assert "consumers may see it; not acknowledged by 1 replicas" in line
    assert server.hget(decision_hash_key("NVDA", DAY), "verdict") == "BUY"
    assert not server.hexists(failure_key(DEFAULT_STREAM_NAME), f"NVDA:{DAY}")
