"""ti_core.publish.outcome.DecisionOutcome: one typed result that the card, table, event and CLI
read."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.artifacts import decision_card, run_table
from flows.cmd_run import format_outcome
from ti_core.publish.outcome import TABLE_COLUMNS, DecisionOutcome
from ti_core.settings import TiSettings

PUBLISHED = DecisionOutcome(
    "NVDA",
    "2026-05-11",
    status="published",
    verdict="BUY",
    confidence=0.8,
    entry_id="1-0",
    hash_key="maf:arena:trading_intelligence:decisions:NVDA:2026-05-11",
    where="embedded store /x",
    score=0.25,
    correlation_id="c" * 32,
    stream="s",
)
FAILED = DecisionOutcome("AMD", "2026-05-11", error="run-arena: down", where="w", demo=True)

# Every optional field, by its declared type (so a field added later is covered too).
_BY_TYPE = {
    "str | None": st.none() | st.text(max_size=20),
    "float | None": st.none() | st.floats(allow_nan=False),
    "bool": st.booleans(),
}
outcomes = st.builds(
    DecisionOutcome,
    ticker=st.text(min_size=1, max_size=8),
    trade_date=st.just("2026-05-11"),
    status=st.sampled_from(["published", "unchanged", "failed"]),
    **{f.name: _BY_TYPE[str(f.type)] for f in fields(DecisionOutcome) if str(f.type) in _BY_TYPE},
)


@given(outcomes)
def test_the_row_a_flow_stores_reads_back_as_the_same_outcome(outcome: DecisionOutcome) -> None:
    assert DecisionOutcome.from_row(outcome.as_row()) == outcome


def test_rows_of_an_older_version_still_read() -> None:
    old = {"ticker": "X", "trade_date": "2026-05-11", "status": "failed", "error": "e", "extra": 1}
    assert DecisionOutcome.from_row(old) == DecisionOutcome("X", "2026-05-11", error="e")


def test_an_outcome_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        PUBLISHED.status = "failed"  # type: ignore[misc]


def test_the_event_payload_is_the_row_without_empty_values() -> None:
    """The same content as the dict rows the pipeline emitted before: falsy flags stay."""
    assert FAILED.event_payload() == {
        "ticker": "AMD",
        "trade_date": "2026-05-11",
        "status": "failed",
        "error": "run-arena: down",
        "where": "w",
        "demo": True,
        "degraded": False,
        "appended": False,
        "unacked": False,
    }
    payload = PUBLISHED.event_payload()
    assert "note" not in payload and "error" not in payload
    assert payload["score"] == 0.25 and payload["degraded"] is False
    assert replace(PUBLISHED, note="n").event_payload()["note"] == "n"


def test_the_table_row_blanks_unset_and_false() -> None:
    (failed, published) = run_table([FAILED, PUBLISHED])
    assert list(failed) == list(TABLE_COLUMNS)
    assert failed["verdict"] == "" and failed["degraded"] == "" and failed["error"]
    assert published["confidence"] == 0.8 and published["entry_id"] == "1-0"
    assert replace(PUBLISHED, degraded=True).table_row()["degraded"] is True


def test_the_card_reads_where_it_was_written_from_the_outcome() -> None:
    from ti_core.build.builder import build_envelope_from_state

    state = {"final_trade_decision": "FINAL TRANSACTION PROPOSAL: **BUY**"}
    envelope = build_envelope_from_state(
        state, ticker="NVDA", trade_date="2026-05-11", correlation_id="c" * 32
    )
    card = decision_card(envelope, PUBLISHED)
    assert card.startswith("# NVDA 2026-05-11: ")
    assert "written to embedded store /x: stream entry `1-0`" in card
    assert f"hash `{PUBLISHED.hash_key}`" in card


def test_the_cli_line_reads_the_outcome() -> None:
    settings = TiSettings(redis_url="redis://h:6379/0")
    assert format_outcome(FAILED, settings) == "AMD 2026-05-11: FAILED run-arena: down"
    line = format_outcome(replace(PUBLISHED, status="unchanged", degraded=True), settings)
    assert line.startswith("NVDA 2026-05-11: BUY confidence 0.80 [DEGRADED")
    assert "-> stream s entry 1-0 (already on the stream), hash " in line
    assert line.endswith("in redis://h:6379/0")


def test_a_published_line_says_when_an_earlier_attempt_appended() -> None:
    settings = TiSettings(redis_url="redis://h:6379/0")
    assert "(" not in format_outcome(replace(PUBLISHED, appended=True), settings)
    line = format_outcome(PUBLISHED, settings)
    assert "-> stream s entry 1-0 (appended by an earlier attempt of this run), hash " in line


def test_the_daily_summary_counts_with_the_same_words(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cmd_run import _print_result

    rows = [
        replace(PUBLISHED, appended=True).as_row(),
        PUBLISHED.as_row(),
        replace(PUBLISHED, status="unchanged").as_row(),
    ]
    _print_result({"trade_date": "2026-05-11", "skipped": None, "rows": rows})
    assert capsys.readouterr().out == (
        "2026-05-11: 2 published (1 by an earlier attempt), 1 already on the stream\n"
    )
    _print_result({"trade_date": "2026-05-11", "skipped": None, "rows": rows[:1]})
    assert capsys.readouterr().out == "2026-05-11: 1 published, 0 already on the stream\n"


# A row `publish_decision` stored before `appended` existed (every field it had, literally).
OLD_PIPELINE_ROW = {
    "ticker": "NVDA",
    "trade_date": "2026-05-11",
    "status": "published",
    "verdict": "BUY",
    "confidence": 0.8,
    "entry_id": "1-0",
    "hash_key": "maf:arena:trading_intelligence:decisions:NVDA:2026-05-11",
    "error": None,
    "where": "embedded store /x",
    "demo": False,
    "degraded": False,
    "note": None,
    "score": 0.25,
    "correlation_id": "c" * 32,
    "stream": "s",
}


def test_an_old_pipeline_row_reads_with_what_its_published_meant() -> None:
    """Then ``published`` meant "this attempt appended", ``unchanged`` anything else."""
    assert DecisionOutcome.from_row(OLD_PIPELINE_ROW) == replace(PUBLISHED, appended=True)
    unchanged = DecisionOutcome.from_row({**OLD_PIPELINE_ROW, "status": "unchanged"})
    assert unchanged == replace(PUBLISHED, status="unchanged", appended=False)


def test_an_old_backfill_row_reads_as_an_outcome() -> None:
    """The rows the backfill's own ``Outcome.as_row`` made: ``reason``, "" for no entry."""
    failed = {
        "ticker": "NVDA",
        "trade_date": "2026-05-11",
        "status": "failed",
        "entry_id": "",
        "reason": "arena: down",
    }
    assert DecisionOutcome.from_row(failed) == DecisionOutcome(
        "NVDA", "2026-05-11", error="arena: down"
    )
    degraded = {**failed, "status": "published", "entry_id": "1-0", "reason": "degraded: x"}
    assert DecisionOutcome.from_row(degraded) == DecisionOutcome(
        "NVDA", "2026-05-11", "published", entry_id="1-0", degraded=True, note="degraded: x"
    )
    plain = {**failed, "status": "unchanged", "entry_id": "1-0", "reason": ""}
    assert DecisionOutcome.from_row(plain) == DecisionOutcome(
        "NVDA", "2026-05-11", "unchanged", entry_id="1-0"
    )


@pytest.mark.parametrize(
    ("created", "own_entry", "status"),
    [(True, True, "published"), (False, True, "published"), (False, False, "unchanged")],
)
def test_publish_many_results_and_outcomes_share_one_meaning(
    created: bool, own_entry: bool, status: str
) -> None:
    """The three answers of the publish scripts (appended now, by an earlier attempt of the
    same envelope, another envelope's identical decision), in PublishResult and outcome."""
    from ti_core.build.builder import build_envelope_from_state
    from ti_core.publish.outcome import publish_status
    from ti_core.publish.publisher import PublishResult

    state = {"final_trade_decision": "FINAL TRANSACTION PROPOSAL: **BUY**"}
    envelope = build_envelope_from_state(
        state,
        ticker="NVDA",
        trade_date="2026-05-11",
        correlation_id="c" * 32,
        extra_meta={"demo": True},
    )
    result = PublishResult(
        "NVDA", "2026-05-11", "c" * 32, "1-0", created, True, PUBLISHED.hash_key or "", own_entry
    )
    assert result.status == publish_status(own_entry) == status
    outcome = DecisionOutcome.of_publish(
        envelope,
        own_entry=result.own_entry,
        appended=result.created,
        entry_id=result.entry_id,
        hash_key=result.hash_key,
        stream="s",
    )
    assert (outcome.status, outcome.appended, outcome.entry_id) == (status, created, "1-0")
    synthesis = envelope.decision.synthesis
    assert (outcome.verdict, outcome.confidence, outcome.score) == (
        synthesis.verdict,
        synthesis.confidence,
        synthesis.ensemble_score,
    )
    assert (outcome.correlation_id, outcome.demo, outcome.degraded) == ("c" * 32, True, False)
    assert DecisionOutcome.from_row(outcome.as_row()) == outcome
