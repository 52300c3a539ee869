"""Our envelopes have exactly the v1 contract's shape: compared with the original module's output.

``tests/data/reference_expectations.json`` was produced once by
``bench/make_reference_expectations.py`` from the original module on the three sample states,
so these tests need nothing outside this repository.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ti_core import (
    DECISION_HASH_PREFIX,
    DEFAULT_STREAM_NAME,
    build_envelope_from_state,
    decision_hash_key,
    decode_envelope,
)
from ti_core.contract.hash_fields import hash_fields

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "reference_expectations.json").read_text())
CASES = REFERENCE["cases"]
CONTRACT_HASH_FIELDS = {
    "json",
    "ticker",
    "trade_date",
    "verdict",
    "confidence",
    "ensemble_score",
    "published_at",
    "correlation_id",
    "arena_id",
}
ENVELOPE_KEYS = [
    "schema_version",
    "arena",
    "decision",
    "published_at",
    "correlation_id",
    "arena_id",
    "meta",
]
DECISION_KEYS = [
    "target",
    "synthesis",
    "agent_signals",
    "source_metrics",
    "phase_timings",
    "arena_total_seconds",
]


def _build(name: str, **kwargs: Any) -> Any:
    state = json.loads((DATA / f"{name}.json").read_text())
    return build_envelope_from_state(
        state,
        correlation_id=REFERENCE["correlation_id"],
        published_at=datetime.fromisoformat(REFERENCE["published_at"]),
        **kwargs,
    )


def _shape(value: Any) -> Any:
    """Key names and nesting, with every leaf replaced by its JSON type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_names_match_the_contract() -> None:
    assert DEFAULT_STREAM_NAME == REFERENCE["stream_name"]
    assert DEFAULT_STREAM_NAME == "maf:arena:trading_intelligence:output"
    assert DECISION_HASH_PREFIX == REFERENCE["decision_hash_prefix"]
    assert DECISION_HASH_PREFIX == "maf:arena:trading_intelligence:decisions"


@pytest.mark.parametrize("name", sorted(CASES))
def test_envelope_equals_the_reference(name: str) -> None:
    expected = CASES[name]["envelope"]
    ours = json.loads(_build(name).model_dump_json())
    assert _shape(ours) == _shape(expected)
    assert ours == expected  # same values too (fixed correlation id and published_at)


@pytest.mark.parametrize("name", sorted(CASES))
def test_field_order_and_nesting_follow_the_contract(name: str) -> None:
    ours = json.loads(_build(name).model_dump_json())
    reference_order = json.loads(CASES[name]["hash"]["json"])  # the reference's own order
    assert list(ours) == ENVELOPE_KEYS == list(reference_order)
    assert list(ours["decision"]) == DECISION_KEYS == list(reference_order["decision"])
    assert list(ours["decision"]["target"]) == ["ticker", "trade_date", "exchange", "asset_class"]
    assert list(ours["decision"]["synthesis"]) == [
        "verdict",
        "confidence",
        "ensemble_score",
        "reasoning",
    ]
    assert list(ours["decision"]["source_metrics"]) == [
        "total_calls",
        "successful",
        "failed",
        "total_bytes",
        "by_source",
    ]
    for signal in ours["decision"]["agent_signals"]:
        assert list(signal) == ["agent", "domain", "signal", "confidence", "summary", "key_factors"]
    assert ours["schema_version"] == "1" and ours["arena"] == "trading_intelligence"
    assert list(ours["meta"]) == ["agents_count", "model_used"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_payload_is_byte_identical_to_the_reference(name: str) -> None:
    assert _build(name).model_dump_json() == CASES[name]["hash"]["json"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_lookup_hash_fields_and_key(name: str) -> None:
    envelope = _build(name)
    payload = envelope.model_dump_json()
    ours = hash_fields(envelope, payload)
    expected = CASES[name]["hash"]
    assert CONTRACT_HASH_FIELDS <= set(ours)
    assert set(expected) == CONTRACT_HASH_FIELDS  # the reference writes exactly these nine
    volatile = {"published_at", "correlation_id"}
    for field in CONTRACT_HASH_FIELDS - volatile:
        assert ours[field] == expected[field], field
    assert datetime.fromisoformat(ours["published_at"]) == datetime.fromisoformat(
        expected["published_at"]
    )
    assert all(isinstance(v, str) for v in ours.values())
    target = envelope.decision.target
    assert decision_hash_key(target.ticker, target.trade_date) == CASES[name]["hash_key"]
    assert CASES[name]["stream_fields"] == ["data"]
    assert decode_envelope(ours["json"]) == envelope


def test_volatile_fields_differ_but_shape_does_not() -> None:
    state = json.loads((DATA / "nvda-2026-05-11-full.json").read_text())
    ours = json.loads(build_envelope_from_state(state).model_dump_json())
    expected = CASES["nvda-2026-05-11-full"]["envelope"]
    assert len(ours["correlation_id"]) == 32 and int(ours["correlation_id"], 16) >= 0
    assert ours["published_at"].endswith("Z")
    for key in ("published_at", "correlation_id"):
        ours.pop(key), expected.pop(key)
    assert ours == {k: expected[k] for k in ours} and set(ours) == set(expected)


def test_nvda_buy() -> None:
    d = _build("nvda-2026-05-11-full").decision
    assert (d.synthesis.verdict, d.synthesis.confidence, d.synthesis.ensemble_score) == (
        "BUY",
        0.78,
        0.41,
    )
    assert len(d.agent_signals) == 5
    assert "narrative" not in _build("nvda-2026-05-11-full").model_dump_json()
    assert "Very long report" not in _build("nvda-2026-05-11-full").model_dump_json()


def test_aapl_partial_holds_with_date_under_date() -> None:
    d = _build("aapl-2026-05-11-partial").decision
    assert (d.synthesis.verdict, d.synthesis.confidence, d.synthesis.ensemble_score) == (
        "HOLD",
        0.0,
        0.0,
    )
    assert (d.target.ticker, d.target.trade_date) == ("AAPL", "2026-05-11")


def test_brkb_degraded_keeps_exactly_the_reference_signals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="ti_core.builder"):
        envelope = _build("brkb-2026-05-12-degraded")
    d = envelope.decision
    assert d.target.ticker == "BRK.B" and d.synthesis.verdict == "SELL"
    kept = [(s.agent, s.signal) for s in d.agent_signals]
    expected = [
        (s["agent"], s["signal"])
        for s in CASES["brkb-2026-05-12-degraded"]["envelope"]["decision"]["agent_signals"]
    ]
    assert (
        kept
        == expected
        == [
            ("fundamentals_analyst", "BEARISH"),
            ("sentiment_analyst", "NEUTRAL"),
        ]
    )
    assert envelope.meta["agents_count"] == 2
    text = caplog.text
    assert "agent_signals[1]" in text and "'not-a-signal'" in text
    assert "agent_signals[3].confidence" in text and "'high'" in text
    assert "'sideways'" in text


def test_caller_ticker_and_date_agree_with_samples() -> None:
    envelope = _build("brkb-2026-05-12-degraded", ticker=" brk.b ", trade_date="2026-05-12")
    assert envelope.decision.target.ticker == "BRK.B"
