"""ai-hedge-fund v1 through its adapter, against the stand-in written from upstream's code
(``tests/hedgefund_standin.py``): a decision is published, upstream's fallbacks and pre-filled
holds are no verdict, and the framework's prints reach the log, not the command's output."""

from __future__ import annotations

import logging
import math
import sys
import threading
from typing import Any

import pytest

from tests import hedgefund2_standin, hedgefund_standin
from tests.test_adapters import DAY, HF, publish_form
from ti_core.arenas.hedgefund import HEDGEFUND_V1_COMMIT, HedgeFundArena, StdoutToLog
from ti_core.arenas.hedgefund2 import hedge_fund2_state
from ti_core.arenas.registry import load_arena
from ti_core.errors import ArenaError, ConfigError, NoVerdictError

LLM_FAILED = (
    "no verdict: ai-hedge-fund's portfolio manager decided nothing: its LLM call failed, it fell "
    "back to hold ('Default decision: hold')"
)
NO_PRICES = (
    "no verdict: ai-hedge-fund's portfolio manager decided nothing: no trade possible (no "
    "price), it pre-filled hold ('No valid trade available'; risk manager: Missing price data "
    "for risk calculation)"
)


async def test_short_85_is_sell_085() -> None:
    envelope = publish_form(await load_arena(HF).run("SHORT", DAY), "SHORT")
    synthesis = envelope.decision.synthesis
    assert (synthesis.verdict, synthesis.confidence) == ("SELL", 0.85)
    assert (envelope.meta["action"], envelope.meta["quantity"]) == ("short", 25)
    assert envelope.meta["confidence_raw"] == 85 and "degraded" not in envelope.meta


@pytest.mark.parametrize(
    ("ticker", "why", "attempts"),
    [("LLMFAIL", LLM_FAILED, 3), ("HTTP500", NO_PRICES, 0)],
)
async def test_upstream_fallbacks_are_no_verdict(ticker: str, why: str, attempts: int) -> None:
    before = hedgefund_standin.LLM_ATTEMPTS.get(ticker, 0)
    state = await load_arena(HF).run(ticker, DAY)
    assert hedgefund_standin.LLM_ATTEMPTS.get(ticker, 0) - before == attempts
    assert "synthesis_verdict" not in state and "synthesis_confidence" not in state
    assert state["meta"]["action"] == "hold" and state["meta"]["confidence_source"] == "none"
    with pytest.raises(NoVerdictError) as refused:
        publish_form(state, ticker)
    assert str(refused.value).startswith(why)
    envelope = publish_form(state, ticker, degraded=True)
    synthesis = envelope.decision.synthesis
    assert (synthesis.verdict, synthesis.confidence) == ("HOLD", 0.0)
    assert envelope.meta["degraded"] is True
    assert envelope.meta["degraded_reason"].startswith(why)


async def test_the_fallback_text_upstream_wrote_before_2025_is_still_no_verdict() -> None:
    def fund(**kwargs: Any) -> dict[str, Any]:
        reasoning = "Error in portfolio management, defaulting to hold"
        decision = {"action": "hold", "quantity": 0, "confidence": 0.0, "reasoning": reasoning}
        return {"decisions": {"NVDA": decision}, "analyst_signals": {}}

    state = await HedgeFundArena("hedgefund:x:fund", fund).run("NVDA", DAY)
    assert state["meta"]["no_verdict"].startswith(
        "ai-hedge-fund's portfolio manager decided nothing: it failed, it fell back to hold"
    )


async def test_a_hold_the_llm_chose_is_a_decision() -> None:
    envelope = publish_form(await load_arena(HF).run("HOLD", DAY), "HOLD")
    assert (envelope.decision.synthesis.verdict, envelope.decision.synthesis.confidence) == (
        "HOLD",
        0.55,
    )


async def test_a_v2_cycle_or_function_is_refused_naming_the_v1_commit() -> None:
    class CycleRecord:  # the attributes ai-hedge-fund 2.x's record carries
        target_weights = {"NVDA": 0.1}
        final_weights = {"NVDA": 0.1}

    with pytest.raises(ArenaError, match=f"commit {HEDGEFUND_V1_COMMIT[:12]}"):
        await HedgeFundArena("hedgefund:x:f", lambda **_: CycleRecord()).run("NVDA", DAY)

    def run_cycle(**kwargs: Any) -> None:
        raise AssertionError("never called")

    run_cycle.__module__ = "hedge_fund.run"
    with pytest.raises(ConfigError, match=r"hedge_fund.run is ai-hedge-fund 2.x.*commit 6c41ae8"):
        HedgeFundArena("hedgefund:hedge_fund.run:run_cycle", run_cycle)


async def test_the_framework_stdout_goes_to_the_log(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ti_core.hedgefund")
    original = sys.stdout
    state = await load_arena(HF).run("LLMFAIL", DAY)
    assert state["meta"]["action"] == "hold"
    assert sys.stdout is original
    assert capsys.readouterr().out == ""
    logged = [r.getMessage() for r in caplog.records if r.name == "ti_core.hedgefund"]
    assert logged == [
        "Error in LLM call after 3 attempts: Error code: 503 - upstream connect error",
        hedgefund_standin.PROGRESS_DONE,
    ]


def test_other_threads_keep_their_stdout_while_a_call_routes_its_own(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ti_core.hedgefund")
    inside, done = threading.Event(), threading.Event()

    def framework() -> None:
        StdoutToLog.enter()
        try:
            print("progress, partly", end="")
            inside.set()
            done.wait(10)
            print(" written")
            print("unfinished", end="")
        finally:
            StdoutToLog.leave()

    worker = threading.Thread(target=framework)
    worker.start()
    inside.wait(10)
    print("the command's own line")
    router = sys.stdout
    assert isinstance(router, StdoutToLog) and not router.isatty()
    assert router.encoding == router.original.encoding and router.buffer is router.original.buffer
    done.set()
    worker.join(10)
    assert capsys.readouterr().out == "the command's own line\n"
    logged = [r.getMessage() for r in caplog.records if r.name == "ti_core.hedgefund"]
    assert logged == ["progress, partly written", "unfinished"]


HF2 = "hedgefund2:tests.hedgefund2_standin:assess"


@pytest.mark.parametrize(
    ("ticker", "verdict", "change"),
    [
        ("NVDA", "BUY", 0.08),
        ("TSLA", "SELL", -0.05),
        ("FLAT", "HOLD", 0.0),
        ("HELD", "SELL", -0.02),
    ],
)
async def test_a_v2_record_maps_its_weight_change_to_the_verdict(
    ticker: str, verdict: str, change: float
) -> None:
    envelope = publish_form(await load_arena(HF2).run(ticker, DAY), ticker)
    synthesis = envelope.decision.synthesis
    assert (synthesis.verdict, synthesis.confidence) == (verdict, 0.0)
    meta = envelope.meta
    assert meta["framework"] == "ai-hedge-fund 2.x" and meta["confidence_source"] == "none"
    assert math.isclose(meta["weight_change"], change, abs_tol=1e-12)
    assert meta["final_weight"] == meta["target_weight"] == hedgefund2_standin.WEIGHTS[ticker]
    signals = {s.agent: s for s in envelope.decision.agent_signals}
    assert set(signals) == {"buffett", "pead"}
    if ticker == "HELD":
        assert math.isclose(meta["weight_before"], 0.05)
        assert meta["orders"] == [{"side": "sell", "quantity": 40, "price": 50.0}]
    else:
        assert meta["weight_before"] == 0.0 and "orders" not in meta
    if ticker == "FLAT":
        assert meta["flat_reasons"] == {"quality": "no_eligible_positions"}
        assert synthesis.reasoning == "buffett: Durable moat at a fair price"


@pytest.mark.parametrize(
    ("ticker", "why"),
    [
        ("HALT", "ai-hedge-fund 2.x skipped HALT: no close in the 7 days before 2026-05-11"),
        ("OLD", f"ai-hedge-fund 2.x record is as of '2026-05-08', not {DAY}"),
    ],
)
async def test_a_v2_record_without_a_decision_for_the_day_is_no_verdict(
    ticker: str, why: str
) -> None:
    state = await load_arena(HF2).run(ticker, DAY)
    with pytest.raises(NoVerdictError, match="no verdict: " + why.replace("(", r"\(")):
        publish_form(state, ticker)


async def test_a_v2_dump_maps_like_the_record_and_v1_output_is_refused() -> None:
    record = hedgefund2_standin.assess("TSLA", DAY)
    dumped = hedge_fund2_state(record.model_dump(), "TSLA", DAY)
    assert dumped == hedge_fund2_state(record, "TSLA", DAY)
    with pytest.raises(ArenaError, match="not an ai-hedge-fund 2.x DecisionRecord"):
        hedge_fund2_state({"decisions": {}, "analyst_signals": {}}, "TSLA", DAY)
