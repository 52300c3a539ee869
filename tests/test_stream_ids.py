"""ti_core.contract.stream_ids: the one parser of stream entry ids, against its own round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ti_core.contract import stream_ids

parts = st.integers(min_value=0, max_value=2**64 - 1)


@given(parts, parts)
def test_from_ms_and_parse_round_trip(ms: int, seq: int) -> None:
    entry_id = stream_ids.from_ms(ms, seq)
    assert stream_ids.parse(entry_id) == (ms, seq)
    assert stream_ids.ms_of(entry_id) == ms
    assert stream_ids.end_of_ms_us(entry_id) == ms * 1000 + 999


@given(parts, parts, parts, parts)
def test_compare_orders_by_time_then_sequence(a: int, b: int, c: int, d: int) -> None:
    left, right = stream_ids.from_ms(a, b), stream_ids.from_ms(c, d)
    assert stream_ids.compare(left, right) == ((a, b) > (c, d)) - ((a, b) < (c, d))
    assert stream_ids.compare(left, left) == 0


@given(parts, parts)
def test_after_is_the_next_id_and_nothing_between(ms: int, seq: int) -> None:
    entry_id = stream_ids.from_ms(ms, seq)
    nxt = stream_ids.after(entry_id)
    assert stream_ids.compare(entry_id, nxt) == -1
    assert stream_ids.parse(nxt) == (ms, seq + 1)


def test_a_bare_millisecond_is_sequence_zero() -> None:
    assert stream_ids.parse("1700000000000") == (1700000000000, 0)
    assert stream_ids.after("5") == "5-1"


@pytest.mark.parametrize("bad", ["", "-", "abc", "1-", "-1", "1-2-3", "1.5-0", " 1-0", "١-0"])
def test_unreadable_ids_parse_to_none_and_sort_first(bad: str) -> None:
    assert stream_ids.parse(bad) is None
    assert stream_ids.sort_key(bad) == (0, 0)


def test_the_head_is_read_like_the_lua_scripts_read_it() -> None:
    assert stream_ids.ms_of("1700-x") == 1700  # string.match(entry, '^(%d+)') reads the head
    assert stream_ids.ms_of("x-1") is None
    assert stream_ids.end_of_ms_us("") is None


def test_negative_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        stream_ids.from_ms(-1)
