"""Options that several ``ti`` commands share, each defined once (name, metavar, help)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "add_allow_demo",
    "add_arena_options",
    "add_arena",
    "add_arena_timeout",
    "add_calendar",
    "add_publish_degraded",
    "add_tickers",
    "setting_flags",
]


def add_arena(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument(
        "--arena",
        default=None,
        metavar="SPEC",
        help=f"arena runner{what}: 'replay:DIR', 'package.module:function', "
        "'tradingagents:MODULE:OBJECT', 'hedgefund:MODULE:FUNCTION', "
        "'hedgefund2:MODULE:FUNCTION' or 'demo' "
        "(default: TI_ARENA, else the demo)",
    )


def add_allow_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-demo",
        action="store_true",
        help="let the demo arena publish to TI_REDIS_URL (same as TI_ALLOW_DEMO_PUBLISH=1)",
    )


def add_publish_degraded(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--publish-degraded",
        action="store_true",
        help="publish a state with no verdict as HOLD, confidence 0, marked meta.degraded "
        "(default: it fails; same as TI_PUBLISH_DEGRADED=1)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def add_arena_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arena-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="fail an arena run that has not returned after SECONDS (0: no limit; default "
        "TI_ARENA_TIMEOUT, else 900); not retried",
    )


def add_arena_options(parser: argparse.ArgumentParser) -> None:
    """What every command that runs the arena and publishes takes: ``--arena``,
    ``--arena-timeout``, ``--publish-degraded`` and ``--allow-demo``."""
    add_arena(parser)
    add_arena_timeout(parser)
    add_publish_degraded(parser)
    add_allow_demo(parser)


def add_calendar(parser: argparse.ArgumentParser, use: str) -> None:
    parser.add_argument(
        "--calendar",
        default=None,
        metavar="CODE",
        help=f"exchange calendar {use}: an exchange_calendars code (XNYS, "
        "XLON, ...) or 'weekdays' (default TI_CALENDAR, else XNYS)",
    )


def add_tickers(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    parser.add_argument(
        "--tickers",
        required=True,
        metavar="A,B,C",
        help="comma-separated tickers, e.g. NVDA,AAPL,BRK.B",
        **kwargs,
    )


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--allow-demo``, ``--publish-degraded`` and ``--arena-timeout`` as the flows'
    parameters (and the keywords of ``flows.run_settings.with_flags``): the value when given,
    None to leave them to ``TI_*``."""
    return {
        "allow_demo": True if getattr(args, "allow_demo", False) else None,
        "publish_degraded": True if getattr(args, "publish_degraded", False) else None,
        "arena_timeout": getattr(args, "arena_timeout", None),
    }
