"""The builder's fast path gives what full validation would: same models, same fields set.

The builder constructs its models without validating them again (``_fast.maker``) and
proves the 64 KiB cap from a size bound instead of serialising. These properties show both
are safe: validating a built envelope's dump gives an equal envelope with the same fields
set at every level, the bound is never below the real size, and a signal taken by the
one-go path equals what the field-by-field rules give.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.test_builder_properties import (
    caller_args,
    examples,
    known_states,
    signals,
    valid_signal,
    valid_states,
)
from ti_core import InvalidStateError, TradingIntelligenceEnvelope
from ti_core.build.builder import _build, _plain_signal, _signal


def same_models(fast: Any, validated: Any) -> None:
    """Equal values, and at every nested model the same type and the same fields set."""
    assert type(fast) is type(validated)
    if isinstance(fast, BaseModel):
        assert fast.model_fields_set == validated.model_fields_set, type(fast).__name__
        assert fast.__pydantic_extra__ == validated.__pydantic_extra__
        assert fast.__pydantic_private__ == validated.__pydantic_private__
        for name in type(fast).model_fields:
            same_models(getattr(fast, name), getattr(validated, name))
    elif isinstance(fast, list):
        assert len(fast) == len(validated)
        for a, b in zip(fast, validated, strict=True):
            same_models(a, b)
    else:
        assert fast == validated


def check_fast_path(state: Any, **kwargs: Any) -> None:
    args = {
        name: kwargs.get(name)
        for name in ("correlation_id", "extra_meta", "ticker", "trade_date", "published_at")
    }
    try:
        envelope, bound = _build(state, **args)
    except (InvalidStateError, ValueError, TypeError, OverflowError, RuntimeError):
        return  # refusals are the property tests' business
    validated = TradingIntelligenceEnvelope.model_validate(envelope.model_dump(exclude_unset=True))
    assert validated == envelope
    same_models(envelope, validated)
    payload = envelope.model_dump_json()
    assert payload == validated.model_dump_json()
    assert len(payload.encode()) <= bound


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.disable(logging.WARNING)  # skipped-signal warnings are tested elsewhere
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.slow  # the fast tier keeps the smaller property tests
@examples(400)
@given(state=known_states(), kwargs=caller_args)
def test_fast_path_equals_full_validation(state: dict[str, Any], kwargs: Any) -> None:
    check_fast_path(state, **kwargs)


@examples(150)
@given(state=valid_states)
def test_fast_path_equals_full_validation_on_well_formed_states(state: dict[str, Any]) -> None:
    check_fast_path(state)


# Texts at and around the bounds, with padding, non-ASCII and control characters.
edgy_text = st.one_of(
    st.text(max_size=12),
    st.builds(
        lambda n, c, pad: pad + c * n + pad,
        st.integers(195, 305),
        st.sampled_from(["x", "é", "\x1f", "\x00"]),
        st.sampled_from(["", " ", "\t"]),
    ),
)
plain_like = st.fixed_dictionaries(
    {
        "agent": edgy_text,
        "domain": edgy_text,
        "signal": st.sampled_from(["bullish", "BEARISH", "Neutral", "sideways", " bullish", ""]),
        "confidence": st.one_of(st.floats(), st.integers(0, 1)),
        "summary": edgy_text,
        "key_factors": st.one_of(st.lists(edgy_text, max_size=11), st.tuples(edgy_text)),
    },
    optional={"narrative": st.text(max_size=5)},
)


@examples(500)
@given(raw=st.one_of(plain_like, valid_signal, signals))
def test_plain_signal_path_agrees_with_the_rules(raw: Any) -> None:
    plain = _plain_signal(raw)
    if plain is None:
        return
    signal, chars = plain
    assert signal == _signal(raw)
    same_models(signal, _signal(raw))
    assert chars >= len(signal.agent) + len(signal.domain) + len(signal.summary)


def test_bound_covers_a_worst_case_envelope() -> None:
    """Control characters (6 bytes each in JSON), big numbers and long names everywhere."""
    nasty = "\x01" * 190
    state = {
        "target": {
            "ticker": "NVDA",
            "trade_date": "2026-05-11",
            "exchange": nasty,
            "asset_class": nasty,
        },
        "synthesis_reasoning": "\x02" * 4000,
        "arena_id": nasty,
        "llm_model": nasty,
        "agent_signals": [
            {
                "agent": nasty,
                "domain": nasty,
                "signal": "bullish",
                "confidence": 0.1234567890123456,
                "summary": "\x03" * 300,
                "key_factors": ["\x04" * 200] * 2,
            }
        ],
        "source_metrics": [
            {"source": f"s{i}" + "\x05" * 150, "success": True, "result_bytes": 10**15}
            for i in range(5)
        ],
        "phase_timings": [{"phase": nasty, "seconds": -1.2345678901234567e-300, "n": 2**63}],
        "arena_total_seconds": 1.7976931348623157e308,
    }
    envelope, bound = _build(
        state, None, {"k" * 50: ["\x06" * 10, {"x": 1e-300}]}, None, None, None
    )
    assert len(envelope.model_dump_json().encode()) <= bound
