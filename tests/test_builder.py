"""The builder's rules for defaults, words, numbers, JSON parts, text bounds and the size cap.

Target, signal and source-metric rules are in test_builder_parts (see builder.py's docstring)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.builder_cases import TARGET, base, build, refused, signal
from ti_core import InvalidStateError, TiError
from ti_core.build.builder import MAX_ENVELOPE_BYTES, REASONING_MAX_CHARS
from ti_core.build.coerce import MAX_JSON_DEPTH


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


@pytest.mark.parametrize(
    ("raw", "verdict"),
    [
        (" buy ", "BUY"),
        ("Sell", "SELL"),
        ("hold\n", "HOLD"),
        ("strong buy", "HOLD"),
        ("", "HOLD"),
    ],
)
def test_verdict_words_are_trimmed_upper_cased_or_hold(raw: str, verdict: str) -> None:
    assert build(base(synthesis_verdict=raw)).decision.synthesis.verdict == verdict


def test_unknown_verdict_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        build(base(synthesis_verdict="moon"))
    assert "synthesis_verdict 'moon'" in caplog.text


def test_non_string_verdict_is_refused() -> None:
    refused(base(synthesis_verdict=["BUY"]), "synthesis_verdict", "['BUY']")


@pytest.mark.parametrize(
    ("raw", "direction"),
    [
        ("bullish", "BULLISH"),
        (" Bearish ", "BEARISH"),
        ("sideways", "NEUTRAL"),
        (None, "NEUTRAL"),
    ],
)
def test_signal_words(raw: Any, direction: str) -> None:
    assert build(base(agent_signals=[signal(signal=raw)])).decision.agent_signals[0].signal == (
        direction
    )


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        85,
        1.0001,
        -0.1,
        math.nan,
        math.inf,
        -math.inf,
        "nan",
        "inf",
        "abc",
        "1e999",
        True,
        [0.5],
        {"v": 1},
        Decimal("NaN"),
        Decimal("sNaN"),
        10**400,
    ],
)
def test_bad_synthesis_confidence_is_refused(value: Any) -> None:
    refused(base(synthesis_confidence=value), "synthesis_confidence")


def test_confidence_message_names_field_and_value() -> None:
    message = refused(base(synthesis_confidence=85), "synthesis_confidence", "85", "[0.0, 1.0]")
    assert message.startswith("synthesis_confidence")


@pytest.mark.parametrize("value", ["abc", 1.5, -1.5, math.nan, "-inf", False])
def test_bad_score_is_refused(value: Any) -> None:
    refused(base(synthesis_score=value), "synthesis_score", repr(value)[:20])


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0.7", 0.7),
        (" 0.25 ", 0.25),
        (1, 1.0),
        (0, 0.0),
        (Decimal("0.5"), 0.5),
        (None, 0.0),
    ],
)
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


# -- JSON parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timing",
    [
        {"phase": "x", "seconds": math.nan},
        {"phase": "x", "seconds": math.inf},
        {"phase": "x", "tags": {1, 2}},
        {"phase": object()},
        {"phase": "x\ud800"},
    ],
)
def test_phase_timing_that_json_cannot_encode_is_refused(timing: dict[str, Any]) -> None:
    refused(base(phase_timings=[timing]), "phase_timings[0]")


def test_phase_timings_must_be_a_list_of_mappings() -> None:
    refused(base(phase_timings={1, 2}), "phase_timings")
    refused(base(phase_timings=["gather"]), "phase_timings[0]", "'gather'")


def test_phase_timings_are_kept_in_json_form() -> None:
    e = build(base(phase_timings=[{"phase": "gather", "seconds": 1.5, "steps": (1, 2), 3: "x"}]))
    assert e.decision.phase_timings == [
        {"phase": "gather", "seconds": 1.5, "steps": [1, 2], "3": "x"}
    ]


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
    e = build(
        base(
            synthesis_reasoning="r" * 10_000,
            arena_id="i" * 500,
            llm_model="m" * 500,
            target={**TARGET, "exchange": "e" * 500, "asset_class": " crypto "},
        )
    )
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
