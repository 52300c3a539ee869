"""Settings are built once and passed down: the command's flags override ``TI_*`` without
touching ``os.environ``, and a flow run builds its settings once for all its tasks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from flows.run_settings import run_settings, with_flags
from ti_core.contract.keys import DEFAULT_STREAM_NAME
from ti_core.settings import TiSettings

DAY = "2026-05-11"


def test_flags_override_the_environment_without_writing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TI_PUBLISH_DEGRADED", "1")
    monkeypatch.delenv("TI_ALLOW_DEMO_PUBLISH", raising=False)
    before = dict(os.environ)
    s = with_flags(allow_demo=True)
    assert s.allow_demo_publish is True and s.publish_degraded is True  # the env still counts
    assert with_flags(publish_degraded=False).publish_degraded is False  # a flag wins
    assert with_flags().allow_demo_publish is False
    assert dict(os.environ) == before


def test_outside_a_flow_run_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TI_ARENA_CONCURRENCY", "7")
    assert run_settings().arena_concurrency == 7


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TiSettings]]:
    """Every TiSettings built (a spy around the real constructor)."""
    built: list[TiSettings] = []
    real = TiSettings.__init__

    def spy(self: TiSettings, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(TiSettings, "__init__", spy)
    yield built


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_a_flow_run_builds_its_settings_once_and_allow_demo_is_a_parameter(
    prefect_harness: None,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    counted: list[TiSettings],
) -> None:
    from flows.pipeline import daily, publish_decision

    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.delenv("TI_ALLOW_DEMO_PUBLISH", raising=False)
    refused = await publish_decision("NVDA", DAY, arena="demo", return_state=True)
    assert refused.is_failed() and "TI_ALLOW_DEMO_PUBLISH=1" in refused.message
    counted.clear()

    row = await publish_decision("NVDA", DAY, arena="demo", allow_demo=True)
    assert row["status"] == "published" and row["demo"] is True
    assert len(counted) == 1 and counted[0].allow_demo_publish is True
    counted.clear()
    result = await daily(["AAPL", "MSFT"], DAY, arena="demo", allow_demo=True)
    assert [r["status"] for r in result["rows"]] == ["published", "published"]
    assert len(counted) == 1, "the flow and its six task runs share one TiSettings"
    assert "TI_ALLOW_DEMO_PUBLISH" not in os.environ
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(DEFAULT_STREAM_NAME) == 3


@pytest.mark.prefect
@pytest.mark.redis_server
def test_ti_run_allow_demo_reaches_the_flow_as_a_parameter_not_through_the_environment(
    prefect_harness: None,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.delenv("TI_ALLOW_DEMO_PUBLISH", raising=False)
    for name in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):  # what ti sets for
        monkeypatch.setenv(f"PREFECT_LOGGING_HANDLERS_{name}_LEVEL", "CRITICAL")  # Prefect
    assert main(["run", "NVDA", "--date", DAY, "--arena", "demo"]) == 1
    refused = capsys.readouterr().err
    assert "TI_ALLOW_DEMO_PUBLISH=1 (on the command line: --arena SPEC, or --allow-demo)" in refused
    assert main(["run", "NVDA", "--date", DAY, "--arena", "demo", "--allow-demo"]) == 0
    assert "[DEMO arena: not a real analysis]" in capsys.readouterr().out
    assert "TI_ALLOW_DEMO_PUBLISH" not in os.environ
