"""The published JSON Schema of the v1 envelope, checked with a real validator (``jsonschema``).

The file is what the generator makes now; every envelope the builder makes validates against
it (sample states, the demo arena, generated states); each constraint it carries rejects a
bad envelope; and the decoder agrees with it: ``decode_envelope(p)`` is not None exactly when
the schema accepts ``p``, over generated good envelopes and mutated bad ones.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.schema_check import schema_accepts, schema_errors
from tests.test_builder_properties import caller_args, examples, known_states, valid_states
from ti_core import build_envelope_from_state, decode_envelope
from ti_core.arenas.demo import DEMO_META, DemoArena
from ti_core.build.builder import MAX_ENVELOPE_BYTES
from ti_core.contract.decoder import explain_payload
from ti_core.contract.hash_fields import hash_fields
from ti_core.contract.schema import ENVELOPE_MAX_BYTES, envelope_schema, envelope_schema_json
from ti_core.contract.wire import Serialised
from ti_core.errors import InvalidStateError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema" / "envelope-v1.schema.json"
SHARED_STATES = ROOT.parent / "shared" / "states"
CID = "0123456789abcdef0123456789abcdef"
WHEN = datetime(2026, 5, 11, 21, 30, tzinfo=UTC)


def test_published_file_is_what_the_generator_makes() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == envelope_schema_json(), (
        "regenerate: python -m ti_core.contract.schema > schema/envelope-v1.schema.json"
    )
    Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_schema_states_the_builders_cap() -> None:
    assert ENVELOPE_MAX_BYTES == MAX_ENVELOPE_BYTES
    assert f"{MAX_ENVELOPE_BYTES} bytes" in envelope_schema()["description"]


def test_every_field_the_publisher_writes_is_required() -> None:
    schema = envelope_schema()
    for definition in [schema, *schema["$defs"].values()]:
        assert definition["required"] == list(definition["properties"]), definition["title"]
        assert all("default" not in spec for spec in definition["properties"].values())


def _states() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((ROOT / "tests" / "data").glob("*-20??-??-??-*.json"))
    paths += sorted(SHARED_STATES.glob("*.json")) if SHARED_STATES.is_dir() else []
    return [(f"{p.parent.name}/{p.name}", json.loads(p.read_text())) for p in paths]


STATES = _states()


@pytest.mark.parametrize("name,state", STATES, ids=[n for n, _ in STATES])
def test_sample_states_validate(name: str, state: dict[str, Any]) -> None:
    envelope = build_envelope_from_state(state, correlation_id=CID, published_at=WHEN)
    payload = Serialised.of(envelope).payload  # the stream entry's data, byte for byte
    assert schema_errors(payload) == []
    assert decode_envelope(payload) == envelope


def test_there_are_sample_states() -> None:
    assert len(STATES) >= 3


@pytest.mark.parametrize("ticker", ["NVDA", "BRK.B", "^GSPC", "ES=F", "7203.T", "BTC_USD"])
def test_demo_envelopes_validate(ticker: str) -> None:
    state = asyncio.run(DemoArena().run(ticker, "2026-05-11"))
    envelope = build_envelope_from_state(state, extra_meta=DEMO_META)
    payload = Serialised.of(envelope).payload
    assert schema_errors(payload) == []
    assert decode_envelope(payload) == envelope


def test_edge_values_validate() -> None:
    """Degraded (no verdict), -0.0 score, bounds, a microsecond timestamp, huge meta integers."""
    envelope = build_envelope_from_state(
        {
            "target": {"ticker": " brk.b ", "trade_date": "2026-05-12"},
            "synthesis_confidence": 1.0,
            "synthesis_score": -0.0,
            "agent_signals": [{"agent": "a", "confidence": 0.0, "key_factors": ["k"] * 12}],
            "phase_timings": [{"phase": "x", "ns": 2**63 + 1}],
            "source_metrics": [{"source": "s", "success": False, "result_bytes": 10**12}],
        },
        extra_meta={"started_ns": 1_778_535_000_123_456_789},
        published_at=datetime(2026, 5, 12, 1, 2, 3, 4, tzinfo=UTC),
    )
    payload = Serialised.of(envelope).payload
    assert '"ensemble_score":-0.0' in payload
    assert '"published_at":"2026-05-12T01:02:03.000004Z"' in payload
    assert schema_errors(payload) == []
    assert decode_envelope(payload) == envelope


def _built(state: Any, kwargs: dict[str, Any]) -> str | None:
    try:
        envelope = build_envelope_from_state(state, **kwargs)
    except InvalidStateError:
        return None
    return Serialised.of(envelope).payload


@examples(150)
@given(state=valid_states)
def test_generated_valid_states_validate(state: dict[str, Any]) -> None:
    payload = _built(state, {})
    assert payload is not None
    assert schema_errors(payload) == []


@examples(200)
@given(state=known_states(), kwargs=caller_args)
def test_whatever_the_builder_accepts_validates(state: dict[str, Any], kwargs: Any) -> None:
    payload = _built(state, kwargs)
    if payload is not None:
        assert schema_errors(payload) == []


# -- each constraint rejects ----------------------------------------------------------------

GOOD = json.loads(
    Serialised.of(
        build_envelope_from_state(
            {
                "target": {"ticker": "NVDA", "trade_date": "2026-05-11"},
                "synthesis_verdict": "BUY",
                "synthesis_confidence": 0.78,
                "synthesis_score": 0.41,
                "agent_signals": [{"agent": "a", "domain": "d", "confidence": 0.5}],
                "source_metrics": [{"source": "s", "success": True, "result_bytes": 3}],
                "arena_total_seconds": 1.5,
            },
            correlation_id=CID,
            published_at=WHEN,
        )
    ).payload
)
_PATHS: dict[str, tuple[str, ...]] = {
    "schema_version": ("schema_version",),
    "arena": ("arena",),
    "published_at": ("published_at",),
    "correlation_id": ("correlation_id",),
    "arena_id": ("arena_id",),
    "meta": ("meta",),
    "decision": ("decision",),
    "ticker": ("decision", "target", "ticker"),
    "trade_date": ("decision", "target", "trade_date"),
    "exchange": ("decision", "target", "exchange"),
    "asset_class": ("decision", "target", "asset_class"),
    "verdict": ("decision", "synthesis", "verdict"),
    "confidence": ("decision", "synthesis", "confidence"),
    "ensemble_score": ("decision", "synthesis", "ensemble_score"),
    "reasoning": ("decision", "synthesis", "reasoning"),
    "agent_signals": ("decision", "agent_signals"),
    "signal": ("decision", "agent_signals", 0, "signal"),
    "signal_confidence": ("decision", "agent_signals", 0, "confidence"),
    "summary": ("decision", "agent_signals", 0, "summary"),
    "key_factors": ("decision", "agent_signals", 0, "key_factors"),
    "agent": ("decision", "agent_signals", 0, "agent"),
    "total_calls": ("decision", "source_metrics", "total_calls"),
    "failed": ("decision", "source_metrics", "failed"),
    "by_source": ("decision", "source_metrics", "by_source"),
    "by_source_s": ("decision", "source_metrics", "by_source", "s"),
    "phase_timings": ("decision", "phase_timings"),
    "arena_total_seconds": ("decision", "arena_total_seconds"),
}
_MISSING = object()


def changed(where: str, value: Any) -> str:
    """GOOD with the field at ``where`` set to ``value`` (or removed: ``_MISSING``), as JSON."""
    document = copy.deepcopy(GOOD)
    *parents, last = _PATHS[where]
    holder: Any = document
    for part in parents:
        holder = holder[part]
    if value is _MISSING:
        del holder[last]
    else:
        holder[last] = value
    return json.dumps(document)


BAD: list[tuple[str, Any]] = [
    ("schema_version", "2"),
    ("schema_version", 1),
    ("schema_version", _MISSING),
    ("arena", "other"),
    ("published_at", "2026-05-11T21:30:00"),  # naive
    ("published_at", "2026-05-11T23:30:00+02:00"),  # not UTC
    ("published_at", "2026-05-11T21:30:00-00:00"),
    ("published_at", "2026-05-11 21:30:00Z"),
    ("published_at", "2026-05-11T21:30Z"),
    ("published_at", "2026-05-11T21:30:00z"),
    ("published_at", "2026-05-11T21:30:00.1234567Z"),
    ("published_at", "2026-02-30T21:30:00Z"),
    ("published_at", "2026-05-11T21:30:00Z\n"),
    ("published_at", 1778535000),  # epoch
    ("published_at", _MISSING),
    ("correlation_id", "not-hex"),
    ("correlation_id", CID.upper()),
    ("correlation_id", CID[:31]),
    ("correlation_id", CID + "\n"),
    ("correlation_id", _MISSING),
    ("arena_id", 7),
    ("arena_id", _MISSING),
    ("meta", []),
    ("meta", _MISSING),
    ("decision", _MISSING),
    ("ticker", "nv:da*"),
    ("ticker", "nvda"),
    ("ticker", "NVDA\n"),
    ("ticker", "A" * 21),
    ("ticker", "..."),
    ("ticker", ""),
    ("trade_date", "11/05/2026"),
    ("trade_date", "2026-02-30"),
    ("trade_date", "2026-05-11T00:00:00"),
    ("trade_date", "20260511"),
    ("trade_date", ""),
    ("exchange", _MISSING),
    ("asset_class", None),
    ("verdict", "buy"),
    ("confidence", "0.5"),
    ("confidence", 1.01),
    ("confidence", -0.01),
    ("confidence", True),
    ("confidence", None),
    ("ensemble_score", -1.5),
    ("ensemble_score", "0.4"),
    ("reasoning", _MISSING),
    ("agent_signals", _MISSING),
    ("agent_signals", {}),
    ("signal", "UP"),
    ("signal_confidence", 2),
    ("summary", "x" * 301),
    ("summary", _MISSING),
    ("key_factors", ["k"] * 11),
    ("key_factors", [1]),
    ("agent", 3),
    ("total_calls", "3"),
    ("total_calls", -1),
    ("total_calls", 3.5),
    ("total_calls", _MISSING),
    ("failed", True),
    ("by_source", _MISSING),
    ("by_source_s", "1"),
    ("by_source_s", 1.5),
    ("phase_timings", [1]),
    ("phase_timings", _MISSING),
    ("arena_total_seconds", "1.5"),
    ("arena_total_seconds", _MISSING),
    ("meta", {"x": math.nan}),
    ("phase_timings", [{"seconds": math.inf}]),
]


@pytest.mark.parametrize("where,value", BAD, ids=[f"{w}={v!r}"[:60] for w, v in BAD])
def test_bad_envelopes_are_rejected_by_schema_and_decoder(where: str, value: Any) -> None:
    payload = changed(where, value)
    assert not schema_accepts(payload)
    envelope, reason = explain_payload(payload)
    assert envelope is None and reason


GOOD_VARIANTS: list[tuple[str, Any]] = [
    ("published_at", "2026-05-11T21:30:00+00:00"),
    ("published_at", "2026-05-11T21:30:00.5Z"),
    ("ticker", "^GSPC"),
    ("ensemble_score", -0.0),
    ("total_calls", 3.0),  # JSON Schema counts 3.0 as an integer
    ("arena_total_seconds", None),
    ("arena_total_seconds", 2),
    ("meta", {"n": 2**70}),
]


@pytest.mark.parametrize("where,value", GOOD_VARIANTS)
def test_good_variants_are_accepted_by_schema_and_decoder(where: str, value: Any) -> None:
    payload = changed(where, value)
    assert schema_errors(payload) == []
    envelope = decode_envelope(payload)
    assert envelope is not None
    assert envelope.published_at.utcoffset() is not None
    assert envelope.published_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_extra_fields_are_accepted_by_both() -> None:
    document = copy.deepcopy(GOOD)
    document["new_field"] = 1
    document["decision"]["target"]["venue"] = "X"
    assert schema_accepts(json.dumps(document))
    assert decode_envelope(json.dumps(document)) is not None


# -- the decoder agrees with the schema -----------------------------------------------------

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(
        [
            "0.5",
            "3",
            "NVDA",
            "nv:da*",
            "2026-05-11",
            "2026-02-30",
            "11/05/2026",
            "2026-05-11T21:30:00",
            "2026-05-11T21:30:00Z",
            "2026-05-11T21:30:00.25+00:00",
            "2026-05-11T21:30:00+01:00",
            CID,
            "not-hex",
            "BUY",
            "BULLISH",
            "1",
            "trading_intelligence",
            "x" * 301,
        ]
    ),
    st.just(3.0),
    st.just(-0.0),
)
_values = st.one_of(
    _leaves,
    st.lists(_leaves, max_size=3),
    st.dictionaries(st.text(max_size=4), _leaves, max_size=2),
    st.just(_MISSING),
)


def _apply(document: Any, path: tuple[Any, ...], value: Any) -> None:
    holder = document
    for part in path[:-1]:
        holder = holder[part]
    if value is _MISSING:
        if isinstance(holder, dict):
            holder.pop(path[-1], None)
        else:
            del holder[path[-1]]
    else:
        holder[path[-1]] = value


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    items: Any = ()
    if isinstance(document, dict):
        items = document.items()
    elif isinstance(document, list):
        items = enumerate(document)
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A generated envelope's JSON with up to three values replaced or removed."""
    state = draw(valid_states)
    when = draw(st.datetimes(timezones=st.just(UTC)))
    envelope = build_envelope_from_state(state, published_at=when)
    document = json.loads(Serialised.of(envelope).payload)
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _apply(document, path, draw(_values))
    return json.dumps(document)


@examples(500)
@given(payload=mutated())
def test_decoder_accepts_exactly_what_the_schema_accepts(payload: str) -> None:
    assert (decode_envelope(payload) is not None) == schema_accepts(payload), (
        explain_payload(payload)[1],
        schema_errors(payload),
    )


def test_mutations_reach_both_answers() -> None:
    """The property above is not vacuous: the mutations give accepted and refused payloads."""
    seen: set[bool] = set()

    @examples(200)
    @given(payload=mutated())
    def collect(payload: str) -> None:
        seen.add(schema_accepts(payload))

    collect()
    assert seen == {True, False}


def test_what_the_schema_cannot_say_is_as_documented() -> None:
    """docs/core.md's table of surprises for other languages, as the publisher writes today."""
    states = {"target": {"ticker": "X", "trade_date": "2026-05-11"}, "synthesis_verdict": "BUY"}
    envelope = build_envelope_from_state(
        {**states, "synthesis_confidence": 1e-07, "synthesis_score": -0.0},
        published_at=datetime(2026, 5, 11, 21, 30, tzinfo=UTC),
        extra_meta={"ns": 1_778_535_000_123_456_789},
    )
    payload = Serialised.of(envelope).payload
    fields = hash_fields(envelope, payload)
    assert '"published_at":"2026-05-11T21:30:00Z"' in payload
    assert fields["published_at"] == "2026-05-11T21:30:00+00:00"
    assert '"confidence":1e-7' in payload and fields["confidence"] == "1e-07"
    assert '"ensemble_score":-0.0' in payload and fields["ensemble_score"] == "-0.0"
    assert '"ns":1778535000123456789' in payload and 1_778_535_000_123_456_789 > 2**53
    fraction = build_envelope_from_state(
        {**states, "synthesis_confidence": 0.30000000000000004},
        published_at=datetime(2026, 5, 11, 21, 30, 0, 120000, tzinfo=UTC),
    )
    payload = Serialised.of(fraction).payload
    fields = hash_fields(fraction, payload)
    assert '"published_at":"2026-05-11T21:30:00.120000Z"' in payload
    assert fields["published_at"] == "2026-05-11T21:30:00.120000+00:00"
    assert fields["confidence"] == "0.30000000000000004"
    assert schema_errors(payload) == []


@pytest.mark.parametrize(
    "where,value,named",
    [
        ("meta", {"x": math.nan}, "meta.x: Input should be a finite number"),
        ("phase_timings", [{"s": math.inf}], "phase_timings.0.s: Input should be a finite"),
        ("published_at", "2026-05-11T21:30:00", "published_at: Value error, must be an ISO"),
        ("correlation_id", "not-hex", "correlation_id: 'not-hex' is not 32 lowercase hex"),
        ("ticker", "nv:da*", "ticker: 'nv:da*' is not on the allow-list"),
        ("trade_date", "2026-02-30", "trade_date: '2026-02-30' is not a real date"),
        ("exchange", _MISSING, "decision.target: missing field(s) exchange"),
    ],
)
def test_the_decoders_reason_names_the_rule(where: str, value: Any, named: str) -> None:
    _, reason = explain_payload(changed(where, value))
    assert reason.startswith("validation failed: ") and named in reason, reason
