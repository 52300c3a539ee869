"""What the Prefect UI shows of a run: INFO logs, task runs named after the decision, each
retry with its attempt, delay and cause, and a failed state that starts with the cause and
says how to retry (``ti retry ID`` for a run with no deployment).

Read back from the session's Prefect test server, as the UI reads them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

pytestmark = [pytest.mark.prefect]


async def _story(
    flow_run_id: Any, named: frozenset[str] | set[str] = frozenset(), wait: float = 60.0
) -> tuple[list[str], list[Any]]:
    """(the run's log messages at INFO and above, its task runs), once the task runs carry
    the ``named`` names: the server records a task run's final name from its events, a moment
    after the run itself has finished, so a busy machine may read the first, generated name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
    from prefect.logging.handlers import APILogWorker

    drained = APILogWorker.drain_all(timeout=30)  # awaitable in an event loop
    if drained is not None and not isinstance(drained, tuple):
        await drained
    deadline = asyncio.get_running_loop().time() + wait
    async with get_client() as client:
        while True:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if named <= {t.name for t in tasks} or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [flow_run_id]}))
    return [log.message for log in logs if log.level >= logging.INFO], tasks


async def test_a_retried_then_failed_run_tells_its_story(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import publish_decision

    # Nothing listens on port 1: every publish is "Redis unavailable", which is retried.
    monkeypatch.setenv("TI_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TI_ALLOW_DEMO_PUBLISH", "1")
    monkeypatch.setenv("TI_TASK_RETRIES", "1")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.1")
    monkeypatch.setenv("TI_RETRIES", "0")
    monkeypatch.setenv("TI_CONNECT_TIMEOUT", "0.5")
    state = await publish_decision("NVDA", "2026-05-11", "demo", return_state=True)
    run_id = state.state_details.flow_run_id

    assert state.is_failed()
    assert state.message.startswith("publish-stream: "), state.message  # the cause, first
    assert "unavailable" in state.message.split(" -- ")[0]
    assert state.message.endswith(f"retry it once fixed with `ti retry {run_id}`")
    assert len(state.message.splitlines()) == 1

    expected = {
        "run-arena-NVDA-2026-05-11",
        "build-envelope-NVDA-2026-05-11",
        "publish-stream-NVDA-2026-05-11",
    }
    messages, tasks = await _story(run_id, expected)
    names = {t.name for t in tasks}
    assert expected <= names, names
    retry = [m for m in messages if "Retry 1/1 will start" in m]
    assert retry and "second(s) from now" in retry[0] and "RedisUnavailableError" in retry[0]
    assert any("Finished in state Completed" in m for m in messages), messages  # INFO steps
    assert not any("Traceback" in m for m in messages), messages  # a TiError is its one line


async def test_a_published_run_logs_what_it_wrote(prefect_harness: None) -> None:
    from flows.pipeline import publish_decision

    state = await publish_decision("AAPL", "2026-05-11", "demo", return_state=True)
    assert state.is_completed(), state.message
    messages, tasks = await _story(
        state.state_details.flow_run_id, {"publish-hash-AAPL-2026-05-11"}
    )
    assert any(
        m.startswith("AAPL 2026-05-11: published ") and "stream entry" in m for m in messages
    ), messages
    assert "publish-hash-AAPL-2026-05-11" in {t.name for t in tasks}
    steps = [  # each step says what it did, in order
        "AAPL 2026-05-11: arena demo returned its state (",
        "AAPL 2026-05-11: envelope built: ",
        "AAPL 2026-05-11: appended entry ",
        "AAPL 2026-05-11: lookup hash maf:arena:trading_intelligence:decisions:AAPL:2026-05-11 "
        "confirmed",
    ]
    said = [next(i for i, m in enumerate(messages) if m.startswith(step)) for step in steps]
    assert said == sorted(said), messages
