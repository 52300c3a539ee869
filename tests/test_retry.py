"""The one retry policy (ti_core.transport.retry): numbers from settings, bounded jitter, only
retryable
errors retried; the backfill's arena retries and the Prefect tasks take the same policy."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ti_core.arenas.runner import CallableArena
from ti_core.backfill.runner import run_items
from ti_core.backfill.status import Item
from ti_core.errors import (
    ArenaError,
    ArenaTransientError,
    ConfigError,
    InvalidStateError,
    RedisUnavailableError,
)
from ti_core.settings import TiSettings
from ti_core.transport.retry import RetryPolicy, redis_policy, retrying, task_policy


def test_task_policy_comes_from_the_ti_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_TASK_RETRIES", "3")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.5")
    monkeypatch.setenv("TI_TASK_RETRY_MAX_DELAY", "1.5")
    monkeypatch.setenv("TI_RETRY_JITTER", "0.2")
    policy = task_policy(TiSettings())
    assert policy == RetryPolicy(retries=3, delay=0.5, max_delay=1.5, jitter=0.2)
    assert policy.base_delays() == [0.5, 1.0, 1.5]  # doubling, capped


def test_defaults_are_the_settings_defaults() -> None:
    assert RetryPolicy() == task_policy(TiSettings())
    fresh = TiSettings()
    waiting = redis_policy(7.0)
    assert (waiting.delay, waiting.max_delay) == (
        fresh.redis_retry_delay,
        fresh.redis_retry_max_delay,
    )
    assert waiting.deadline == 7.0


def test_redis_policy_takes_the_redis_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_REDIS_RETRY_DELAY", "0.2")
    monkeypatch.setenv("TI_REDIS_RETRY_MAX_DELAY", "0.4")
    monkeypatch.setenv("TI_RETRY_JITTER", "0")
    policy = redis_policy(3.0, TiSettings())
    assert [policy.pause(n) for n in range(4)] == [0.2, 0.4, 0.4, 0.4]


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_jitter_is_bounded_and_spreads(jitter: float) -> None:
    policy = RetryPolicy(retries=5, delay=1.0, max_delay=4.0, jitter=jitter)
    random.seed(15)
    for retry in range(6):
        base = policy.base_delay(retry)
        pauses = [policy.pause(retry) for _ in range(300)]
        assert all(base * (1 - jitter) <= p <= base * (1 + jitter) for p in pauses)
        if jitter:
            assert max(pauses) - min(pauses) > base * jitter  # spread, not one value
        else:
            assert set(pauses) == {base}


@pytest.mark.parametrize(
    "bad", [{"retries": -1}, {"delay": -0.1}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_an_impossible_policy_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**bad)


def _failing(errors: list[BaseException], value: str = "ok") -> tuple[list[int], Any]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return value

    return calls, call


async def test_retryable_errors_are_retried_up_to_the_count() -> None:
    calls, call = _failing([RedisUnavailableError("down")] * 2)
    assert await retrying(call, RetryPolicy(retries=2, delay=0.001)) == "ok"
    assert len(calls) == 3

    calls, call = _failing([ArenaTransientError("rate limited")] * 5)
    with pytest.raises(ArenaTransientError, match="rate limited"):
        await retrying(call, RetryPolicy(retries=3, delay=0.001))
    assert len(calls) == 4  # the first try and 3 retries, then the last error as it is


@pytest.mark.parametrize(
    "error", [InvalidStateError("bad state"), ArenaError("crashed"), ValueError("bug")]
)
async def test_non_retryable_errors_are_not_retried(error: BaseException) -> None:
    calls, call = _failing([error])
    with pytest.raises(type(error)):
        await retrying(call, RetryPolicy(retries=5, delay=0.001))
    assert len(calls) == 1


async def test_a_deadline_bounds_the_tries_whatever_the_count() -> None:
    calls, call = _failing([RedisUnavailableError("down")] * 10_000)
    policy = RetryPolicy(delay=0.01, max_delay=0.01, jitter=0).until(0.1)
    with pytest.raises(RedisUnavailableError):
        await retrying(call, policy)
    assert 2 <= len(calls) < 100


async def test_backfill_arena_retries_follow_the_policy(fake_redis: Any, tmp_path: Path) -> None:
    """Was hard-coded (2 retries, 0.5 s, no jitter); now the count is the policy's."""
    from tests.backfill_replay import write_replay_dir

    replay = write_replay_dir(tmp_path / "replay", ["NVDA"], ["2026-04-01"])
    calls: list[int] = []

    async def flaky(ticker: str, day: str) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= 3:
            raise TimeoutError("rate limited")
        return dict(json.loads((replay / ticker / f"{day}.json").read_text()))

    runner = CallableArena("tests:flaky", flaky)
    item = [Item("NVDA", "2026-04-01")]
    outcomes = await run_items(fake_redis, runner, item, retry=RetryPolicy(retries=2, delay=0.001))
    assert [o.status for o in outcomes] == ["failed"] and len(calls) == 3
    assert (outcomes[0].error or "").startswith("ArenaTransientError: ")
    calls.clear()
    outcomes = await run_items(fake_redis, runner, item, retry=RetryPolicy(retries=3, delay=0.001))
    assert [o.status for o in outcomes] == ["published"] and len(calls) == 4


def test_prefect_tasks_take_the_same_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.tasks import configured, publish_stream, run_arena

    monkeypatch.setenv("TI_TASK_RETRIES", "3")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.5")
    monkeypatch.setenv("TI_TASK_RETRY_MAX_DELAY", "1")
    monkeypatch.setenv("TI_RETRY_JITTER", "0.3")
    settings = TiSettings()
    for t in (run_arena, publish_stream):
        task = configured(t, settings)
        assert task.retries == 3
        assert task.retry_delay_seconds == [0.5, 1.0, 1.0]
        assert task.retry_jitter_factor == 0.3
