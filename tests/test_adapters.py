"""The TradingAgents and ai-hedge-fund adapters, the no-verdict rule and the state bounds
(no Prefect): each rating and action maps as documented in ``ti_core.arenas.tradingagents``
and ``ti_core.arenas.hedgefund``."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests import hedgefund_standin, tradingagents_standin
from ti_core.arenas.hedgefund import HedgeFundArena
from ti_core.arenas.registry import load_arena
from ti_core.arenas.replay import ReplayArena
from ti_core.arenas.tradingagents import TradingAgentsArena, tradingagents_state
from ti_core.build.builder import build_envelope_from_state
from ti_core.build.verdict import decision_meta, missing_verdict
from ti_core.contract.bounds import MAX_STATE_DEPTH, check_state
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import ArenaError, ConfigError, InvalidStateError, NoVerdictError

TA = "tradingagents:tests.tradingagents_standin:GRAPH"
HF = "hedgefund:tests.hedgefund_standin:run_hedge_fund"
DAY = "2026-05-11"
# ticker -> (rating the stand-in returns, verdict)
TA_CASES = {
    "BUY": ("Buy", "BUY"),
    "OW": ("Overweight", "BUY"),
    "HOLD": ("Hold", "HOLD"),
    "UW": ("Underweight", "SELL"),
    "SELL": ("Sell", "SELL"),
}
# ticker -> how the Portfolio Manager's reply reads in the no-verdict reason (the rating is
# parse_rating's default "Hold" for each)
TA_DEFAULTS = {
    "EMPTY": "final_trade_decision is empty ('')",
    "REFUSE": 'final_trade_decision states no rating ("I can\'t provide investment advice.")',
    "CTXERR": 'final_trade_decision states no rating (\'{"error": "context length exceeded"}\')',
}


def ta_meta(ticker: str) -> dict[str, Any]:
    """The envelope ``meta`` of the stand-in's published decision for ``ticker``."""
    rating = TA_CASES[ticker][0]
    meta: dict[str, Any] = {
        "agents_count": 1,
        "model_used": "gpt-5.2",
        "framework": "tradingagents",
        "rating": rating,
        "confidence_source": "none",
        "score_source": "none",
        "reasoning_truncated": True,
        "research_recommendation": rating,
        "trader_action": {"Overweight": "Buy", "Underweight": "Sell"}.get(rating, rating),
        "sentiment_band": "Mildly Bullish",
        "sentiment_score": 6.2,
        "sentiment_confidence": "medium",
    }
    meta["reasoning_chars"] = len(tradingagents_standin.pm_decision(ticker, DAY).strip())
    if ticker != "HOLD":
        meta.update(price_target=212.5, time_horizon="3-6 months")
    return meta


# ticker -> (action, confidence 0-100, quantity, verdict)
HF_CASES = {
    "BUY": ("buy", 85, 40, "BUY"),
    "COVER": ("cover", 70, 10, "BUY"),
    "HOLD": ("hold", 55, 0, "HOLD"),
    "SELL": ("sell", 90, 20, "SELL"),
    "SHORT": ("short", 85, 25, "SELL"),
}


def publish_form(
    state: dict[str, Any], ticker: str, degraded: bool = False
) -> TradingIntelligenceEnvelope:
    """What the pipeline builds from a state (the same two calls as build-envelope)."""
    meta = decision_meta(state, publish_degraded=degraded)
    return build_envelope_from_state(state, ticker=ticker, trade_date=DAY, extra_meta=meta)


@pytest.mark.parametrize("ticker", sorted(TA_CASES))
async def test_tradingagents_ratings_map_to_verdicts(ticker: str) -> None:
    rating, verdict = TA_CASES[ticker]
    runner = load_arena(TA)
    assert isinstance(runner, TradingAgentsArena) and not runner.is_demo
    state = await runner.run(ticker, DAY)
    json.dumps(state, allow_nan=False)  # plain JSON: the message objects stayed behind
    envelope = publish_form(state, ticker)
    synthesis = envelope.decision.synthesis
    assert (synthesis.verdict, synthesis.confidence, synthesis.ensemble_score) == (
        verdict,
        0.0,
        0.0,
    )
    assert envelope.meta == ta_meta(ticker)
    assert synthesis.reasoning.startswith(f"**Rating**: {rating}")
    assert len(synthesis.reasoning) == 4000 and synthesis.reasoning.endswith("...")
    (signal,) = envelope.decision.agent_signals
    assert (signal.agent, signal.domain, signal.signal, signal.confidence) == (
        "sentiment_analyst",
        "sentiment",
        "BULLISH",
        0.0,
    )
    assert signal.summary == "Mildly Bullish (score 6.2/10), confidence medium"
    assert envelope.decision.target.ticker == ticker and envelope.arena_id == "tradingagents"


@pytest.mark.parametrize("ticker", sorted(TA_DEFAULTS))
async def test_tradingagents_default_hold_is_no_verdict_unless_published_degraded(
    ticker: str,
) -> None:
    graph = tradingagents_standin.TradingAgentsGraph()
    final_state, rating = graph.propagate(ticker, DAY)
    assert rating == "Hold"  # upstream's parse_rating default: what is published today
    state = await TradingAgentsArena(TA, graph).run(ticker, DAY)
    assert "synthesis_verdict" not in state
    with pytest.raises(NoVerdictError) as info:
        publish_form(state, ticker)
    message = str(info.value)
    assert message.startswith(
        "no verdict: tradingagents rating 'Hold' is its default: the Portfolio Manager's "
        + TA_DEFAULTS[ticker]
    )
    assert message.endswith("to publish it as HOLD marked degraded: TI_PUBLISH_DEGRADED=1")
    envelope = publish_form(state, ticker, degraded=True)
    assert (envelope.decision.synthesis.verdict, envelope.decision.synthesis.confidence) == (
        "HOLD",
        0.0,
    )
    assert envelope.meta["degraded"] is True and envelope.meta["rating"] == "Hold"
    assert envelope.meta["degraded_reason"].startswith("no verdict: tradingagents rating 'Hold'")
    assert "reasoning_truncated" not in envelope.meta


@pytest.mark.parametrize(
    ("rating", "decision", "verdict"),
    [
        ("BUY", "FINAL TRANSACTION PROPOSAL: **BUY**", "BUY"),
        ("**SELL**", "We sell.", "SELL"),
        (" hold.\n", "Rating - **Hold**", "HOLD"),
        ("Overweight", "**Rating**: Overweight", "BUY"),
        ("BUY", "I cannot help with that.", None),  # the extractor's word, not the PM's
        ("Hold", "", None),
        ("Strong Buy", "Strong Buy", None),
        ("REVIEW", "REVIEW", None),
        ("", "Buy", None),
        (None, "Buy", None),
        (3, "Buy", None),
    ],
)
def test_a_rating_counts_only_when_the_decision_states_it(
    rating: Any, decision: str, verdict: str | None
) -> None:
    state = tradingagents_state({"final_trade_decision": decision}, rating, "NVDA", DAY)
    assert state.get("synthesis_verdict") == verdict
    assert ("no_verdict" in state["meta"]) is (verdict is None)


def test_standin_parse_rating_keeps_upstreams_passes_and_default() -> None:
    parse = tradingagents_standin.parse_rating
    assert parse("**Rating**: Underweight\nwe would buy later") == "Underweight"
    assert parse("Rating: strong\nWe would sell.") == "Sell"  # label no tier: first word
    assert parse("rating-agency note: Buy") == "Buy"
    assert [parse(t) for t in ("", "I can't provide investment advice.")] == ["Hold", "Hold"]
    assert parse("", default="x") == "x"


def test_missing_sub_decisions_leave_no_trace_and_a_short_reasoning_is_not_marked() -> None:
    state = tradingagents_state({"final_trade_decision": "**Rating**: Sell"}, "Sell", "X", DAY)
    assert state["meta"] == {
        "framework": "tradingagents",
        "rating": "Sell",
        "confidence_source": "none",
        "score_source": "none",
    }
    assert "agent_signals" not in state and state["synthesis_reasoning"] == "**Rating**: Sell"


async def test_one_graph_runs_one_propagate_at_a_time() -> None:
    graph = tradingagents_standin.TradingAgentsGraph()
    runner = TradingAgentsArena("tradingagents:x:GRAPH", graph)
    states = await asyncio.gather(*(runner.run(t, DAY) for t in TA_CASES))
    assert [s["target"]["ticker"] for s in states] == list(TA_CASES)
    assert graph.max_in_flight == 1 and len(graph.calls) == len(TA_CASES)


async def test_tradingagents_shape_errors_are_arena_errors() -> None:
    class Plain:
        def propagate(self, ticker: str, day: str) -> dict[str, Any]:
            return {"final_trade_decision": "Buy"}

    with pytest.raises(ArenaError, match=r"not \(final_state, rating\)"):
        await TradingAgentsArena("tradingagents:x:P", Plain()).run("NVDA", DAY)
    with pytest.raises(ConfigError, match="no propagate"):
        load_arena("tradingagents:tests.hedgefund_standin:DECISIONS")
    with pytest.raises(ArenaError, match="use the spec tradingagents:MODULE:OBJECT"):
        await load_arena("tests.tradingagents_standin:GRAPH.propagate").run("BUY", DAY)


@pytest.mark.parametrize("ticker", sorted(HF_CASES))
async def test_hedge_fund_actions_map_to_verdicts(ticker: str) -> None:
    action, confidence, quantity, verdict = HF_CASES[ticker]
    runner = load_arena(HF)
    assert isinstance(runner, HedgeFundArena)
    envelope = publish_form(await runner.run(ticker, DAY), ticker)
    synthesis = envelope.decision.synthesis
    assert synthesis.verdict == verdict
    assert math.isclose(synthesis.confidence, confidence / 100)
    assert envelope.meta == {
        "agents_count": 2,
        "model_used": "gpt-4.1",
        "framework": "ai-hedge-fund",
        "action": action,
        "quantity": quantity,
        "confidence_raw": confidence,
        "confidence_source": "ai-hedge-fund decisions confidence (0-100) / 100",
    }
    assert synthesis.reasoning == hedgefund_standin.DECISIONS[ticker][3]
    signals = {s.agent: s for s in envelope.decision.agent_signals}
    assert set(signals) == {"technical_analyst_agent", "warren_buffett_agent"}  # no risk one
    tech, buffett = signals["technical_analyst_agent"], signals["warren_buffett_agent"]
    assert (tech.signal, tech.confidence, tech.domain) == ("BULLISH", 0.71, "technical_analyst")
    assert (buffett.signal, buffett.confidence) == ("BEARISH", 0.62)
    assert buffett.summary == "Moat intact, price too high"
    assert json.loads(tech.summary)["trend_following"]["confidence"] == 64
    call = hedgefund_standin.CALLS[-1]
    assert call["tickers"] == [ticker] and call["end_date"] == DAY
    assert call["start_date"] == "2026-02-11" and call["show_reasoning"] is False
    assert list(call["portfolio"]["positions"]) == [ticker]


@pytest.mark.parametrize(
    ("ticker", "why"),
    [
        ("LLMFAIL", "ai-hedge-fund's portfolio manager decided nothing: its LLM call failed"),
        ("JUMP", "ai-hedge-fund's portfolio manager decided nothing: its LLM call failed"),
        ("HTTP500", "ai-hedge-fund's portfolio manager decided nothing: no trade possible"),
        ("OMIT", "ai-hedge-fund decided nothing for OMIT (decisions for: none)"),
    ],
)
async def test_hedge_fund_without_a_decision_is_no_verdict(ticker: str, why: str) -> None:
    state = await load_arena(HF).run(ticker, DAY)
    assert "synthesis_confidence" not in state
    with pytest.raises(
        NoVerdictError, match="no verdict: " + why.replace("(", r"\(").replace(")", r"\)")
    ):
        publish_form(state, ticker)
    envelope = publish_form(state, ticker, degraded=True)
    assert envelope.decision.synthesis.verdict == "HOLD"
    assert envelope.decision.synthesis.confidence == 0.0
    assert envelope.meta["degraded"] is True and envelope.meta["confidence_source"] == "none"


async def test_hedge_fund_confidence_out_of_scale_is_refused() -> None:
    def fund(**kwargs: Any) -> dict[str, Any]:
        return {
            "decisions": {
                "NVDA": {"action": "buy", "quantity": 1, "confidence": 150, "reasoning": "x"}
            },
            "analyst_signals": {},
        }

    with pytest.raises(InvalidStateError, match=r"confidence must be a number in \[0, 100\]"):
        await HedgeFundArena("hedgefund:x:fund", fund).run("NVDA", DAY)


def test_missing_verdict_reads_the_state_as_the_builder_does(
    sample_states: dict[str, dict[str, Any]],
) -> None:
    assert missing_verdict(sample_states["nvda-2026-05-11-full"]) is None
    assert missing_verdict(sample_states["brkb-2026-05-12-degraded"]) is None  # signal "sell"
    reason = missing_verdict(sample_states["aapl-2026-05-11-partial"])
    assert reason == (
        "no verdict: the state has no synthesis_verdict or signal (state keys: "
        "agent_signals, arena_id, arena_total_seconds, llm_model, phase_timings, "
        "source_metrics, target)"
    )
    assert "synthesis_verdict 'STRONG BUY' is not one of BUY, HOLD, SELL" in str(
        missing_verdict({"synthesis_verdict": "STRONG BUY"})
    )
    assert missing_verdict({"synthesis_verdict": " buy "}) is None
    with pytest.raises(InvalidStateError, match="meta must be a mapping"):
        decision_meta({"synthesis_verdict": "BUY", "meta": [1]})
    # The publisher's own marks cannot be set by a state.
    meta = decision_meta({"synthesis_verdict": "BUY", "meta": {"degraded": True, "x": 1}})
    assert meta == {"x": 1}


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (float("nan"), "state.a[0] is nan, which is not JSON"),
        ({1, 2}, "state.a[0] is a set, which is not JSON"),
        ({1: "x"}, "state.a[0] has the key 1, which is not text"),
        (object(), "is a object, which is not JSON"),
    ],
)
def test_states_must_be_plain_json(value: Any, needle: str) -> None:
    with pytest.raises(InvalidStateError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        check_state({"a": [value]}, 1 << 20)


def test_size_and_depth_are_bounded_without_walking_everything() -> None:
    deep: Any = []
    for _ in range(900):
        deep = [deep]
    with pytest.raises(InvalidStateError, match=f"nested over {MAX_STATE_DEPTH} deep"):
        check_state({"phase_timings": deep}, 1 << 20)
    with pytest.raises(InvalidStateError, match="over the 1024-byte limit"):
        check_state({"reasoning": "x" * 2000}, 1024)
    # Two million items are refused from the list's length, before any item is visited.
    with pytest.raises(InvalidStateError, match=r"at least \d+ bytes as JSON, over the 1048576"):
        check_state({"a": [0] * 2_000_000}, 1 << 20)
    assert check_state({"a": [1, 2.5, None, True, "é"]}, 1 << 20) < 64


async def test_replay_refuses_a_big_file_before_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "NVDA" / f"{DAY}.json"
    path.parent.mkdir()
    with path.open("wb") as handle:  # 256 MiB of NUL bytes, sparse: read, it is not JSON
        handle.truncate(256 << 20)
    with pytest.raises(InvalidStateError) as info:
        await ReplayArena(tmp_path).run("NVDA", DAY)
    assert str(info.value) == (
        f"arena state {path} is 268435456 bytes, over the 4194304-byte "
        "limit (setting TI_MAX_STATE_BYTES)"
    )


async def test_replay_refuses_deep_and_non_json_files(tmp_path: Path) -> None:
    folder = tmp_path / "NVDA"
    folder.mkdir()
    (folder / f"{DAY}.json").write_text('{"a": ' + "[" * 900 + "]" * 900 + "}")
    with pytest.raises(InvalidStateError, match=f"nested over {MAX_STATE_DEPTH} deep"):
        await ReplayArena(tmp_path).run("NVDA", DAY)
    (folder / f"{DAY}.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InvalidStateError, match=f"nested over {MAX_STATE_DEPTH} deep"):
        await ReplayArena(tmp_path).run("NVDA", DAY)
    (folder / f"{DAY}.json").write_text('{"synthesis_confidence": NaN}')
    with pytest.raises(InvalidStateError, match="state.synthesis_confidence is nan"):
        await ReplayArena(tmp_path).run("NVDA", DAY)
