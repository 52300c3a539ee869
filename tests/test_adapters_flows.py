"""Adapters, the no-verdict rule and bounded states through ``ti run``, ``ti daily`` and
``ti backfill`` (the commands in-process under the session's Prefect harness, one ``ti run``
subprocess), against a real redis-server."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flows.cli import main
from tests import tradingagents_standin
from tests.backfill_replay import PREFECT_SOCKETS, prefect_sockets_collected  # noqa: F401
from tests.test_adapters import HF, HF_CASES, TA, TA_CASES, TA_DEFAULTS, ta_meta
from tests.test_cli_run import TI, clean_env
from ti_core.contract.keys import DEFAULT_STREAM_NAME

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.redis_server,
    PREFECT_SOCKETS,
    pytest.mark.usefixtures("prefect_sockets_collected"),
]

DAY, DAY2 = "2026-05-11", "2026-05-12"
SMALL = 64 * 1024  # no result Prefect keeps for a refused state is anywhere near this


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefect_harness: None) -> str:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_TASK_RETRIES", "0")
    monkeypatch.delenv("TI_PUBLISH_DEGRADED", raising=False)
    # What the commands set for themselves, set here so the test restores it afterwards.
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return redis_url


def stream(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(ticker, date) -> its last envelope on the stream."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        entries = [json.loads(f["data"]) for _, f in client.xrange(DEFAULT_STREAM_NAME)]
    return {
        (e["decision"]["target"]["ticker"], e["decision"]["target"]["trade_date"]): e
        for e in entries
    }


def assert_tradingagents(envelope: dict[str, Any], ticker: str) -> None:
    verdict = TA_CASES[ticker][1]
    synthesis = envelope["decision"]["synthesis"]
    assert (synthesis["verdict"], synthesis["confidence"]) == (verdict, 0.0), ticker
    assert envelope["meta"] == ta_meta(ticker)


def assert_hedge_fund(envelope: dict[str, Any], ticker: str) -> None:
    action, confidence, quantity, verdict = HF_CASES[ticker]
    synthesis = envelope["decision"]["synthesis"]
    assert synthesis["verdict"] == verdict, ticker
    assert math.isclose(synthesis["confidence"], confidence / 100)
    meta = envelope["meta"]
    assert (meta["framework"], meta["action"], meta["quantity"]) == (
        "ai-hedge-fund",
        action,
        quantity,
    )
    assert meta["confidence_raw"] == confidence and "degraded" not in meta
    assert meta["confidence_source"] == "ai-hedge-fund decisions confidence (0-100) / 100"
    assert [s["agent"] for s in envelope["decision"]["agent_signals"]] == [
        "technical_analyst_agent",
        "warren_buffett_agent",
    ]


@pytest.mark.slow  # eleven flow runs
def test_ti_run_publishes_every_rating_and_action_as_mapped(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for ticker, (_, verdict) in TA_CASES.items():
        assert main(["run", ticker, "--date", DAY, "--arena", TA]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{ticker} {DAY}: {verdict} confidence 0.00 -> stream"), out
    for ticker, (_, confidence, _, verdict) in HF_CASES.items():
        assert main(["run", ticker, "--date", DAY2, "--arena", HF]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{ticker} {DAY2}: {verdict} confidence {confidence / 100:.2f}")
    published = stream(env)
    for ticker in TA_CASES:
        assert_tradingagents(published[(ticker, DAY)], ticker)
    for ticker in HF_CASES:
        assert_hedge_fund(published[(ticker, DAY2)], ticker)

    for ticker, why in TA_DEFAULTS.items():  # parse_rating's default "Hold" is no decision
        assert main(["run", ticker, "--date", DAY, "--arena", TA]) == 1
        captured = capsys.readouterr()
        (line,) = captured.err.splitlines()
        assert line.startswith(
            f"ti: {ticker} {DAY} not published: no verdict: tradingagents rating 'Hold' is its "
            f"default: the Portfolio Manager's {why}"
        )
        assert captured.out == "" and (ticker, DAY) not in stream(env)


@pytest.mark.slow  # three daily runs, fourteen decisions
def test_ti_daily_maps_each_ticker_and_fails_only_those_without_a_verdict(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tradingagents_standin.GRAPH
    graph.max_in_flight = 0
    tickers = [*TA_CASES, "REFUSE"]
    assert main(["daily", "--tickers", ",".join(tickers), "--date", DAY, "--arena", TA]) == 1
    captured = capsys.readouterr()
    assert (
        f"REFUSE {DAY}: FAILED build-envelope: no verdict: tradingagents rating 'Hold' is its "
        "default" in captured.out
    )
    (error,) = captured.err.splitlines()
    assert error.startswith(f"ti: daily run failed: 1 of 6 decisions failed for {DAY}: REFUSE")
    assert graph.max_in_flight == 1  # four arena runs in flight, one propagate at a time

    hf = [*HF_CASES, "LLMFAIL", "OMIT"]
    assert main(["daily", "--tickers", ",".join(hf), "--date", DAY2, "--arena", HF]) == 1
    out = capsys.readouterr().out
    assert (
        f"LLMFAIL {DAY2}: FAILED build-envelope: no verdict: ai-hedge-fund's portfolio "
        "manager decided nothing: its LLM call failed" in out
    )
    assert (
        f"OMIT {DAY2}: FAILED build-envelope: no verdict: ai-hedge-fund decided nothing "
        "for OMIT" in out
    )
    published = stream(env)
    assert set(published) == {(t, DAY) for t in TA_CASES} | {(t, DAY2) for t in HF_CASES}
    for ticker in TA_CASES:
        assert_tradingagents(published[(ticker, DAY)], ticker)
    for ticker in HF_CASES:
        assert_hedge_fund(published[(ticker, DAY2)], ticker)

    assert (
        main(["daily", "--tickers", "LLMFAIL", "--date", DAY, "--arena", HF, "--publish-degraded"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"LLMFAIL {DAY}: HOLD confidence 0.00 [DEGRADED: no verdict in the arena state]" in out
    meta = stream(env)[("LLMFAIL", DAY)]["meta"]
    assert meta["degraded"] is True and meta["action"] == "hold"
    assert meta["degraded_reason"].startswith("no verdict: ai-hedge-fund's portfolio manager")


def test_ti_backfill_maps_each_rating_and_action(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    day = ["--start", DAY, "--end", DAY]
    assert main(["backfill", "--tickers", ",".join(TA_CASES), *day, "--arena", TA]) == 0
    assert (
        main(
            [
                "backfill",
                "--tickers",
                ",".join(HF_CASES),
                "--start",
                DAY2,
                "--end",
                DAY2,
                "--arena",
                HF,
            ]
        )
        == 0
    )
    published = stream(env)
    for ticker in TA_CASES:
        assert_tradingagents(published[(ticker, DAY)], ticker)
    for ticker in HF_CASES:
        assert_hedge_fund(published[(ticker, DAY2)], ticker)
    capsys.readouterr()

    defaults = ",".join(TA_DEFAULTS)
    assert main(["backfill", "--tickers", defaults, *day, "--arena", TA]) == 1
    err = capsys.readouterr().err
    for ticker in TA_DEFAULTS:
        assert (
            f"{ticker} {DAY}: NoVerdictError: no verdict: tradingagents rating 'Hold' is its" in err
        )
        assert (ticker, DAY) not in stream(env)
    assert (
        main(
            [
                "backfill",
                "--tickers",
                defaults,
                *day,
                "--arena",
                TA,
                "--only",
                "failed",
                "--publish-degraded",
            ]
        )
        == 0
    )
    for ticker in TA_DEFAULTS:
        envelope = stream(env)[(ticker, DAY)]
        assert envelope["decision"]["synthesis"]["verdict"] == "HOLD"
        meta = envelope["meta"]
        assert meta["degraded"] is True and meta["rating"] == "Hold"
        assert meta["degraded_reason"].startswith("no verdict: tradingagents rating 'Hold' is its")


@pytest.fixture
def partial(tmp_path: Path, sample_states: dict[str, dict[str, Any]]) -> Path:
    (tmp_path / "replay" / "AAPL").mkdir(parents=True)
    (tmp_path / "replay" / "AAPL" / f"{DAY}.json").write_text(
        json.dumps(sample_states["aapl-2026-05-11-partial"])
    )
    return tmp_path / "replay"


NO_VERDICT = (
    "no verdict: the state has no synthesis_verdict or signal (state keys: "
    "agent_signals, arena_id, arena_total_seconds, llm_model, phase_timings, "
    "source_metrics, target)"
)


def test_no_verdict_fails_run_and_backfill_unless_published_degraded(
    env: str, partial: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arena = ["--arena", f"replay:{partial}"]
    assert main(["run", "AAPL", "--date", DAY, *arena]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ti: AAPL {DAY} not published: {NO_VERDICT}")
    assert "degraded: TI_PUBLISH_DEGRADED=1 [flow run " in line  # the core names its setting,
    assert line.endswith("(on the command line: --publish-degraded)")  # the command its flag
    assert main(["backfill", "--tickers", "AAPL", "--start", DAY, "--end", DAY, *arena]) == 1
    assert f"AAPL {DAY}: NoVerdictError: {NO_VERDICT}" in capsys.readouterr().err
    assert stream(env) == {}

    assert main(["run", "AAPL", "--date", DAY, *arena, "--publish-degraded"]) == 0
    out = capsys.readouterr().out
    assert f"AAPL {DAY}: HOLD confidence 0.00 [DEGRADED: no verdict in the arena state]" in out
    assert main(["get", "AAPL", DAY]) == 0
    assert "[DEGRADED: no verdict in the arena state]" in capsys.readouterr().out
    meta = stream(env)[("AAPL", DAY)]["meta"]
    assert meta["degraded"] is True and meta["degraded_reason"] == NO_VERDICT

    os.environ["TI_PUBLISH_DEGRADED"] = "1"  # the setting does what the flag does (env undoes)
    assert (
        main(
            ["backfill", "--tickers", "AAPL", "--start", DAY, "--end", DAY, *arena, "--only", "all"]
        )
        == 0
    )
    del os.environ["TI_PUBLISH_DEGRADED"]


async def test_degraded_shows_on_the_card_and_the_run_table(env: str, partial: Path) -> None:
    from flows.pipeline import publish_decision
    from tests.test_flows import artifacts

    state = await publish_decision(
        "AAPL", DAY, f"replay:{partial}", publish_degraded=True, return_state=True
    )
    row = await state.result()
    assert row["degraded"] is True and row["verdict"] == "HOLD"
    run_id = state.state_details.flow_run_id
    (card,) = await artifacts("decision-aapl-2026-05-11", run_id)
    assert f"AAPL {DAY}: HOLD (DEGRADED: no verdict in the arena state)" in card.data
    assert NO_VERDICT in card.data
    (table,) = await artifacts("publish-aapl-2026-05-11", run_id)
    assert json.loads(table.data)[0]["degraded"] is True


def _storage() -> dict[Path, int]:
    root = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def bad_states(tmp_path: Path) -> Iterator[Path]:
    """BIG: 256 MiB (sparse; reading it would take seconds and fail as 'not valid JSON');
    DEEP: nested 900 deep, which made Prefect's hashing recurse to death; NAN: not JSON."""
    root = tmp_path / "replay"
    (root / "NAN").mkdir(parents=True)
    (root / "NAN" / f"{DAY}.json").write_text('{"synthesis_verdict": "BUY", "x": [NaN]}')
    for name in ("BIG", "DEEP"):
        (root / name).mkdir(parents=True)
    with (root / "BIG" / f"{DAY}.json").open("wb") as handle:
        handle.truncate(256 << 20)
    (root / "DEEP" / f"{DAY}.json").write_text(
        '{"synthesis_verdict": "BUY", "phase_timings": [' + "[" * 900 + "]" * 900 + "]}"
    )
    yield root


def test_oversized_and_deep_states_get_one_refusal_whichever_command(
    env: str, bad_states: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = (
        f"arena state {bad_states / 'BIG' / DAY}.json is 268435456 bytes, over the "
        "4194304-byte limit (setting TI_MAX_STATE_BYTES)"
    )
    deep = f"arena state {bad_states / 'DEEP' / DAY}.json is nested over 64 deep"
    nan = f"arena state {bad_states / 'NAN' / DAY}.json: state.x[0] is nan, which is not JSON"
    before = _storage()
    arena = ["--arena", f"replay:{bad_states}"]
    for ticker, message in (("BIG", big), ("DEEP", deep), ("NAN", nan)):
        assert main(["run", ticker, "--date", DAY, *arena]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"ti: {ticker} {DAY} not published: {message}"), line
    assert (
        main(["backfill", "--tickers", "BIG,DEEP,NAN", "--start", DAY, "--end", DAY, *arena]) == 1
    )
    err = capsys.readouterr().err
    for ticker, message in (("BIG", big), ("DEEP", deep), ("NAN", nan)):
        assert f"{ticker} {DAY}: InvalidStateError: {message}" in err

    # In-process arenas: refused inside run-arena, before Prefect hashes or stores the state.
    for name, message in (("huge_arena", "is at least"), ("deep_arena", "is nested over 64")):
        assert main(["run", "NVDA", "--date", DAY, "--arena", f"tests.bounds_arena:{name}"]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert f"published: arena tests.bounds_arena:{name} state for NVDA {DAY} {message}" in line
    grown = {p: size for p, size in _storage().items() if before.get(p) != size}
    assert all(size < SMALL for size in grown.values()), grown
    assert stream(env) == {}


@pytest.mark.slow  # a child ti imports Prefect
def test_ti_run_subprocess_refuses_a_deep_state_in_one_line(
    tmp_path: Path, bad_states: Path, env: str
) -> None:
    """The reported case: ``ti run`` died in Prefect with RecursionError; now one line."""
    from prefect.settings import PREFECT_API_URL

    storage = tmp_path / "results"
    shell = clean_env(
        tmp_path,
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        TI_REDIS_URL=env,
        PREFECT_LOCAL_STORAGE_PATH=str(storage),
    )
    out = subprocess.run(
        [TI, "run", "DEEP", "--date", DAY, "--arena", f"replay:{bad_states}"],
        env=shell,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith(
        f"ti: DEEP {DAY} not published: arena state "
        f"{bad_states / 'DEEP' / DAY}.json is nested over 64 deep"
    )
    assert "RecursionError" not in line
    sizes = [p.stat().st_size for p in storage.rglob("*") if p.is_file()]
    assert all(size < SMALL for size in sizes), sizes


@pytest.mark.slow  # a flow run with a task retry
async def test_a_rate_limited_first_call_is_retried_then_published(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import publish_decision
    from tests.test_provider_errors import rate_limited
    from tests.test_run_story import _story

    monkeypatch.setenv("TI_TASK_RETRIES", "1")
    monkeypatch.setenv("TI_TASK_RETRY_DELAY", "0.1")
    graph = tradingagents_standin.GRAPH
    graph.failures = [rate_limited({"retry-after": "0.3"})]
    state = await publish_decision("UW", DAY, TA, return_state=True)
    assert state.is_completed(), state.message
    assert not graph.failures
    assert_tradingagents(stream(env)[("UW", DAY)], "UW")
    messages, _ = await _story(state.state_details.flow_run_id, {"run-arena-UW-2026-05-11"})
    retry = [m for m in messages if "Retry 1/1 will start" in m]
    assert retry and "openai.RateLimitError (HTTP 429, retry after 0.3 s)" in retry[0], messages
    # Prefect waits 0.1 s (TI_TASK_RETRY_DELAY), the task the rest the provider asked for
    wait = f"UW {DAY}: waiting 0.20 s more before the retry, as the provider asked (Retry-After)"
    assert wait in messages, messages


@pytest.mark.slow  # four flow runs
def test_ti_run_publishes_ai_hedge_fund_decisions_not_its_fallbacks(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream's shapes (tests/hedgefund_standin.py): short 85 is SELL 0.85; the portfolio
    manager's hold after three failed LLM calls, and its pre-filled hold when the market-data
    API answered 500, are not published; the framework's prints stay off the output. A 2.x
    cycle that trims a position is SELL."""
    assert main(["run", "SHORT", "--date", DAY, "--arena", HF]) == 0
    out = capsys.readouterr().out
    (line,) = out.splitlines()
    assert line.startswith(f"SHORT {DAY}: SELL confidence 0.85 -> stream"), out
    for ticker, why in (
        ("LLMFAIL", "its LLM call failed, it fell back to hold ('Default decision: hold')"),
        ("HTTP500", "no trade possible (no price), it pre-filled hold ('No valid trade"),
    ):
        assert main(["run", ticker, "--date", DAY, "--arena", HF]) == 1
        captured = capsys.readouterr()
        (error,) = captured.err.splitlines()
        assert error.startswith(
            f"ti: {ticker} {DAY} not published: no verdict: ai-hedge-fund's portfolio manager "
            f"decided nothing: {why}"
        ), error
        assert captured.out == ""
    hf2 = "hedgefund2:tests.hedgefund2_standin:assess"
    assert main(["run", "HELD", "--date", DAY, "--arena", hf2]) == 0
    assert capsys.readouterr().out.startswith(f"HELD {DAY}: SELL confidence 0.00 -> stream")
    published = stream(env)
    assert set(published) == {("SHORT", DAY), ("HELD", DAY)}
    assert published[("SHORT", DAY)]["meta"]["action"] == "short"
    assert published[("HELD", DAY)]["meta"]["orders"] == [
        {"side": "sell", "quantity": 40, "price": 50.0}
    ]
