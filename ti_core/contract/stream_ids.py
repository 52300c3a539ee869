"""Redis stream entry ids (``<ms>-<seq>``): parse, order, step and build them, in one place.

Pure functions on strings. An id the server wrote is always well formed; anything else (an
empty string, a hash field some tool damaged) parses to ``None`` rather than raising, so a
caller decides what a bad id means. :func:`ms_of` reads the head alone, as the publish scripts'
``string.match(entry, '^(%d+)')`` does, so Python and Lua cap a decision's order alike.
"""

from __future__ import annotations

import re

__all__ = ["after", "compare", "end_of_ms_us", "from_ms", "ms_of", "parse", "sort_key"]

_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_HEAD = re.compile(r"[0-9]+")


def parse(entry_id: str) -> tuple[int, int] | None:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; ``"5"`` -> ``(5, 0)``; else ``None``."""
    found = _ID.fullmatch(entry_id)
    if found is None:
        return None
    return int(found[1]), int(found[2] or 0)


def sort_key(entry_id: str) -> tuple[int, int]:
    """The id's position for comparisons; an unreadable id sorts first, as ``0-0``."""
    return parse(entry_id) or (0, 0)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` comes before, at or after ``b`` on a stream."""
    left, right = sort_key(a), sort_key(b)
    return (left > right) - (left < right)


def after(entry_id: str) -> str:
    """The smallest id after ``entry_id``: an exclusive range start without ``(`` syntax."""
    ms, seq = sort_key(entry_id)
    return f"{ms}-{seq + 1}"


def from_ms(ms: int, seq: int = 0) -> str:
    """The id of sequence ``seq`` at Unix time ``ms`` (milliseconds)."""
    if ms < 0 or seq < 0:
        raise ValueError(f"a stream id has no negative parts: {ms}-{seq}")
    return f"{ms}-{seq}"


def ms_of(entry_id: str) -> int | None:
    """The server time (Unix milliseconds) in the id's head, or ``None`` without one."""
    head = entry_id.partition("-")[0]
    return int(head) if _HEAD.fullmatch(head) else None


def end_of_ms_us(entry_id: str) -> int | None:
    """The last microsecond of the millisecond the server wrote the entry (an order's cap)."""
    ms = ms_of(entry_id)
    return None if ms is None else ms * 1000 + 999
