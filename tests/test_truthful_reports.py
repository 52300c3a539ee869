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
