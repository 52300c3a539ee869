"""Property tests: the builder's and decoder's promises hold for thousands of generated inputs.

Builder: an envelope or ``InvalidStateError``, nothing else; every envelope serialises, decodes
back equal, stays under the size cap and keys a hash of the documented shape. Decoder: never
raises; ``None`` comes with exactly one single-line warning, an envelope with none.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.schema_check import schema_accepts
from ti_core import (
    InvalidStateError,
    TradingIntelligenceEnvelope,
    build_envelope_from_state,
    decision_hash_key,
    decode_envelope,
)
from ti_core.build.builder import MAX_ENVELOPE_BYTES
from ti_core.contract.decoder import explain_payload


def examples(count: int) -> Any:
    """``count`` cases, no per-example deadline: a loaded CI machine must not fail on timing."""
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


KEY_RE = re.compile(
    r"^maf:arena:trading_intelligence:decisions:[A-Z0-9.\-=^_]{1,20}:\d{4}-\d{2}-\d{2}$"
)

# -- strategies --------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Values no JSON document holds, but a Python caller might pass.
oddities = st.one_of(
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(object),
    # builds, not just: hypothesis's repr of a 5000-digit int raises (int max str digits).
    st.tuples(st.integers()),
    st.complex_numbers(),
    st.builds(lambda: 10**5000),
    st.just(math.nan),
    st.just(math.inf),
    st.text(alphabet=st.characters(codec=None), max_size=10),
    st.sampled_from(["\ud800", "x\udfffy", "\x00\n\r\x1b[31m", " \u2028 ", "9" * 5000]),
)
wild = st.one_of(json_like, oddities)

good_tickers = st.sampled_from(["NVDA", "brk.b", " BF-B ", "^GSPC", "ES=F", "7203.T", "x"])
bad_tickers = st.sampled_from(["NV:DA*", "A B", "{X}", "A/B", "\x00", "", "A" * 21, "é"])
tickers = st.one_of(good_tickers, bad_tickers, st.text(max_size=22), wild)
dates = st.one_of(
    st.dates().map(date.isoformat),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["2026-02-30", "garbage", "2026-05-11T10:00:00+05:00", "20260511"]),
    wild,
)
unit = st.one_of(st.floats(0, 1), st.floats(), st.integers(-2, 100), st.floats(0, 1).map(str), wild)
signed = st.one_of(st.floats(-1, 1), st.floats(), st.sampled_from(["abc", "1.5", "-0.3"]), wild)
words = st.one_of(
    st.sampled_from(["buy", " SELL", "hold", "bullish", "Bearish ", "neutral", "sideways", ""]),
    st.text(max_size=10),
    wild,
)
texts = st.one_of(st.text(max_size=30), st.integers(), st.floats(), wild)
signals = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "agent": texts,
            "domain": texts,
            "signal": words,
            "confidence": unit,
            "summary": texts,
            "key_factors": st.one_of(st.lists(texts, max_size=4), wild),
            "narrative": texts,
        },
    ),
    wild,
)
metrics = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "source": texts,
            "success": st.one_of(st.booleans(), wild),
            "result_bytes": st.one_of(st.integers(-5, 10**6), st.integers().map(str), wild),
        },
    ),
    wild,
)
timings = st.one_of(
    st.fixed_dictionaries({"phase": texts}, optional={"seconds": st.one_of(st.floats(), wild)}),
    st.dictionaries(st.text(max_size=5), wild, max_size=3),
    wild,
)
targets = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "ticker": tickers,
            "trade_date": dates,
            "date": dates,
            "exchange": texts,
            "asset_class": texts,
        },
    ),
    wild,
)


# Long strings are built cheaply (generating 400 random characters costs more than the test).
def long_or_short(short: int, around: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=short),
        st.builds(
            lambda n, c: c * n,
            st.integers(around - 10, around + 60),
            st.sampled_from(["x", "é", " "]),
        ),
    )


valid_signal = st.fixed_dictionaries(
    {
        "agent": long_or_short(12, 200),
        "domain": st.text(max_size=12),
        "signal": st.sampled_from(["bullish", "BEARISH", " neutral "]),
        "confidence": st.floats(0, 1),
        "summary": long_or_short(30, 300),
        "key_factors": st.one_of(
            st.lists(st.text(max_size=8), max_size=3),
            st.lists(st.just("f" * 205), min_size=9, max_size=12),
        ),
    }
)
valid_states = st.fixed_dictionaries(
    {
        "target": st.fixed_dictionaries(
            {
                "ticker": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-=^_]{0,19}", fullmatch=True),
                "trade_date": st.dates(),
                "exchange": st.text(max_size=10),
            }
        ),
        "synthesis_verdict": st.sampled_from(["buy", "SELL", "hold", None]),
        "synthesis_confidence": st.floats(0, 1),
        "synthesis_score": st.floats(-1, 1),
        "synthesis_reasoning": long_or_short(30, 4000),
        "agent_signals": st.lists(valid_signal, max_size=4),
        "phase_timings": st.lists(
            st.fixed_dictionaries({"phase": st.text(max_size=10), "seconds": st.floats(0, 1e6)}),
            max_size=5,
        ),
        "source_metrics": st.lists(
            st.fixed_dictionaries(
                {
                    "source": st.text(max_size=12),
                    "success": st.booleans(),
                    "result_bytes": st.integers(0, 10**9),
                }
            ),
            max_size=4,
        ),
        "arena_total_seconds": st.one_of(st.none(), st.floats(0, 1e6)),
        "llm_model": st.text(max_size=20),
    }
)
# Per known key: values of any type, to reach every coercion and refusal path.
wild_values = {
    "target": targets,
    "synthesis_verdict": words,
    "signal": words,
    "synthesis_confidence": unit,
    "synthesis_score": signed,
    "synthesis_reasoning": texts,
    "agent_signals": st.one_of(st.lists(signals, max_size=4), wild),
    "source_metrics": st.one_of(st.lists(metrics, max_size=4), wild),
    "phase_timings": st.one_of(st.lists(timings, max_size=4), wild),
    "arena_total_seconds": st.one_of(st.floats(), st.floats(0, 1e4).map(str), wild),
    "llm_model": texts,
    "arena_id": texts,
    "reports": wild,
}


@st.composite
def known_states(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed state with a few known keys given random values (or deleted)."""
    state: dict[str, Any] = draw(valid_states)
    for key in draw(st.lists(st.sampled_from(sorted(wild_values)), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            state.pop(key, None)
        else:
            state[key] = draw(wild_values[key])
    if draw(st.booleans()):  # and sometimes one random value inside a signal or the target
        signals_ = state.get("agent_signals")
        if isinstance(signals_, list) and signals_ and isinstance(signals_[0], dict):
            field = draw(
                st.sampled_from(["agent", "signal", "confidence", "summary", "key_factors"])
            )
            signals_[0][field] = draw(wild)
        if isinstance(state.get("target"), dict):
            field = draw(st.sampled_from(["ticker", "trade_date", "date", "exchange"]))
            state["target"][field] = draw(st.one_of(tickers, dates, texts))
    return state


any_states = st.one_of(st.dictionaries(st.text(max_size=12), json_like, max_size=6), wild)
caller_args = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "ticker": st.one_of(good_tickers, tickers),
            "trade_date": dates,
            "extra_meta": st.one_of(
                st.dictionaries(st.text(max_size=8), json_like, max_size=3), wild
            ),
            "correlation_id": st.one_of(st.just("0" * 32), st.text(max_size=33), wild),
            "published_at": st.one_of(
                st.datetimes(timezones=st.just(UTC)),
                st.datetimes(),
                wild,
                st.datetimes(
                    timezones=st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
                ),
            ),
        },
    ),
)


def check_build(state: Any, **kwargs: Any) -> TradingIntelligenceEnvelope | None:
    """Apply the builder's promises to one input; return the envelope when one was built."""
    try:
        envelope = build_envelope_from_state(state, **kwargs)
    except InvalidStateError as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(envelope, TradingIntelligenceEnvelope)
    payload = envelope.model_dump_json()
    assert len(payload.encode("utf-8")) <= MAX_ENVELOPE_BYTES
    assert decode_envelope(payload) == envelope
    assert decode_envelope(payload.encode()) == envelope
    assert TradingIntelligenceEnvelope.model_validate(json.loads(payload)) == envelope
    target = envelope.decision.target
    key = decision_hash_key(target.ticker, target.trade_date)
    assert KEY_RE.fullmatch(key) and key.count(":") == 5
    assert key.endswith(f":{target.ticker}:{target.trade_date}")
    assert envelope.meta["agents_count"] == len(envelope.decision.agent_signals)
    return envelope


@contextmanager
def captured_warnings() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("ti_core.decoder")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def check_decode(payload: Any) -> TradingIntelligenceEnvelope | None:
    with captured_warnings() as records:
        result = decode_envelope(payload)
    if result is None:
        assert len(records) == 1
        line = records[0].getMessage()
        assert "\n" not in line and "\r" not in line and line.isprintable()
    else:
        assert isinstance(result, TradingIntelligenceEnvelope) and records == []
    return result


# -- builder ---------------------------------------------------------------------------------


@pytest.mark.slow  # the fast tier keeps the smaller property tests
@examples(700)
@given(state=known_states(), kwargs=caller_args)
def test_builder_on_known_keys_with_random_values(state: dict[str, Any], kwargs: Any) -> None:
    check_build(state, **kwargs)


@examples(400)
@given(state=any_states)
def test_builder_on_arbitrary_json_like_states(state: Any) -> None:
    check_build(state)
    check_build(state, ticker="NVDA", trade_date="2026-05-11")


@examples(200)
@given(state=valid_states)
def test_well_formed_states_always_build(state: dict[str, Any]) -> None:
    envelope = check_build(state)
    assert envelope is not None
    assert len(envelope.decision.agent_signals) == len(state["agent_signals"])
    assert envelope.decision.synthesis.confidence == state["synthesis_confidence"]
    metrics_ = envelope.decision.source_metrics
    assert metrics_.total_calls == len(state["source_metrics"])
    assert metrics_.total_bytes == sum(m["result_bytes"] for m in state["source_metrics"])
    assert metrics_.successful == sum(m["success"] for m in state["source_metrics"])
    assert envelope.decision.phase_timings == state["phase_timings"]


# -- decoder ---------------------------------------------------------------------------------

SAMPLE = build_envelope_from_state(
    {
        "target": {"ticker": "NVDA", "trade_date": "2026-05-11"},
        "synthesis_verdict": "BUY",
        "synthesis_confidence": 0.5,
        "agent_signals": [{"agent": "a", "domain": "d", "signal": "BULLISH", "confidence": 0.4}],
    },
    correlation_id="f" * 32,
    published_at=datetime(2026, 5, 11, tzinfo=UTC),
)
SAMPLE_DOC = json.loads(SAMPLE.model_dump_json())


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(SAMPLE_DOC)[1:]


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> str:
    doc = json.loads(json.dumps(SAMPLE_DOC))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_like)
        except (KeyError, IndexError, TypeError):
            continue
    return json.dumps(doc, allow_nan=True)


payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_like.map(lambda v: json.dumps(v, allow_nan=True)),
    json_like.map(lambda v: json.dumps(v).encode()),
    mutated_envelopes(),
    mutated_envelopes().map(str.encode),
    mutated_envelopes().map(lambda s: bytearray(s.encode())),
    st.builds(lambda s: SAMPLE.model_dump_json()[:s], st.integers(0, 400)),
    wild,
)


@pytest.mark.slow  # the fast tier keeps the smaller property tests
@examples(1100)
@given(payload=payloads)
def test_decoder_never_raises_and_warns_once(payload: Any) -> None:
    check_decode(payload)


@examples(300)
@given(payload=mutated_envelopes())
def test_decoder_agrees_with_the_schema_on_mutations(payload: str) -> None:
    """The decoder's answer is the published JSON Schema's (``tests/test_schema.py`` has more)."""
    result = check_decode(payload)
    assert (result is not None) == schema_accepts(payload), explain_payload(payload)[1]
    if result is not None:  # what it decoded is what the payload says
        assert (
            result.model_dump_json()
            == TradingIntelligenceEnvelope.model_validate_json(payload).model_dump_json()
        )


def test_sample_round_trip_and_offsets() -> None:
    assert check_decode(SAMPLE.model_dump_json()) == SAMPLE
    moment = datetime(2026, 5, 11, 12, tzinfo=timezone(timedelta(hours=9)))
    assert check_build({"target": {"ticker": "X", "date": "2026-05-11"}}, published_at=moment)
