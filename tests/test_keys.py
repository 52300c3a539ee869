"""Key names and the normalisation that keeps tickers and dates inside the key shape."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from ti_core import DECISION_HASH_PREFIX, DEFAULT_STREAM_NAME, InvalidStateError
from ti_core.contract.keys import (
    TICKER_MAX_LEN,
    correlation_key,
    decision_hash_key,
    failure_key,
    latest_key,
    normalize_ticker,
    normalize_trade_date,
    parse_tickers,
    shorten,
    split_tickers,
    validate_stream_name,
)


def test_contract_names() -> None:
    assert DEFAULT_STREAM_NAME == "maf:arena:trading_intelligence:output"
    assert DECISION_HASH_PREFIX == "maf:arena:trading_intelligence:decisions"


def test_decision_hash_key() -> None:
    assert decision_hash_key("NVDA", "2026-05-11") == (
        "maf:arena:trading_intelligence:decisions:NVDA:2026-05-11"
    )
    assert decision_hash_key(" brk.b ", "2026-05-12") == (
        "maf:arena:trading_intelligence:decisions:BRK.B:2026-05-12"
    )


@pytest.mark.parametrize(
    ("raw", "ticker"),
    [
        ("BRK.B", "BRK.B"),
        ("BF-B", "BF-B"),
        ("^GSPC", "^GSPC"),
        ("ES=F", "ES=F"),
        (" nvda ", "NVDA"),
        ("EURUSD=X", "EURUSD=X"),
        ("btc_usd", "BTC_USD"),
        ("A" * TICKER_MAX_LEN, "A" * TICKER_MAX_LEN),
    ],
)
def test_tickers_accepted(raw: str, ticker: str) -> None:
    assert normalize_ticker(raw) == ticker


@pytest.mark.parametrize(
    "raw",
    [
        "NV:DA*",
        "A B",
        "{X}",
        "A/B",
        "\x00",
        "",
        " ",
        "A\tB",
        "NVDA\n:X",
        "A?",
        "[A]",
        "A" * 21,
        "..",
        "-",
        "ÄPFEL",
        "NVDA\u200b",
        None,
        5,
        b"NVDA",
    ],
)
def test_tickers_rejected(raw: Any) -> None:
    with pytest.raises(InvalidStateError) as info:
        normalize_ticker(raw, field="target.ticker")
    assert str(info.value).startswith("target.ticker") and shorten(raw)[:15] in str(info.value)
    with pytest.raises(InvalidStateError):
        decision_hash_key(raw, "2026-05-11")


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2026-05-11", "2026-05-11"),
        (date(2026, 5, 11), "2026-05-11"),
        (datetime(2026, 5, 11, 23, 0), "2026-05-11"),
        ("2026-05-11T09:30:00-04:00", "2026-05-11"),
        ("2028-02-29", "2028-02-29"),
    ],
)
def test_dates_accepted(raw: Any, iso: str) -> None:
    assert normalize_trade_date(raw) == iso


@pytest.mark.parametrize(
    "raw",
    [
        "2026-02-30",
        "2027-02-29",
        "2026-00-10",
        "garbage",
        "",
        None,
        20260511,
        "2026/05/11",
        "2026-05-11:X",
    ],
)
def test_dates_rejected(raw: Any) -> None:
    with pytest.raises(InvalidStateError, match="trade_date"):
        normalize_trade_date(raw)


def test_other_keys() -> None:
    s = DEFAULT_STREAM_NAME
    assert correlation_key(s, "a" * 32) == f"{s}:cid:{'a' * 32}"
    assert latest_key(s, "nvda", date(2026, 5, 11)) == f"{s}:latest:NVDA:2026-05-11"  # type: ignore[arg-type]
    assert failure_key(s) == f"{s}:failures"
    with pytest.raises(InvalidStateError):
        correlation_key(s, "*")
    with pytest.raises(InvalidStateError):
        latest_key(s, "NV:DA*", "2026-05-11")


def test_stream_names() -> None:
    assert validate_stream_name("a:b.c-d_e") == "a:b.c-d_e"
    for bad in ["", "a b", "a*", "x" * 201, None]:
        with pytest.raises(InvalidStateError):
            validate_stream_name(bad)


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_shorten() -> None:
    assert shorten("x" * 100, 20) == repr("x" * 100)[:17] + "..."
    assert len(shorten("x" * 100, 20)) == 20
    assert shorten("ab") == "'ab'"
    assert shorten(BadRepr()) == "<unrepresentable BadRepr>"
    assert "\n" not in shorten("a\nb")


# -- the one parser of a comma-separated ticker list ------------------------------------------


def test_parse_tickers_normalises_dedupes_and_skips_blanks() -> None:
    assert parse_tickers(" nvda,AAPL,,NVDA , brk.b,") == ["NVDA", "AAPL", "BRK.B"]
    assert parse_tickers(["msft", "", "MSFT", "  "]) == ["MSFT"]


@pytest.mark.parametrize("value", ["", ",", " , ,", []])
def test_parse_tickers_refuses_an_empty_list(value: Any) -> None:
    with pytest.raises(InvalidStateError, match="no tickers given"):
        parse_tickers(value)


def test_parse_tickers_refuses_an_invalid_ticker_naming_it() -> None:
    with pytest.raises(InvalidStateError, match="NV:DA"):
        parse_tickers("AAPL,NV:DA")
    with pytest.raises(InvalidStateError, match="non-ASCII"):
        parse_tickers("ſpy")


def test_split_tickers_keeps_items_unchecked_for_per_item_reports() -> None:
    assert split_tickers("a, NV:DA,,b") == ["a", " NV:DA", "b"]
    assert split_tickers(["x", " ", 7]) == ["x", 7]
