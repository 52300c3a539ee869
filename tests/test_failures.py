"""ti_core.failures: the failure records' one shape, truncation, writer and reader."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ti_core.contract.keys import DEFAULT_STREAM_NAME, failure_key
from ti_core.failures import (
    RAW_CHARS,
    REASON_CHARS,
    DeadLetter,
    FailureRecord,
    clear_failures,
    field_of,
    reason_of,
    record_failures,
)


@given(st.text(max_size=2 * REASON_CHARS))
def test_a_record_is_one_bounded_line_and_reads_back_as_written(reason: str) -> None:
    record = FailureRecord.now(reason)
    assert len(record.reason) <= REASON_CHARS
    assert record.reason == record.reason.strip() and not any(c in record.reason for c in "\n\r\t")
    assert record.at.endswith("+00:00")
    assert FailureRecord.from_stored(record.to_json()) == record
    assert FailureRecord.from_stored(record.to_json().encode()) == record


def test_a_short_reason_is_kept_whole_and_a_long_one_says_it_was_cut() -> None:
    assert FailureRecord.now("arena: boom\n  twice").reason == "arena: boom twice"
    cut = FailureRecord.now("x" * (REASON_CHARS + 1)).reason
    assert len(cut) == REASON_CHARS and cut.endswith("...")


def test_values_another_tool_wrote_are_their_own_reason() -> None:
    assert reason_of(b"plain text") == "plain text"
    assert reason_of("[1, 2]") == "[1, 2]"
    assert reason_of(json.dumps({"at": "t"})) == ""
    assert reason_of(b"\xff\xfe") == "<not UTF-8>"


def test_field_names_are_ticker_colon_date() -> None:
    assert field_of("BRK.B", "2026-05-11") == "BRK.B:2026-05-11"


async def test_record_then_clear(fake_redis: Any) -> None:
    stream = DEFAULT_STREAM_NAME
    await record_failures(fake_redis, {}, stream_name=stream)
    assert await fake_redis.exists(failure_key(stream)) == 0
    names = {field_of("NVDA", "2026-05-11"): "run-arena: down", field_of("AMD", "2026-05-11"): "x"}
    await record_failures(fake_redis, names, stream_name=stream)
    stored = await fake_redis.hgetall(failure_key(stream))
    assert {k.decode(): reason_of(v) for k, v in stored.items()} == names
    assert set(json.loads(stored[b"NVDA:2026-05-11"])) == {"reason", "at"}
    await clear_failures(fake_redis, iter([field_of("NVDA", "2026-05-11")]), stream_name=stream)
    await clear_failures(fake_redis, [], stream_name=stream)
    assert list(await fake_redis.hkeys(failure_key(stream))) == [b"AMD:2026-05-11"]


def test_a_dead_letter_keeps_the_raw_data_and_bounds_the_rest() -> None:
    letter = DeadLetter.now("1-0", "s", "g", "c", "bad\n  entry " + "x" * 600, 3, b"\xff raw")
    assert letter.data == b"\xff raw"
    assert letter.reason.startswith("bad entry x") and len(letter.reason) == REASON_CHARS
    assert list(letter.fields()) == [
        "entry_id",
        "stream",
        "group",
        "consumer",
        "reason",
        "attempts",
        "at",
        "data",
    ]
    stored = {
        k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in letter.fields().items()
    }
    assert DeadLetter.from_fields(stored) == letter
    assert DeadLetter.now("1-0", "s", "g", "c", "r", 0, None).data == ""
    assert len(DeadLetter.now("1-0", "s", "g", "c", "r", 0, {"k": "v" * 5000}).data) == RAW_CHARS
