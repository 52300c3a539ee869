"""The builder's shortcuts against its field-by-field rules and full validation, differentially.

For states shaped as arenas send them the builder takes shortcuts: signals built in one go
(``builder._plain_signals``), source-metric records counted with subscripts and source names
already found clean not checked again (``source_metrics``), flat phase timings copied
as they are (``flat_json``), and models made from checked values without pydantic validating
them again (``_fast.maker``). Each generated state is built twice: as shipped, and with
every shortcut switched off and every model validated; the envelopes must serialise to the
same bytes with the same fields set, the refusals and the warnings must be the same.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_builder_fastpath import same_models
from tests.test_builder_properties import caller_args, examples, known_states, valid_states
from ti_core import InvalidStateError, build_envelope_from_state
from ti_core.build import _fast, builder, coerce, source_metrics
from ti_core.build.coerce import flat_json

WHEN = datetime(2026, 5, 11, 21, 0, tzinfo=UTC)
CID = "0123456789abcdef0123456789abcdef"


class _Forgetful(dict[str, None]):
    """A cache that never remembers: every source name takes the per-name rules."""

    def __setitem__(self, key: str, value: None) -> None:
        pass


@contextmanager
def rules_only() -> Iterator[None]:
    """Every shortcut off: the field-by-field rules, then pydantic validating every model."""
    with ExitStack() as stack:
        for target, name, value in [
            (builder, "_plain_signals", lambda raws: None),
            (source_metrics, "_count_plain", lambda records: None),
            (source_metrics, "_CLEAN_SOURCES", _Forgetful()),
            (builder, "flat_json", lambda value: None),
            (coerce, "flat_json", lambda value: None),
            (_fast, "_PLAIN", False),
        ]:
            stack.enter_context(mock.patch.object(target, name, value))
        yield


def outcome(state: Any, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """What a build gives: its JSON and the envelope, or the refusal; and the warnings."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    log = logging.getLogger("ti_core.builder")
    log.addHandler(handler)
    try:
        envelope = build_envelope_from_state(state, **kwargs)
    except InvalidStateError as exc:
        return ("refused", str(exc), records)
    finally:
        log.removeHandler(handler)
    return ("built", envelope.model_dump_json(), records, envelope)


def check_same(state: Any, kwargs: dict[str, Any]) -> None:
    args = {"published_at": WHEN, "correlation_id": CID, **kwargs}
    fast = outcome(state, args)
    with rules_only():
        slow = outcome(state, args)
    assert fast[:3] == slow[:3]
    if fast[0] == "built":
        same_models(fast[3], slow[3])


# States as arenas send them, with the values at the edges of every shortcut: names repeated,
# padded, blank, non-ASCII or too long; counts that are bools, floats or negative; timings with
# non-finite floats, big ints, non-ASCII keys and nested values; signals at their bounds.
class Odd(str):
    """Text that shows itself as something else: the rules use ``str()``, as for numbers."""

    def __str__(self) -> str:
        return "odd"


edgy = st.one_of(
    st.sampled_from(["news", "prices", " news", "news ", "", "  ", "é", "x" * 201, "\x1f"]),
    st.sampled_from([Odd("news"), Odd("fundamentals_analyst")]),
    st.sampled_from([["news"], {"news": 1}]),  # unhashable: never counted as a source
    st.text(max_size=6),
    st.none(),
    st.integers(-2, 2),
)
records = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "source": edgy,
                "success": st.one_of(st.booleans(), st.sampled_from([1, 0, "true", None])),
                "result_bytes": st.one_of(
                    st.integers(0, 10**6), st.sampled_from([-1, True, 2.5, "12", None, 2**70])
                ),
            }
        ),
        st.fixed_dictionaries({"source": edgy}),
        st.sampled_from([None, "record", 3]),
    ),
    max_size=25,
)
plain_values = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 2**64, -(2**63) - 1, "é", "\ud800", " "]),
    st.text(max_size=8),
    st.floats(),
    st.integers(-(2**65), 2**65),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
phase_dicts = st.dictionaries(
    st.one_of(st.text(max_size=6), st.sampled_from(["phase", "seconds", "é"])), plain_values
)
arena_signal = st.fixed_dictionaries(
    {
        "agent": st.one_of(st.sampled_from(["fundamentals_analyst", " x ", "a" * 200]), edgy),
        "domain": st.sampled_from(["fundamentals", "news", "", "d" * 201]),
        "signal": st.sampled_from(["bullish", "BEARISH", "Neutral", " bullish", "up", ""]),
        "confidence": st.one_of(st.floats(), st.sampled_from([0, 1, True, "0.5"])),
        "summary": st.one_of(st.sampled_from(["s" * 300, "s" * 301, " padded "]), edgy),
        "key_factors": st.one_of(
            st.lists(st.one_of(st.sampled_from(["f" * 200, "f" * 201, " g "]), edgy), max_size=11),
            st.tuples(st.just("t")),
        ),
        "narrative": st.just("kept off the wire"),
    }
)
arena_states = st.fixed_dictionaries(
    {
        "target": st.just({"ticker": "NVDA", "trade_date": "2026-05-11", "exchange": "NASDAQ"}),
        "synthesis_verdict": st.sampled_from(["buy", "HOLD", "Sell", "up"]),
        "synthesis_confidence": st.floats(0, 1),
        "synthesis_reasoning": st.text(max_size=40),
        "agent_signals": st.lists(arena_signal, max_size=6),
        "source_metrics": records,
        "phase_timings": st.lists(phase_dicts, max_size=4),
        "arena_total_seconds": st.floats(0, 1e4),
        "llm_model": st.just("claude-sonnet-4"),
    }
)


@pytest.mark.slow  # the fast tier keeps the smaller property tests
@examples(300)
@given(state=arena_states)
def test_shortcuts_give_what_the_rules_give_on_arena_shaped_states(state: dict[str, Any]) -> None:
    check_same(state, {})


@pytest.mark.slow  # the fast tier keeps the smaller property tests
@examples(300)
@given(state=known_states(), kwargs=caller_args)
def test_shortcuts_give_what_the_rules_give_on_any_known_keys(
    state: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    check_same(state, kwargs)


@examples(100)
@given(state=valid_states)
def test_shortcuts_give_what_the_rules_give_on_well_formed_states(state: dict[str, Any]) -> None:
    check_same(state, {})


@examples(400)
@given(value=phase_dicts)
def test_flat_json_is_the_json_round_trip(value: dict[str, Any]) -> None:
    """What ``flat_json`` copies as it is equals what strict JSON gives back, and its bound
    covers the bytes pydantic writes for it."""
    flat = flat_json(value)
    if flat is None:
        return
    copy, bound = flat
    assert copy is not value
    assert copy == json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    assert [type(k) for k in copy] == [str] * len(copy)
    envelope = build_envelope_from_state(
        {"target": {"ticker": "X", "trade_date": "2026-05-11"}, "phase_timings": [value]}
    )
    assert envelope.decision.phase_timings == [copy]
    written = json.dumps(value, separators=(",", ":"), allow_nan=False)  # pydantic's spelling
    assert len(written.encode()) <= bound


def test_clean_source_names_are_remembered_and_counted_alike() -> None:
    """The second summary of the same names takes the remembered path; both are the rules'."""
    names = ["news", "prices", "news", "filings", "prices", "news"]
    counts = {name: names.count(name) for name in names}  # calls by raw name, as counted
    source_metrics._CLEAN_SOURCES.clear()
    first = source_metrics._by_source(dict(counts))
    assert set(source_metrics._CLEAN_SOURCES) == {"news", "prices", "filings"}
    second = source_metrics._by_source(dict(counts))
    assert (
        list(first.items()) == list(second.items()) == [("news", 3), ("prices", 2), ("filings", 1)]
    )
    # A name needing the rules beside remembered ones: the per-name path, merging " news".
    assert source_metrics._by_source({"news": 1, " news": 1, "x" * 205: 1}) == {
        "news": 2,
        "x" * 200: 1,
    }
