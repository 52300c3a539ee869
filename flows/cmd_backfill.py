"""``ti backfill`` (a date range through the backfill flow) and ``ti status`` (the coverage grid).

``backfill`` checks its arguments, the calendar and the demo guard before Prefect is imported,
draws a progress bar while the flow runs, and exits 1 naming every failed (ticker, date).
``--dry-run`` reads the plan from Redis and prints it without starting or contacting Prefect.
``status`` reads Redis only (no Prefect): a ticker x session grid of published / failed /
missing, as a table or ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from flows.options import add_arena_options, add_calendar, add_tickers, setting_flags
from ti_core.errors import TiError, one_line

if TYPE_CHECKING:
    from ti_core.settings import TiSettings

__all__ = ["register", "report_range_from_redis"]

MARKS = {"published": "#", "orphan_entry": "o", "failed": "x", "missing": "."}
STYLES = {
    "published": "green",
    "orphan_entry": "bold yellow",
    "failed": "bold red",
    "missing": "dim",
}


def _tickers(text: str) -> list[str]:
    from ti_core.contract.keys import parse_tickers, split_tickers

    if not split_tickers(text):
        raise TiError("--tickers needs at least one ticker, e.g. --tickers NVDA,AAPL")
    return parse_tickers(text)


def _add_range(parser: argparse.ArgumentParser) -> None:
    add_tickers(parser)
    parser.add_argument("--start", required=True, help="first date, YYYY-MM-DD (inclusive)")
    parser.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    add_calendar(parser, "of the range")


def register(subparsers: Any) -> None:
    """Add ``backfill`` and ``status``."""
    p = subparsers.add_parser(
        "backfill",
        help="publish every session of a date range (resumable)",
        description="Publish one decision per ticker per trading session from --start to --end "
        "(inclusive), in batches. Re-running is safe: published items are skipped.",
    )
    _add_range(p)
    add_arena_options(p)
    p.add_argument(
        "--only",
        choices=("missing", "failed", "all"),
        default="missing",
        help="missing: not yet published (default); failed: recorded failures; "
        "all: everything (identical decisions still add nothing)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, publish nothing")
    p.add_argument(
        "--max-items",
        type=int,
        default=None,
        help="largest dry run, in items (sessions x tickers; default 1,000,000; 0: no limit)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="arena runs in flight at once (default TI_ARENA_CONCURRENCY)",
    )
    p.set_defaults(func=_backfill)
    s = subparsers.add_parser(
        "status",
        help="ticker x session grid: published / failed / missing",
        description="Coverage of a date range, read from Redis: one row per ticker, one mark "
        "per session (# published, x failed, . missing).",
    )
    _add_range(s)
    s.add_argument("--json", action="store_true", help="print the grid as JSON")
    s.set_defaults(func=_status)


def _prepare(args: argparse.Namespace, settings: TiSettings) -> tuple[list[str], str]:
    """Everything that can be refused before Prefect starts."""
    from ti_core.arenas.demo import ensure_demo_allowed
    from ti_core.arenas.registry import load_arena
    from ti_core.backfill.calendar import sessions

    if args.concurrency is not None and args.concurrency < 1:
        raise TiError("--concurrency must be at least 1")
    if args.max_items is not None and (args.max_items < 0 or not args.dry_run):
        raise TiError("--max-items takes a number >= 0, with --dry-run")
    names = _tickers(args.tickers)
    calendar = args.calendar or settings.calendar
    sessions(args.start, args.end, calendar)
    runner = load_arena(args.arena, settings=settings)
    if not args.dry_run:
        ensure_demo_allowed(runner, settings)
    if not args.debug:
        # Per-state coercion warnings would flood the terminal over thousands of decisions
        # (cli.main already keeps Prefect's own records off the terminal).
        logging.getLogger("ti_core.builder").setLevel(logging.ERROR)
    return names, calendar


def _backfill(args: argparse.Namespace) -> int:
    from flows.cli import prepare_prefect, wait_for_prefect
    from flows.run_settings import with_flags
    from ti_core.store.embedded import check_store

    settings = with_flags(**setting_flags(args))  # built once, os.environ untouched
    names, calendar = _prepare(args, settings)
    # A damaged (or, unless a dry run, unwritable) embedded store: refused before Prefect.
    check_store(settings, write=not args.dry_run)
    if args.dry_run:
        return _dry_run(args, names, calendar, settings)
    local = prepare_prefect(args.debug, settings)
    from flows.backfill import backfill  # imports Prefect while the local server starts

    wait_for_prefect(local)
    return _run_flow(args, backfill, names, calendar, settings)


def _dry_run(
    args: argparse.Namespace, names: list[str], calendar: str, settings: TiSettings
) -> int:
    """The plan, straight from Redis: nothing to run, so no Prefect. A plan over
    ``--max-items`` is refused; a large one (that takes seconds) prints its size (stderr)
    before anything is read, then an estimate of the time left."""
    from flows.backfill_plan import (
        DRY_RUN_MAX_ITEMS,
        ESTIMATE_AFTER,
        check_plan_size,
        dry_run_plan,
    )
    from ti_core.backfill.calendar import sessions

    plan = sessions(args.start, args.end, calendar)
    limit = DRY_RUN_MAX_ITEMS if args.max_items is None else args.max_items
    total = check_plan_size(names, plan, limit)
    if total > ESTIMATE_AFTER:
        print(
            f"dry run: reading {total:,} items ({len(plan.sessions):,} sessions x "
            f"{len(names):,} tickers) from Redis",
            file=sys.stderr,
        )

    def estimate(seconds: float) -> None:
        print(f"dry run: about {seconds:.0f} s more at the rate so far", file=sys.stderr)

    found = asyncio.run(
        dry_run_plan(
            names, plan, args.only, settings, record=False, max_items=limit, on_estimate=estimate
        )
    )
    return _print_plan(found, args.only)


def _run_flow(
    args: argparse.Namespace,
    backfill: Any,
    names: list[str],
    calendar: str,
    settings: TiSettings,
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from flows.api_watch import watch_api
    from flows.backfill import ON_PROGRESS, BackfillSummary
    from flows.backfill_plan import DryRunPlan
    from ti_core.backfill.calendar import sessions
    from ti_core.backfill.runner import BatchReport
    from ti_core.publish.outcome import DecisionOutcome

    err = Console(stderr=True)
    total = len(names) * len(sessions(args.start, args.end, calendar).sessions)
    failed: list[DecisionOutcome] = []
    bar = Progress(
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        console=err,
        transient=True,
        disable=args.dry_run or not err.is_terminal,
    )

    with bar:
        job = bar.add_task("items", total=total, note="")

        def on_batch(report: BatchReport) -> None:
            failed.extend(o for o in report.outcomes if o.failed)
            bar.update(job, advance=report.planned, note=f"{len(failed)} failed")

        def lost() -> int:
            bar.stop()  # give the terminal back before the report
            return report_range_from_redis(settings, names, args.start, args.end, calendar)

        token = ON_PROGRESS.set(on_batch)
        watch = watch_api(settings, lost)
        try:
            with watch:
                result = asyncio.run(
                    watch.guard(
                        backfill(
                            names,
                            args.start,
                            args.end,
                            args.arena,
                            calendar,
                            args.only,
                            args.dry_run,
                            args.concurrency,
                            **setting_flags(args),
                        )
                    )
                )
        except Exception as exc:  # one line, not a traceback; the run's logs have the rest
            if args.debug:
                raise
            result = exc
        finally:
            ON_PROGRESS.reset(token)
    if isinstance(result, DryRunPlan):
        return _print_plan(result, args.only)
    if isinstance(result, BackfillSummary):
        print(_summary_line(result))
        if result.skipped_unpublished:
            raise TiError(
                f"{result.skipped_unpublished} items of the range are not published and have "
                "no failure record (their failure could not be recorded, e.g. Redis out of "
                "memory), so --only failed did not run them; re-run with --only missing"
            )
        return 0
    for o in failed:
        print(f"{o.label} {o.ticker} {o.trade_date}: {o.error}", file=sys.stderr)
    # --only missing, not --only failed: a failure Redis refused to record (out of memory,
    # connection lost) leaves no record for --only failed to find.
    hint = "; re-run with --only missing to retry every item not published" if failed else ""
    raise TiError(f"{one_line(result, None)}{hint}") from result


_LISTED = 20  # items of each kind named after a lost Prefect API; `ti status` shows them all


def report_range_from_redis(
    settings: TiSettings, names: list[str], start: str, end: str, calendar: str
) -> int:
    """After the Prefect API was lost: the range as Redis holds it (published, failed with its
    recorded reason, missing), the first few items of each kind named, and the exit code (1)."""
    from ti_core.backfill.calendar import sessions
    from ti_core.backfill.runner import batched, plan_items
    from ti_core.backfill.status import classify
    from ti_core.transport.connection import connect

    plan = sessions(start, end, calendar)
    named: dict[str, list[str]] = {"failed": [], "missing": [], "orphan_entry": []}
    counts = dict.fromkeys(("published", *named), 0)

    async def read() -> None:
        async with connect(settings=settings, readonly=True) as client:
            for chunk in batched(plan_items(names, plan.sessions), 2000):
                found = await classify(client, chunk, stream_name=settings.stream_name)
                for item, f in zip(chunk, found, strict=True):
                    counts[f.state] += 1
                    if f.state in named and len(named[f.state]) < _LISTED:
                        why = f": {f.failure}" if f.failure else ""
                        named[f.state].append(f"{item.ticker} {item.trade_date}{why}")

    asyncio.run(asyncio.wait_for(read(), 120))
    for state, items in named.items():
        for text in items:
            print(f"{state.upper()} {text}", file=sys.stderr)
    total = sum(counts.values())
    print(
        f"backfill stopped (the Prefect server was lost); read back from Redis: "
        f"{counts['published']} of {total} items published, {counts['failed']} failed, "
        f"{counts['missing']} missing, {counts['orphan_entry']} entries without their hash; "
        f"once Prefect is back, `ti backfill` with the same range resumes (`ti status` "
        f"shows the grid)"
    )
    return 1


def _summary_line(summary: Any) -> str:
    """What Redis holds for the range: skipped items are named as published or not."""
    not_run = (
        f", {summary.skipped_unpublished} not published and not run (no failure record)"
        if summary.skipped_unpublished
        else ""
    )
    return (
        f"backfill done: {summary.planned} items over {summary.sessions} sessions "
        f"({len(summary.skipped_days)} days skipped): {summary.published} published, "
        f"{summary.unchanged} unchanged, "
        f"{summary.skipped - summary.skipped_unpublished} already published{not_run}, "
        f"{len(summary.failed)} failed"
    )


def _print_plan(plan: Any, only: str) -> int:
    print(
        f"dry run (only={only}, calendar {plan.calendar}): {len(plan.sessions)} sessions, "
        f"{plan.published} already published, {len(plan.failed)} recorded failures, "
        f"{len(plan.todo)} to do; nothing published"
    )
    for day, reason in plan.skipped_days:
        if reason != "weekend":
            print(f"skip {day}: {reason}")
    from flows.backfill_plan import todo_by_ticker

    for ticker, ranges in todo_by_ticker(plan).items():
        print(f"todo {ticker}: {ranges}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ti_core.backfill.calendar import sessions
    from ti_core.backfill.status import status_grid
    from ti_core.settings import TiSettings
    from ti_core.transport.connection import connect

    settings = TiSettings()
    names = _tickers(args.tickers)
    plan = sessions(args.start, args.end, args.calendar or settings.calendar)

    async def read() -> Any:
        async with connect(settings=settings, readonly=True) as client:
            return await status_grid(client, names, plan, stream_name=settings.stream_name)

    grid = asyncio.run(read())
    if args.json:
        print(json.dumps(grid.as_dict(), indent=2))
        return 0
    _print_grid(grid)
    return 0


def _print_grid(grid: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    months = sorted({d[:7] for d in grid.sessions})
    table = Table(
        title=f"coverage ({grid.calendar}): # published  o orphan_entry  x failed  . missing"
    )
    table.add_column("ticker", style="bold")
    for month in months:
        table.add_column(month, no_wrap=True)
    for column in STYLES:
        table.add_column(column, justify="right")
    for ticker, row in grid.cells.items():
        cells: list[Any] = []
        for month in months:
            text = Text()
            for day, state in zip(grid.sessions, row, strict=True):
                if day.startswith(month):
                    text.append(MARKS[state], style=STYLES[state])
            cells.append(text)
        counts = [str(row.count(state)) for state in STYLES]
        table.add_row(ticker, *cells, *counts)
    console = Console()
    console.print(table)
    if grid.counts()["orphan_entry"]:
        console.print(
            "o orphan_entry: an entry on the stream without its lookup hash; publish "
            "again to heal it (ti backfill --only missing)",
            markup=False,
            highlight=False,
        )
    for item, reason in grid.failures.items():
        console.print(f"failed {item}: {reason}", markup=False, highlight=False)
    holidays = [f"{d} ({r})" for d, r in grid.skipped if r != "weekend"]
    if holidays:
        console.print("not sessions: " + ", ".join(holidays), markup=False, highlight=False)
