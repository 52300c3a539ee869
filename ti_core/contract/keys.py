"""Redis key names, and the validation that keeps tickers and dates inside them.

Every key this package touches is made here, by small pure functions, so the key shape
cannot drift between publisher, consumer and tools. Tickers and dates are normalised and
checked *before* they become part of a key: ``NV:DA*`` must never reach Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from ti_core.errors import InvalidStateError, clip

__all__ = [
    "ARENA_NAME",
    "DECISION_HASH_PREFIX",
    "DEFAULT_STREAM_NAME",
    "KEY_PREFIX",
    "CORRELATION_ID_PATTERN",
    "TICKER_MAX_LEN",
    "TICKER_PATTERN",
    "attempts_key",
    "correlation_key",
    "dead_letter_key",
    "decision_hash_key",
    "failure_key",
    "group_lost_key",
    "latest_key",
    "normalize_ticker",
    "normalize_trade_date",
    "parse_tickers",
    "shorten",
    "split_tickers",
    "validate_stream_name",
]

ARENA_NAME = "trading_intelligence"
KEY_PREFIX = f"maf:arena:{ARENA_NAME}"
DEFAULT_STREAM_NAME = f"{KEY_PREFIX}:output"
DECISION_HASH_PREFIX = f"{KEY_PREFIX}:decisions"

TICKER_MAX_LEN = 20
# ASCII letters and digits, plus the punctuation real symbols use: BRK.B, BF-B, ^GSPC, ES=F,
# EURUSD=X, 7203.T, BTC_USD. At least one letter or digit. Nothing that can break a key
# (':' separates parts, '*', '?', '[', '{' and '}' are glob or hash-slot syntax).
# The patterns are portable (ECMA-262 and Python ``re``): the JSON Schema publishes them. The
# ``(?!\n)`` keeps ``re.search`` from matching before a trailing newline, as ``$`` alone would.
TICKER_PATTERN = rf"^(?=.*[A-Z0-9])[A-Z0-9.\-=^_]{{1,{TICKER_MAX_LEN}}}$(?!\n)"
"""A normalised ticker (what the envelope carries): the allow-list, after trim and upper-case."""
CORRELATION_ID_PATTERN = r"^[0-9a-f]{32}$(?!\n)"
"""A correlation id: 32 lowercase hex characters."""
_TICKER_RE = re.compile(TICKER_PATTERN)
_STREAM_RE = re.compile(r"^[A-Za-z0-9:._\-]{1,200}$")
_CID_RE = re.compile(CORRELATION_ID_PATTERN)


def shorten(value: Any, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error messages and warnings."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not turn a clear error into another one
        text = f"<unrepresentable {type(value).__name__}>"
    return clip(text, limit)


# Every publish normalises the same few thousand tickers and dates several times (builder,
# keys, hash): remember the answers for exact ``str`` inputs (bounded; errors are not kept).
_SEEN_TICKERS: dict[str, str] = {}
_SEEN_DATES: dict[str, str] = {}
_SEEN_MAX = 8192


def _remember(seen: dict[str, str], key: str, value: str) -> str:
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen[key] = value
    return value


def normalize_ticker(value: Any, *, field: str = "ticker") -> str:
    """Refuse non-ASCII, then trim and upper-case a ticker and check it against the
    allow-list; raise otherwise."""
    if type(value) is str:
        known = _SEEN_TICKERS.get(value)
        if known is not None:
            return known
    if not isinstance(value, str):
        raise InvalidStateError(f"{field} must be a string, got {shorten(value)}")
    if not value.isascii():  # before any case mapping: 'ſpy'.upper() is 'SPY', 'ıbm' is 'IBM'
        raise InvalidStateError(
            f"{field} {shorten(value)} is not a ticker: non-ASCII characters "
            "(look-alike letters are refused, not folded)"
        )
    ticker = value.strip().upper()
    if not _TICKER_RE.fullmatch(ticker):
        raise InvalidStateError(
            f"{field} {shorten(value)} is not a ticker: use 1-{TICKER_MAX_LEN} of A-Z, 0-9 "
            "and . - = ^ _"
        )
    return _remember(_SEEN_TICKERS, value, ticker) if type(value) is str else ticker


def split_tickers(value: str | Iterable[Any]) -> list[Any]:
    """The non-blank items of ``"NVDA, aapl,,"`` (or of a list), unchecked, in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item for item in items if str(item).strip()]


def parse_tickers(value: str | Iterable[Any]) -> list[str]:
    """``"NVDA,aapl,NVDA"`` (or a list) -> ``["NVDA", "AAPL"]``: every ticker normalised, in
    order, once; blanks skipped. Raises :class:`InvalidStateError` for an invalid ticker
    (naming it) and for a list with none."""
    names = list(dict.fromkeys(normalize_ticker(item) for item in split_tickers(value)))
    if not names:
        raise InvalidStateError("no tickers given")
    return names


def normalize_trade_date(value: Any, *, field: str = "trade_date") -> str:
    """Return ``YYYY-MM-DD`` from a date, a datetime or an ISO string; raise otherwise."""
    if type(value) is str:
        known = _SEEN_DATES.get(value)
        if known is not None:
            return known
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise InvalidStateError(f"{field} must be a date or an ISO string, got {shorten(value)}")
    text = value.strip()
    try:
        parsed = (
            date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
        )
    except ValueError as exc:
        raise InvalidStateError(
            f"{field} {shorten(value)} is not a real date (expected YYYY-MM-DD)"
        ) from exc
    normal = parsed.isoformat()
    return _remember(_SEEN_DATES, value, normal) if type(value) is str else normal


def validate_stream_name(name: Any) -> str:
    """A stream name is a key: letters, digits and ``:._-`` only."""
    if not isinstance(name, str) or not _STREAM_RE.fullmatch(name):
        raise InvalidStateError(f"stream name {shorten(name)} is not a valid key")
    return name


def decision_hash_key(ticker: str, trade_date: str) -> str:
    """``maf:arena:trading_intelligence:decisions:{TICKER}:{YYYY-MM-DD}`` (contract)."""
    return f"{DECISION_HASH_PREFIX}:{normalize_ticker(ticker)}:{normalize_trade_date(trade_date)}"


def correlation_key(stream_name: str, correlation_id: str) -> str:
    """Idempotency record: which entry of ``stream_name`` a correlation id became."""
    if not _CID_RE.fullmatch(correlation_id):
        raise InvalidStateError(f"correlation_id {shorten(correlation_id)} is not 32 hex chars")
    return f"{stream_name}:cid:{correlation_id}"


def latest_key(stream_name: str, ticker: str, trade_date: str) -> str:
    """Content record: digest and entry id of the last entry appended for (ticker, date)."""
    return f"{stream_name}:latest:{normalize_ticker(ticker)}:{normalize_trade_date(trade_date)}"


def failure_key(stream_name: str) -> str:
    """Failed (ticker, date) publishes: field ``TICKER:DATE`` -> JSON reason; backfill reads it."""
    return f"{stream_name}:failures"


def dead_letter_key(stream_name: str) -> str:
    """Dead-letter stream of ``stream_name``: entries a consumer group could not handle, and why."""
    return f"{stream_name}:dead"


def attempts_key(stream_name: str, group: str) -> str:
    """Handler attempts per pending entry of ``group``: field entry id -> times the handler ran."""
    return f"{stream_name}:attempts:{group}"


def group_lost_key(stream_name: str, group: str) -> str:
    """Entries trimmed before ``group`` read them: a hash of counts and when (never trimmed)."""
    return f"{stream_name}:lost:{group}"
