"""Small helpers shared by the builder's rule tests: a base state, a signal, build-and-check."""

from __future__ import annotations

from typing import Any

import pytest

from ti_core import InvalidStateError, build_envelope_from_state, decode_envelope
from ti_core.contract.models import TradingIntelligenceEnvelope

__all__ = ["TARGET", "base", "build", "refused", "signal"]

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
        "agent": "a",
        "domain": "d",
        "signal": "bullish",
        "confidence": 0.5,
        "summary": "s",
        "key_factors": ["k"],
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
