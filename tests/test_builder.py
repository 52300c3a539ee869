"""Every coercion and refusal rule of ``build_envelope_from_state`` (see builder.py's docstring)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ti_core import InvalidStateError, TiError, build_envelope_from_state, decode_envelope
from ti_core.builder import MAX_ENVELOPE_BYTES, MAX_JSON_DEPTH, REASONING_MAX_CHARS
from ti_core.models import TradingIntelligenceEnvelope

TARGET = {"ticker": "NVDA", "trade_date": "2026-05-11"}


def base(**overrides: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "target": dict(TARGET),
        "synthesis_verdict": "BUY",
        "synthesis_confidence": 0.7,
        "synthesis_score": 0.3,
    }
    state.update(overrides)
    return state


def signal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "agent": "a", "domain": "d", "signal": "bullish", "confidence": 0.5,
        "summary": "s", "key_factors": ["k"],
    }
    raw.update(overrides)
    return raw


def build(state: Any, **kwargs: Any) -> TradingIntelligenceEnvelope:
    envelope = build_envelope_from_state(state, **kwargs)
    assert decode_envelope(envelope.model_dump_json()) == envelope  # every envelope round-trips
    return envelope


def refused(state: Any, *names: str, **kwargs: Any) -> str:
    """The builder refuses with InvalidStateError whose message holds every name given."""
    with pytest.raises(InvalidStateError) as info:
        build_envelope_from_state(state, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


def test_invalid_state_error_is_a_ti_error_and_a_value_error() -> None:
    assert issubclass(InvalidStateError, TiError) and issubclass(InvalidStateError, ValueError)


# -- defaults ---------------------------------------------------------------------------------


def test_missing_synthesis_holds_with_zero_confidence() -> None:
    s = build({"target": TARGET}).decision.synthesis
    assert (s.verdict, s.confidence, s.ensemble_score, s.reasoning) == ("HOLD", 0.0, 0.0, "")


def test_missing_parts_default() -> None:
    e = build({"target": TARGET})
    d = e.decision
    assert d.agent_signals == [] and d.phase_timings == [] and d.arena_total_seconds is None
    assert d.source_metrics.total_calls == 0 and d.target.asset_class == "equity"
    assert e.meta == {"agents_count": 0, "model_used": ""} and e.arena_id == ""
    assert len(e.correlation_id) == 32 and e.published_at.tzinfo is not None


def test_blank_numbers_count_as_missing() -> None:
    e = build(base(synthesis_confidence="", synthesis_score="  ", arena_total_seconds=" "))
    assert e.decision.synthesis.confidence == 0.0 and e.decision.arena_total_seconds is None


def test_verdict_falls_back_to_signal_key() -> None:
    state = base(signal="sell")
    del state["synthesis_verdict"]
    assert build(state).decision.synthesis.verdict == "SELL"


# -- verdict and signal words ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "verdict"), [
    (" buy ", "BUY"), ("Sell", "SELL"), ("hold\n", "HOLD"), ("strong buy", "HOLD"), ("", "HOLD"),
])
def test_verdict_words_are_trimmed_upper_cased_or_hold(raw: str, verdict: str) -> None:
    assert build(base(synthesis_verdict=raw)).decision.synthesis.verdict == verdict


def test_unknown_verdict_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        build(base(synthesis_verdict="moon"))
    assert "synthesis_verdict 'moon'" in caplog.text


def test_non_string_verdict_is_refused() -> None:
    refused(base(synthesis_verdict=["BUY"]), "synthesis_verdict", "['BUY']")


@pytest.mark.parametrize(("raw", "direction"), [
    ("bullish", "BULLISH"), (" Bearish ", "BEARISH"), ("sideways", "NEUTRAL"), (None, "NEUTRAL"),
])
def test_signal_words(raw: Any, direction: str) -> None:
    assert build(base(agent_signals=[signal(signal=raw)])).decision.agent_signals[0].signal == (
        direction
    )


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [85, 1.0001, -0.1, math.nan, math.inf, -math.inf, "nan", "inf",
                                   "abc", "1e999", True, [0.5], {"v": 1}, Decimal("NaN"),
                                   Decimal("sNaN"), 10**400])
def test_bad_synthesis_confidence_is_refused(value: Any) -> None:
    refused(base(synthesis_confidence=value), "synthesis_confidence")


def test_confidence_message_names_field_and_value() -> None:
    message = refused(base(synthesis_confidence=85), "synthesis_confidence", "85", "[0.0, 1.0]")
    assert message.startswith("synthesis_confidence")


@pytest.mark.parametrize("value", ["abc", 1.5, -1.5, math.nan, "-inf", False])
def test_bad_score_is_refused(value: Any) -> None:
    refused(base(synthesis_score=value), "synthesis_score", repr(value)[:20])


@pytest.mark.parametrize(("value", "number"), [
    ("0.7", 0.7), (" 0.25 ", 0.25), (1, 1.0), (0, 0.0), (Decimal("0.5"), 0.5), (None, 0.0),
])
def test_numbers_from_numeric_strings_and_numbers(value: Any, number: float) -> None:
    assert build(base(synthesis_confidence=value)).decision.synthesis.confidence == number


def test_score_bounds_are_inclusive() -> None:
    assert build(base(synthesis_score=-1)).decision.synthesis.ensemble_score == -1.0
    assert build(base(synthesis_score="1")).decision.synthesis.ensemble_score == 1.0


@pytest.mark.parametrize("value", ["slow", -1, math.inf, math.nan, [1], True])
def test_bad_total_seconds_is_refused(value: Any) -> None:
    refused(base(arena_total_seconds=value), "arena_total_seconds")


def test_total_seconds_accepts_numbers_and_numeric_strings() -> None:
    assert build(base(arena_total_seconds="82.5")).decision.arena_total_seconds == 82.5
    assert build(base(arena_total_seconds=0)).decision.arena_total_seconds == 0.0


# -- target ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["NVDA", ["NVDA"], 5])
def test_target_that_is_not_a_mapping_is_refused(target: Any) -> None:
    refused(base(target=target), "target", repr(target))


@pytest.mark.parametrize(("raw", "ticker"), [
    ("BRK.B", "BRK.B"), ("BF-B", "BF-B"), ("^GSPC", "^GSPC"), ("ES=F", "ES=F"), (" nvda ", "NVDA"),
    ("7203.T", "7203.T"), ("btc_usd", "BTC_USD"),
])
def test_tickers_allowed(raw: str, ticker: str) -> None:
    envelope = build(base(target={"ticker": raw, "trade_date": "2026-05-11"}))
    assert envelope.decision.target.ticker == ticker


@pytest.mark.parametrize("raw", [
    "NV:DA*", "A B", "{X}", "A/B", "\x00", "", "   ", "A\nB", "A*", "A?", "[A]", "...", "^",
    "X" * 21, "NVDA\u0301", 5, ["NVDA"],
])
def test_tickers_refused(raw: Any) -> None:
    message = refused(base(target={"ticker": raw, "trade_date": "2026-05-11"}), "ticker")
    if raw:  # the empty ticker is reported as missing; the others name the value
        assert repr(raw)[:20] in message


def test_no_ticker_anywhere_is_refused() -> None:
    refused({"target": {"trade_date": "2026-05-11"}}, "target.ticker", "missing")
    refused({"target": {"ticker": "NVDA"}}, "trade_date", "missing")


@pytest.mark.parametrize(("raw", "iso"), [
    ("2026-05-11", "2026-05-11"), (date(2026, 5, 11), "2026-05-11"),
    (datetime(2026, 5, 11, 23, 59), "2026-05-11"), ("2026-05-11T14:30:00", "2026-05-11"),
    ("2026-05-11T14:30:00+00:00", "2026-05-11"), ("20260511", "2026-05-11"),
    (" 2026-05-11 ", "2026-05-11"),
])
def test_dates_accepted(raw: Any, iso: str) -> None:
    assert build(base(target={"ticker": "NVDA", "trade_date": raw})).decision.target.trade_date == (
        iso
    )


@pytest.mark.parametrize("raw", ["2026-02-30", "2026-13-01", "garbage", "11/05/2026", "2026-5-11",
                                 20260511, 1.5, ["2026-05-11"]])
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


@pytest.mark.parametrize("bad", [
    "not-a-signal", 5, None, signal(confidence="high"), signal(confidence=85),
    signal(confidence=math.nan), signal(key_factors="one string"), signal(key_factors=[{"x": 1}]),
    signal(agent={"n": 1}), signal(summary=["x"]), signal(signal=3),
])
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
    raw = signal(summary="x" * 1000, key_factors=[f"f{i}" for i in range(30)] + [{"ignored": 1}],
                 agent="  padded  ", confidence="0.9")
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


def test_source_metrics_not_a_list_is_refused() -> None:
    refused(base(source_metrics={"source": "x"}), "source_metrics")


# -- JSON parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timing", [
    {"phase": "x", "seconds": math.nan}, {"phase": "x", "seconds": math.inf},
    {"phase": "x", "tags": {1, 2}}, {"phase": object()}, {"phase": "x\ud800"},
])
def test_phase_timing_that_json_cannot_encode_is_refused(timing: dict[str, Any]) -> None:
    refused(base(phase_timings=[timing]), "phase_timings[0]")


def test_phase_timings_must_be_a_list_of_mappings() -> None:
    refused(base(phase_timings={1, 2}), "phase_timings")
    refused(base(phase_timings=["gather"]), "phase_timings[0]", "'gather'")


def test_phase_timings_are_kept_in_json_form() -> None:
    e = build(base(phase_timings=[{"phase": "gather", "seconds": 1.5, "steps": (1, 2), 3: "x"}]))
    assert e.decision.phase_timings == [{"phase": "gather", "seconds": 1.5, "steps": [1, 2],
                                         "3": "x"}]


def test_json_nested_too_deep_is_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    refused(base(phase_timings=[{"x": deep}]), "phase_timings[0]", "nested")
    refused(base(), "extra_meta", "nested", extra_meta={"x": deep})
    # 200-odd levels would serialise but no decoder would read them back
    for _ in range(200):
        deep = [deep]
    refused(base(), "extra_meta", extra_meta={"x": deep})


def test_cyclic_json_is_refused() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    refused(base(phase_timings=[cyclic]), "phase_timings[0]")


def test_extra_meta_merges_and_must_be_json() -> None:
    e = build(base(llm_model="m"), extra_meta={"run": "r1", "n": 2})
    assert e.meta == {"agents_count": 0, "model_used": "m", "run": "r1", "n": 2}
    refused(base(), "extra_meta", extra_meta={"when": datetime(2026, 1, 1)})
    refused(base(), "extra_meta", extra_meta={"x": math.nan})
    refused(base(), "extra_meta", extra_meta={1: "x"})
    refused(base(), "extra_meta", extra_meta=["x"])


# -- text bounds and size cap ---------------------------------------------------------------


def test_text_bounds() -> None:
    e = build(base(synthesis_reasoning="r" * 10_000, arena_id="i" * 500, llm_model="m" * 500,
                   target={**TARGET, "exchange": "e" * 500, "asset_class": " crypto "}))
    assert len(e.decision.synthesis.reasoning) == REASONING_MAX_CHARS
    assert len(e.arena_id) == 200 and len(e.meta["model_used"]) == 200
    assert len(e.decision.target.exchange) == 200 and e.decision.target.asset_class == "crypto"


def test_non_text_fields_are_refused() -> None:
    refused(base(arena_id={"x": 1}), "arena_id")
    refused(base(llm_model=["m"]), "llm_model")
    refused(base(synthesis_reasoning=b"bytes"), "synthesis_reasoning")
    refused(base(target={**TARGET, "exchange": True}), "target.exchange")


def test_numbers_as_text_become_strings() -> None:
    assert build(base(arena_id=42)).arena_id == "42"
    refused(base(arena_id=10**5000), "arena_id")  # too long to print: still InvalidStateError


def test_envelope_over_the_size_cap_is_refused() -> None:
    timings = [{"phase": f"p{i}", "note": "x" * 1000} for i in range(70)]
    message = refused(base(phase_timings=timings), "bytes", str(MAX_ENVELOPE_BYTES))
    assert "cap" in message
    ok = build(base(phase_timings=timings[:50]))
    assert len(ok.model_dump_json().encode()) <= MAX_ENVELOPE_BYTES


def test_messages_truncate_long_values() -> None:
    message = refused(base(synthesis_confidence="9" * 5000), "synthesis_confidence")
    assert len(message) < 300 and "..." in message


# -- caller arguments --------------------------------------------------------------------------


def test_correlation_id_and_published_at() -> None:
    cid = "ab" * 16
    moment = datetime(2026, 5, 11, 16, 0, tzinfo=timezone(timedelta(hours=-4)))
    e = build(base(), correlation_id=cid, published_at=moment)
    assert e.correlation_id == cid and e.published_at == moment
    assert e.published_at.utcoffset() == timedelta(0)
    refused(base(), "correlation_id", correlation_id="not-hex")
    refused(base(), "correlation_id", correlation_id="AB" * 16)
    refused(base(), "published_at", published_at=datetime(2026, 5, 11))
    refused(base(), "published_at", published_at="2026-05-11")


def test_published_at_that_overflows_utc_is_refused() -> None:
    moment = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    refused(base(), "OverflowError", published_at=moment)


@pytest.mark.parametrize("state", [None, "state", 5, ["target"], b"{}"])
def test_state_that_is_not_a_mapping_is_refused(state: Any) -> None:
    refused(state, "state")


class Hostile(Mapping[str, Any]):
    """A mapping whose lookups fail with an unexpected exception."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(["target"])

    def __len__(self) -> int:
        return 1


def test_hostile_mapping_still_gives_invalid_state_error() -> None:
    refused(Hostile(), "RuntimeError")


def test_mapping_types_other_than_dict_work() -> None:
    from types import MappingProxyType

    e = build(MappingProxyType(base(agent_signals=(signal(),))))
    assert e.decision.synthesis.verdict == "BUY" and len(e.decision.agent_signals) == 1


def test_builder_output_is_json_and_utc() -> None:
    payload = build(base()).model_dump_json()
    document = json.loads(payload)
    assert document["published_at"].endswith("Z")
    assert datetime.fromisoformat(document["published_at"]).tzinfo == UTC
