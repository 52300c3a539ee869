"""Sessions and skipped days from exchange calendars and the dependency-free ``weekdays``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from ti_core.backfill.calendar import current_session, sessions
from ti_core.errors import ConfigError, InvalidStateError


def test_xnys_thanksgiving_week_skips_the_holiday_and_weekends() -> None:
    plan = sessions("2026-11-20", "2026-11-30")
    assert plan.calendar == "XNYS"
    assert plan.sessions == [
        "2026-11-20",
        "2026-11-23",
        "2026-11-24",
        "2026-11-25",
        "2026-11-27",
        "2026-11-30",
    ]
    assert plan.skipped == [
        ("2026-11-21", "weekend"),
        ("2026-11-22", "weekend"),
        ("2026-11-26", "holiday"),
        ("2026-11-28", "weekend"),
        ("2026-11-29", "weekend"),
    ]


def test_every_day_is_either_a_session_or_skipped_once() -> None:
    plan = sessions(date(2025, 1, 1), "2025-12-31")
    days = plan.sessions + [d for d, _ in plan.skipped]
    assert sorted(days) == [(date(2025, 1, 1) + timedelta(days=i)).isoformat() for i in range(365)]
    assert len(plan.sessions) == 250  # NYSE 2025 (incl. the Jan 9 national day of mourning)
    assert ("2025-01-09", "holiday") in plan.skipped


def test_weekdays_needs_no_calendar_and_has_no_holidays() -> None:
    plan = sessions("2026-11-20", "2026-11-30", calendar="weekdays")
    assert "2026-11-26" in plan.sessions
    assert all(reason == "weekend" for _, reason in plan.skipped)
    assert len(plan.sessions) == 7


def test_other_exchange_codes_and_lower_case() -> None:
    assert ("2026-12-25", "holiday") in sessions("2026-12-24", "2026-12-28", "XLON").skipped
    assert sessions("2026-01-01", "2026-01-05", "xnys").sessions == ["2026-01-02", "2026-01-05"]


def test_ranges_outside_the_default_calendar_window() -> None:
    assert len(sessions("1999-01-01", "1999-12-31").sessions) == 252


def test_single_day_and_inclusive_bounds() -> None:
    assert sessions("2026-11-27", "2026-11-27").sessions == ["2026-11-27"]
    assert sessions("2026-11-26", "2026-11-26").sessions == []


def test_unknown_calendar_names_how_to_find_codes() -> None:
    with pytest.raises(ConfigError, match="get_calendar_names"):
        sessions("2026-01-01", "2026-01-02", "NOPE")
    with pytest.raises(ConfigError):
        sessions("2026-01-01", "2026-01-02", "")


def test_bad_dates_are_rejected() -> None:
    with pytest.raises(InvalidStateError, match="start"):
        sessions("2026-02-30", "2026-03-01")
    with pytest.raises(InvalidStateError, match="before"):
        sessions("2026-03-02", "2026-03-01")


def test_current_session_uses_the_exchange_time_zone() -> None:
    # 03:00 UTC on the 24th is still the 23rd (a Monday) in New York.
    assert current_session(now=datetime(2026, 11, 24, 3, tzinfo=UTC)) == (
        "2026-11-23",
        "2026-11-23 is a session (XNYS)",
    )
    tokyo = timezone(timedelta(hours=9))
    assert current_session("XTKS", now=datetime(2026, 11, 24, 8, tzinfo=tokyo))[0] == "2026-11-24"


def test_current_session_reports_holidays_and_weekends() -> None:
    assert current_session(now=datetime(2026, 11, 26, 15, tzinfo=UTC)) == (
        None,
        "2026-11-26 is a holiday (XNYS)",
    )
    day, reason = current_session("weekdays", now=datetime(2026, 11, 28, 12))
    assert day is None and "weekend" in reason
