"""``_fast.maker`` (ti_core.build): models made from checked values are the wire classes, frozen,
and equal to what validation gives; a field it would leave to a default factory is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ti_core.build._fast import maker
from ti_core.contract.models import AgentSignalView, MarketMindDecision, TargetView


def test_a_made_model_is_the_model_frozen_and_equal_to_a_validated_one() -> None:
    made = maker(AgentSignalView)("a", "d", "BULLISH", 0.5, "s", ["f"])
    validated = AgentSignalView.model_validate(
        {
            "agent": "a",
            "domain": "d",
            "signal": "BULLISH",
            "confidence": 0.5,
            "summary": "s",
            "key_factors": ["f"],
        }
    )
    assert type(made) is AgentSignalView
    assert made == validated
    assert made.model_dump_json() == validated.model_dump_json()
    assert made.model_fields_set == validated.model_fields_set
    assert (made.__pydantic_extra__, made.__pydantic_private__) == (None, None)
    with pytest.raises(ValidationError):
        made.agent = "b"


def test_fields_left_out_take_their_plain_defaults() -> None:
    made = maker(TargetView, {"ticker"})("NVDA")
    assert made == TargetView(ticker="NVDA")
    assert made.model_fields_set == {"ticker"}
    assert list(made.__dict__) == list(TargetView.model_fields)


def test_a_default_factory_cannot_be_left_to_a_maker() -> None:
    with pytest.raises(TypeError, match="plain default"):
        maker(MarketMindDecision, {"target", "synthesis"})
