"""Trading sessions between two dates, from an exchange calendar, with the skipped days explained.

Calendars come from ``exchange_calendars`` (any of its codes: ``XNYS``, ``XLON``, ``XTKS``...),
imported lazily because it takes about a second to import; ``weekdays`` (Monday to Friday,
no holidays) needs no dependency. A day that is not a session is reported as ``weekend`` (off
by the exchange's week mask) or ``holiday`` (any other closed weekday), so a backfill can say
why it did not run a date.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ti_core.contract.keys import normalize_trade_date, shorten
from ti_core.defaults import CALENDAR
from ti_core.errors import ConfigError, InvalidStateError

__all__ = ["WEEKDAYS", "SessionPlan", "current_session", "sessions"]

WEEKDAYS = "weekdays"
_WEEKDAY_MASK = "1111100"  # Monday .. Sunday, as exchange_calendars spells a week mask
_FIND_CODES = (
    "use 'weekdays' or an exchange_calendars code such as XNYS, XNAS, XLON, XTKS "
    '(list them with: python -c "import exchange_calendars as x; '
    'print(x.get_calendar_names())")'
)


@dataclass(frozen=True)
class SessionPlan:
    """Sessions from ``start`` to ``end`` inclusive, and every other day with its reason."""

    calendar: str
    start: str
    end: str
    sessions: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Calendar:
    code: str
    weekmask: str
    tz: tzinfo
    sessions: frozenset[str] | None  # None: every day the week mask allows is a session


def _exchange_calendars() -> Any:
    try:
        import exchange_calendars  # type: ignore[import-untyped]
    except ImportError as exc:  # an optional extra in some installs
        raise ConfigError(
            "exchange calendars need the exchange_calendars package "
            "(pip install exchange-calendars); or use the calendar 'weekdays' (no holidays)"
        ) from exc
    return exchange_calendars


@functools.lru_cache(maxsize=32)
def _load(code: str, first_year: int, last_year: int) -> _Calendar:
    """The calendar ``code`` covering whole years ``first_year``..``last_year`` (cached)."""
    if code.lower() == WEEKDAYS:
        return _Calendar(WEEKDAYS, _WEEKDAY_MASK, UTC, None)
    with warnings.catch_warnings():
        # pandas deprecations raised inside exchange_calendars are its business, not a user's
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return _exchange_calendar(code, first_year, last_year)


def _exchange_calendar(code: str, first_year: int, last_year: int) -> _Calendar:
    xcals = _exchange_calendars()
    names = set(xcals.get_calendar_names())
    name = code if code in names else code.upper()
    if name not in names:
        raise ConfigError(f"unknown calendar {shorten(code)}: {_FIND_CODES}")
    try:
        default = xcals.get_calendar(name)
        lo, hi = date(first_year, 1, 1), date(last_year, 12, 31)
        if lo < default.first_session.date() or hi > default.last_session.date():
            default = xcals.get_calendar(name, start=lo.isoformat(), end=hi.isoformat())
    except Exception as exc:  # a calendar that cannot cover the range, or a broken one
        raise ConfigError(
            f"calendar {name} cannot cover {first_year}-{last_year}: {shorten(str(exc), 200)}"
        ) from exc
    days = frozenset(ts.date().isoformat() for ts in default.sessions)
    return _Calendar(name, str(default.weekmask), ZoneInfo(str(default.tz)), days)


def _calendar_code(calendar: Any) -> str:
    if not isinstance(calendar, str) or not calendar.strip():
        raise ConfigError(
            f"calendar must be a non-empty code, got {shorten(calendar)}: {_FIND_CODES}"
        )
    return calendar.strip()


def sessions(start: Any, end: Any, calendar: str = CALENDAR) -> SessionPlan:
    """Every session of ``calendar`` from ``start`` to ``end`` (both inclusive), oldest first."""
    first = date.fromisoformat(normalize_trade_date(start, field="start"))
    last = date.fromisoformat(normalize_trade_date(end, field="end"))
    if last < first:
        raise InvalidStateError(f"end {last} is before start {first}")
    cal = _load(_calendar_code(calendar), first.year, last.year)
    plan = SessionPlan(cal.code, first.isoformat(), last.isoformat())
    day = first
    while day <= last:
        text = day.isoformat()
        if cal.weekmask[day.weekday()] != "1":
            plan.skipped.append((text, "weekend"))
        elif cal.sessions is not None and text not in cal.sessions:
            plan.skipped.append((text, "holiday"))
        else:
            plan.sessions.append(text)
        day += timedelta(days=1)
    return plan


def current_session(
    calendar: str = CALENDAR, now: datetime | None = None
) -> tuple[str | None, str]:
    """Today's session in the exchange's time zone, or ``None`` and why there is none.

    A naive ``now`` is taken as UTC. ``weekdays`` uses UTC.
    """
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    code = _calendar_code(calendar)
    utc_day = moment.astimezone(UTC).date()
    tz = _load(code, utc_day.year - 1, utc_day.year + 1).tz
    today = moment.astimezone(tz).date()
    plan = sessions(today, today, code)
    if plan.sessions:
        return plan.sessions[0], f"{today} is a session ({plan.calendar})"
    reason = plan.skipped[0][1]
    article = "an" if reason[0] in "aeiou" else "a"
    return None, f"{today} is {article} {reason} ({plan.calendar})"
