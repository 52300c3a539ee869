"""ti_core.consume.group_lag's pure parts: what a group has lost to trimming, from XINFO's numbers.

The report as a whole runs against a real redis-server in test_groups and
test_consumer_faults; these pin the arithmetic case by case.
"""

from __future__ import annotations

from typing import Any

import pytest

from ti_core.consume.group_lag import _recorded_loss, _unread_trimmed


def _group(last: str, read: int | None, lag: int | None = 0) -> dict[str, Any]:
    return {"last_delivered_id": last, "entries_read": read, "lag": lag}


@pytest.mark.parametrize(
    ("group", "removed", "first", "expected"),
    [
        (_group("5-0", 5), None, "3-0", None),  # Redis cannot tell what was removed
        (_group("5-0", 5), 0, "1-0", 0),  # nothing trimmed
        (_group("5-0", 5), 2, "3-0", 0),  # past the gap already: recorded, not unread
        (_group("1-0", 1), 4, "5-0", 3),  # behind the first entry: 4 removed, 1 read
        (_group("0-0", None), 4, "5-0", 4),  # never read, position unknown: all of them
        (_group("2-0", None), 4, "5-0", None),  # read somehow, count unknown
        (_group("9-0", 9, lag=3), 2, "8-0", 3),  # caught up, read some other way: its lag
    ],
)
def test_unread_trimmed(
    group: dict[str, Any], removed: int | None, first: str | None, expected: int | None
) -> None:
    assert _unread_trimmed(group, removed, first, "9-0") == expected


def test_recorded_loss_reads_the_lost_hash() -> None:
    assert _recorded_loss(None) == {
        "lost_recorded": 0,
        "lost_unknown_gaps": 0,
        "lost_since": None,
        "lost_last_at": None,
    }
    raw = {b"entries": b"7", b"unknown": b"1", b"first_at_ms": b"0", b"last_at_ms": b"1000"}
    assert _recorded_loss(raw) == {
        "lost_recorded": 7,
        "lost_unknown_gaps": 1,
        "lost_since": "1970-01-01T00:00:00+00:00",
        "lost_last_at": "1970-01-01T00:00:01+00:00",
    }
