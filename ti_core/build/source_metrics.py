"""Source-metric records -> the envelope's summary: calls, successes, failures, bytes and
calls per source, with a bound on its JSON bytes. A part of the builder: its rules are in
the builder's docstring, its warnings are the builder's.

Records as arenas send them (plain dicts holding ``source``, ``success`` and an int
``result_bytes``) are counted with subscripts, anything else by the per-record rules; source
names already found clean are remembered and not checked again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ti_core.build._fast import maker
from ti_core.build.coerce import ITEM_BYTES, NAME_MAX_CHARS, TEXT_BYTES, number, sequence, text
from ti_core.contract.keys import shorten
from ti_core.contract.models import SourceMetricsSummary
from ti_core.errors import InvalidStateError

__all__ = ["summarise_source_metrics"]

logger = logging.getLogger("ti_core.builder")  # its warnings are the builder's

_make_summary = maker(SourceMetricsSummary)


def _byte_count(value: Any) -> int:
    try:
        count = int(number(value, "result_bytes", 0.0, None))
    except InvalidStateError as exc:
        logger.warning("source_metrics: %s; counting 0 bytes", exc)
        return 0
    return count


def summarise_source_metrics(state: Mapping[str, Any]) -> tuple[SourceMetricsSummary, int]:
    """The summary of ``state["source_metrics"]``, and a bound on its JSON bytes."""
    records = sequence(state.get("source_metrics"), "source_metrics")
    total, successful, total_bytes, by_source = _count_plain(records) or _count_each(records)
    summary = _make_summary(total, successful, total - successful, total_bytes, by_source)
    size = (
        TEXT_BYTES * sum(map(len, by_source))
        + ITEM_BYTES * len(by_source)
        + total_bytes.bit_length() // 3
        + 1
    )  # digits of an int of any size
    return summary, size


def _count_plain(records: Sequence[Any]) -> tuple[int, int, int, dict[str, int]] | None:
    """``_count_each`` for records as arenas send them (plain dicts holding all three keys,
    byte counts that are ints >= 0, hashable names), with subscripts instead of ``get``;
    None otherwise."""
    successful = total_bytes = 0
    counts: dict[Any, int] = {}  # calls by raw name, in order of first appearance
    calls = counts.get
    try:
        for raw in records:
            if type(raw) is not dict:
                return None
            count = raw["result_bytes"]
            if type(count) is not int or count < 0:
                return None
            total_bytes += count
            if raw["success"] is True:
                successful += 1
            name = raw["source"]
            counts[name] = calls(name, 0) + 1
    except (KeyError, TypeError):  # TypeError: an unhashable name
        return None
    return len(records), successful, total_bytes, _by_source(counts)


def _count_each(records: Sequence[Any]) -> tuple[int, int, int, dict[str, int]]:
    """The per-record rules: skip what is not a mapping, count a bad byte count as 0 (both
    with a warning), then count calls by source name: blank or non-text names are dropped,
    the others cleaned as text (names repeat: each distinct one is cleaned once)."""
    total = successful = total_bytes = 0
    counts: dict[Any, int] = {}  # calls by raw name, in order of first appearance
    for index, raw in enumerate(records):
        if type(raw) is not dict and not isinstance(raw, Mapping):
            logger.warning("skipping source_metrics[%d]: not a mapping: %s", index, shorten(raw))
            continue
        total += 1
        if raw.get("success") is True:
            successful += 1
        count = raw.get("result_bytes")
        total_bytes += count if type(count) is int and count >= 0 else _byte_count(count)
        name = raw.get("source")
        try:
            counts[name] = counts.get(name, 0) + 1
        except TypeError:  # an unhashable name: it is not text, so it is dropped anyway
            continue
    return total, successful, total_bytes, _by_source(counts)


# Source names already found clean (plain ASCII text, trimmed, non-empty, within bounds):
# arenas repeat a handful, so most summaries need no per-name check (bounded; by value).
_CLEAN_SOURCES: dict[str, None] = {}
_CLEAN_SOURCES_MAX = 4096


def _by_source(counts: dict[Any, int]) -> dict[str, int]:
    """Calls by raw source name -> calls by clean name (the raw counts when all are clean)."""
    for name in counts:  # one loop, no set: cheaper than view and type-set comparisons
        if type(name) is not str or name not in _CLEAN_SOURCES:
            break
    else:
        return counts  # every name already clean: the counts are the summary
    by_source: dict[str, int] = {}
    for name, count in counts.items():
        if type(name) is not str or not name or not name.isascii() or name != name.strip():
            if not isinstance(name, str) or not name.strip():
                continue  # None, numbers, blank: no source to count
            name = text(name, "source")
        elif len(name) > NAME_MAX_CHARS:
            name = name[:NAME_MAX_CHARS]
        else:
            if len(_CLEAN_SOURCES) >= _CLEAN_SOURCES_MAX:
                _CLEAN_SOURCES.clear()
            _CLEAN_SOURCES[name] = None
        by_source[name] = by_source.get(name, 0) + count
    return by_source
