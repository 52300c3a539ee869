"""The builder's rules for the target (ticker, date) and for signals and source metrics."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import pytest

from tests.builder_cases import base, build, refused, signal

# -- target ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["NVDA", ["NVDA"], 5])
def test_target_that_is_not_a_mapping_is_refused(target: Any) -> None:
    refused(base(target=target), "target", repr(target))


@pytest.mark.parametrize(
    ("raw", "ticker"),
    [
        ("BRK.B", "BRK.B"),
        ("BF-B", "BF-B"),
        ("^GSPC", "^GSPC"),
        ("ES=F", "ES=F"),
        (" nvda ", "NVDA"),
        ("7203.T", "7203.T"),
        ("btc_usd", "BTC_USD"),
    ],
)
def test_tickers_allowed(raw: str, ticker: str) -> None:
    envelope = build(base(target={"ticker": raw, "trade_date": "2026-05-11"}))
    assert envelope.decision.target.ticker == ticker


@pytest.mark.parametrize(
    "raw",
    [
        "NV:DA*",
        "A B",
        "{X}",
        "A/B",
        "\x00",
        "",
        "   ",
        "A\nB",
        "A*",
        "A?",
        "[A]",
        "...",
        "^",
        "X" * 21,
        "NVDA\u0301",
        5,
        ["NVDA"],
    ],
)
def test_tickers_refused(raw: Any) -> None:
    message = refused(base(target={"ticker": raw, "trade_date": "2026-05-11"}), "ticker")
    if raw:  # the empty ticker is reported as missing; the others name the value
        assert repr(raw)[:20] in message


def test_no_ticker_anywhere_is_refused() -> None:
    refused({"target": {"trade_date": "2026-05-11"}}, "target.ticker", "missing")
    refused({"target": {"ticker": "NVDA"}}, "trade_date", "missing")


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2026-05-11", "2026-05-11"),
        (date(2026, 5, 11), "2026-05-11"),
        (datetime(2026, 5, 11, 23, 59), "2026-05-11"),
        ("2026-05-11T14:30:00", "2026-05-11"),
        ("2026-05-11T14:30:00+00:00", "2026-05-11"),
        ("20260511", "2026-05-11"),
        (" 2026-05-11 ", "2026-05-11"),
    ],
)
def test_dates_accepted(raw: Any, iso: str) -> None:
    assert build(base(target={"ticker": "NVDA", "trade_date": raw})).decision.target.trade_date == (
        iso
    )


@pytest.mark.parametrize(
    "raw",
    [
        "2026-02-30",
        "2026-13-01",
        "garbage",
        "11/05/2026",
        "2026-5-11",
        20260511,
        1.5,
        ["2026-05-11"],
    ],
)
def test_dates_refused(raw: Any) -> None:
    refused(base(target={"ticker": "NVDA", "trade_date": raw}), "trade_date", repr(raw)[:12])


def test_date_key_is_read_when_trade_date_is_absent() -> None:
    state = base(target={"ticker": "AAPL", "date": "2026-05-11"})
    assert build(state).decision.target.trade_date == "2026-05-11"


def test_caller_ticker_mismatch_is_refused() -> None:
    refused(base(), "target.ticker", "'NVDA'", "'AAPL'", ticker="AAPL")


def test_caller_date_mismatch_is_refused() -> None:
    refused(base(), "target.trade_date", "2026-05-11", "2026-05-12", trade_date="2026-05-12")


def test_caller_values_that_agree_after_normalising_are_fine() -> None:
    e = build(base(), ticker=" nvda", trade_date=datetime(2026, 5, 11, 9, 30))
    assert (e.decision.target.ticker, e.decision.target.trade_date) == ("NVDA", "2026-05-11")


@pytest.mark.parametrize("target", [None, {}, {"exchange": "NASDAQ"}])
def test_state_without_target_takes_the_callers(target: Any) -> None:
    state = base(target=target)
    e = build(state, ticker="brk.b", trade_date=date(2026, 5, 12))
    assert (e.decision.target.ticker, e.decision.target.trade_date) == ("BRK.B", "2026-05-12")


def test_invalid_caller_ticker_is_refused_even_without_state_target() -> None:
    refused(base(target=None), "ticker", "'NV:DA*'", ticker="NV:DA*", trade_date="2026-05-11")


# -- agent signals and source metrics --------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-signal",
        5,
        None,
        signal(confidence="high"),
        signal(confidence=85),
        signal(confidence=math.nan),
        signal(key_factors="one string"),
        signal(key_factors=[{"x": 1}]),
        signal(agent={"n": 1}),
        signal(summary=["x"]),
        signal(signal=3),
    ],
)
def test_malformed_agent_signal_is_skipped_with_a_warning(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="ti_core.builder"):
        e = build(base(agent_signals=[signal(agent="good"), bad]))
    assert [s.agent for s in e.decision.agent_signals] == ["good"]
    assert e.meta["agents_count"] == 1
    assert "agent_signals[1]" in caplog.text


def test_agent_signals_not_a_list_is_refused() -> None:
    refused(base(agent_signals={"a": 1}), "agent_signals")
    refused(base(agent_signals="abc"), "agent_signals")


def test_signal_text_is_bounded() -> None:
    raw = signal(
        summary="x" * 1000,
        key_factors=[f"f{i}" for i in range(30)] + [{"ignored": 1}],
        agent="  padded  ",
        confidence="0.9",
    )
    s = build(base(agent_signals=[raw])).decision.agent_signals[0]
    assert len(s.summary) == 300 and len(s.key_factors) == 10 and s.agent == "padded"
    assert s.confidence == 0.9


def test_key_factors_none_and_numbers() -> None:
    s = build(base(agent_signals=[signal(key_factors=None)])).decision.agent_signals[0]
    assert s.key_factors == []
    s = build(base(agent_signals=[signal(key_factors=[1, 2.5])])).decision.agent_signals[0]
    assert s.key_factors == ["1", "2.5"]


def test_lone_surrogates_become_replacement_text() -> None:
    e = build(base(synthesis_reasoning="bad \ud800 char", arena_id="id\udfff"))
    assert e.decision.synthesis.reasoning == "bad ? char" and e.arena_id == "id?"
    e.model_dump_json().encode("utf-8")


def test_source_metrics_are_summarised() -> None:
    metrics = [
        {"source": "prices", "success": True, "result_bytes": "1200"},
        {"source": "prices", "success": True, "result_bytes": 10},
        {"source": "", "success": None},
        {"source": "news", "success": "yes", "result_bytes": "lots"},
        "junk",
        {"source": "x\ud800", "success": True, "result_bytes": -5},
    ]
    m = build(base(source_metrics=metrics)).decision.source_metrics
    assert (m.total_calls, m.successful, m.failed, m.total_bytes) == (5, 3, 2, 1210)
    assert m.by_source == {"prices": 2, "news": 1, "x?": 1}


@pytest.mark.parametrize("odd", [["news"], {"name": "news"}, None, 7])
def test_a_source_name_that_is_not_text_is_dropped_and_the_others_counted_once(odd: Any) -> None:
    """Unhashable names among hashable ones included (they once made the others count twice)."""
    metrics = [{"source": name, "success": True, "result_bytes": 1} for name in ("news", odd)]
    metrics.append({"source": "prices", "success": False, "result_bytes": 2})
    m = build(base(source_metrics=metrics)).decision.source_metrics
    assert (m.total_calls, m.successful, m.total_bytes) == (3, 2, 4)
    assert m.by_source == {"news": 1, "prices": 1}


def test_source_metrics_not_a_list_is_refused() -> None:
    refused(base(source_metrics={"source": "x"}), "source_metrics")
