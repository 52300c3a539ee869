"""``ti run``, ``ti daily`` and ``ti get``: the main job, and reading a decision back.

``run`` and ``daily`` check their arguments, the calendar and the demo guard before Prefect
is imported (a refusal, a weekend or a holiday costs no server), then run the flow on the
shared local Prefect server (:mod:`flows.server`) unless ``PREFECT_API_URL`` points at one.
Prefect's console logging is silenced unless ``--debug`` (the run's logs still reach the
Prefect API and UI, at INFO); the command prints one line per decision. ``get`` only reads
the lookup hash and never imports Prefect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from flows.api_watch import watch_api
from flows.cli import prepare_prefect, wait_for_prefect
from flows.options import add_arena_options, add_calendar, add_tickers, setting_flags
from flows.run_settings import with_flags
from ti_core.consume.lookup import Lookup, read_decision
from ti_core.contract.keys import normalize_ticker, normalize_trade_date, split_tickers
from ti_core.errors import TiError, one_line
from ti_core.publish.outcome import DecisionOutcome
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect

__all__ = ["format_outcome", "register", "report_from_redis"]

SERVER_HINT = "set TI_REDIS_URL=redis://HOST:6379/0 to publish to a Redis server"
DEGRADED_MARK = " [DEGRADED: no verdict in the arena state]"


def _where(settings: TiSettings) -> str:
    if settings.uses_server:
        return settings.redis_url_redacted()
    from ti_core.store.embedded import embedded_store_path

    return f"embedded store {embedded_store_path(settings)} ({SERVER_HINT})"


def format_outcome(outcome: DecisionOutcome, settings: TiSettings) -> str:
    """One line for a finished decision: verdict, confidence, and where it was written; an
    entry this attempt did not append says who did (``ti_core.publish.outcome``'s words)."""
    o = outcome
    if o.failed:
        return f"{o.ticker} {o.trade_date}: {o.label} {o.error}"
    demo = " [DEMO arena: not a real analysis]" if o.demo else ""
    demo += DEGRADED_MARK if o.degraded else ""
    again = ""
    if o.status == "unchanged":
        again = " (already on the stream)"
    elif not o.appended:
        again = " (appended by an earlier attempt of this run)"
    return (
        f"{o.ticker} {o.trade_date}: {o.verdict} confidence "
        f"{o.confidence or 0:.2f}{demo} -> stream {o.stream or settings.stream_name} "
        f"entry {o.entry_id}{again}, hash {o.hash_key}, in {_where(settings)}"
    )


def _settings(args: argparse.Namespace) -> TiSettings:
    """The command's settings, built once: ``TI_*`` with the flags on top (``os.environ``
    untouched); the flow gets the same flags as plain parameters (``setting_flags``)."""
    return with_flags(**setting_flags(args))


def _prepare(args: argparse.Namespace, settings: TiSettings) -> None:
    """Fail fast, before Prefect, on a refused demo or an unusable embedded store."""
    from ti_core.arenas.demo import ensure_demo_allowed
    from ti_core.arenas.registry import load_arena
    from ti_core.store.embedded import check_store

    ensure_demo_allowed(load_arena(args.arena, settings=settings), settings)
    check_store(settings)  # a damaged or unwritable embedded store: refuse before Prefect


def _fail(what: str, exc: BaseException, hint: str = "") -> TiError:
    """The one-line error ``cli.main`` prints: what failed, why, and how to retry. A replica
    shortfall is not "not published": the decision is on the primary, its error says so."""
    from ti_core.errors import ReplicaAckError

    if isinstance(exc, ReplicaAckError):
        what = what.removesuffix(" not published")
    return TiError(f"{what}: {one_line(exc, None)}{hint}")


async def _outcome(call: Any) -> tuple[str, Any]:
    """Await a flow call made with ``return_state=True``: (flow run id, result or exception)."""
    state = await call
    value = await state.result(raise_on_failure=False)
    return str(state.state_details.flow_run_id), value


def _retry_hint(flow_run_id: str) -> str:
    return f" [flow run {flow_run_id}; once fixed: ti retry {flow_run_id}]"


def _run(args: argparse.Namespace) -> int:
    ticker, trade_date = normalize_ticker(args.ticker), normalize_trade_date(args.date)
    settings = _settings(args)
    _prepare(args, settings)
    local = prepare_prefect(args.debug, settings)
    from flows.pipeline import publish_decision  # imports Prefect while the server starts

    wait_for_prefect(local)
    what = f"{ticker} {trade_date} not published"
    started = datetime.now(UTC)
    watch = watch_api(
        settings, lambda: report_from_redis(settings, [(ticker, trade_date)], started)
    )
    try:
        with watch:
            run_id, row = asyncio.run(
                watch.guard(
                    _outcome(
                        publish_decision(
                            ticker,
                            trade_date,
                            args.arena,
                            args.force,
                            **setting_flags(args),
                            return_state=True,
                        )
                    )
                )
            )
    except Exception as exc:
        raise _fail(what, exc) from exc
    if isinstance(row, BaseException):
        raise _fail(what, row, _retry_hint(run_id)) from row
    print(format_outcome(DecisionOutcome.from_row(row), settings))
    return 0


def _run_daily(
    args: argparse.Namespace, progress: Any, bar: Any, lines: list[str], settings: TiSettings
) -> tuple[str, Any]:
    from flows.pipeline import ON_DECISION, daily

    known: dict[tuple[str, str], DecisionOutcome] = {}
    started = datetime.now(UTC)

    def on_decision(outcome: DecisionOutcome) -> None:
        known[(outcome.ticker, outcome.trade_date)] = outcome
        lines.append(format_outcome(outcome, settings))
        progress.update(bar, advance=1, description=f"{outcome.ticker} {outcome.status}")

    def lost() -> int:
        progress.stop()  # give the terminal back before the report
        pairs = [
            (normalize_ticker(t), args.date) for t in dict.fromkeys(split_tickers(args.tickers))
        ]
        return report_from_redis(settings, pairs, started, known)

    async def go() -> tuple[str, Any]:
        ON_DECISION.set(on_decision)
        return await _outcome(
            daily(
                split_tickers(args.tickers),
                args.date,
                args.arena,
                args.calendar,
                **setting_flags(args),
                return_state=True,
            )
        )

    watch = watch_api(settings, lost)
    with watch:
        return asyncio.run(watch.guard(go()))


async def _read_back(settings: TiSettings, pairs: list[tuple[str, str]]) -> list[Lookup]:
    async with connect(settings=settings, readonly=True) as client:
        return [await read_decision(client, ticker, day) for ticker, day in pairs]


def _as_read_back(
    ticker: str,
    day: str,
    found: Lookup,
    started: datetime,
    known: DecisionOutcome | None,
) -> str:
    """One decision's line, from its lookup hash (what consumers see)."""
    if found.envelope is not None:
        f = found.fields
        earlier = found.envelope.published_at.replace(tzinfo=UTC) < started
        return (
            f"{ticker} {day}: {f['verdict']} confidence {float(f['confidence']):.2f} in Redis "
            f"(hash {found.key}, correlation {f['correlation_id']}, published "
            f"{f['published_at']}{', before this run' if earlier else ''})"
        )
    if found.problem:
        return f"{ticker} {day}: hash {found.key} is unreadable: {found.problem}"
    if known is not None and known.failed:
        return f"{ticker} {day}: {known.label} {known.error} (not in Redis)"
    return f"{ticker} {day}: NOT published (not in Redis; the run stopped when Prefect was lost)"


def report_from_redis(
    settings: TiSettings,
    pairs: list[tuple[str, str]],
    started: datetime,
    known: dict[tuple[str, str], DecisionOutcome] | None = None,
) -> int:
    """After the Prefect API was lost: each decision as its lookup hash in Redis has it (the
    run's own record in Prefect is incomplete), a count, and the exit code (1)."""
    lookups = asyncio.run(asyncio.wait_for(_read_back(settings, pairs), 60))
    held = 0
    for (ticker, day), found in zip(pairs, lookups, strict=True):
        held += found.envelope is not None
        print(_as_read_back(ticker, day, found, started, (known or {}).get((ticker, day))))
    missing = len(pairs) - held
    print(
        f"{held} of {len(pairs)} decisions in {_where(settings)} (read back after the Prefect "
        f"server was lost)"
        + (f"; {missing} not published: run them again once Prefect is back" if missing else "")
    )
    return 1


def _print_result(result: dict[str, Any]) -> None:
    if result["skipped"]:
        print(f"ti: nothing to publish: {result['skipped']}")
        return
    outcomes = [DecisionOutcome.from_row(r) for r in result["rows"]]
    published = [o for o in outcomes if o.status == "published"]
    earlier = sum(not o.appended for o in published)
    print(
        f"{result['trade_date']}: {len(published)} published"
        + (f" ({earlier} by an earlier attempt)" if earlier else "")
        + f", {sum(o.status == 'unchanged' for o in outcomes)} already on the stream"
    )


def _daily(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = _settings(args)
    if args.calendar is None:
        args.calendar = settings.calendar
    if args.date is not None:
        args.date = normalize_trade_date(args.date)
        _warn_if_not_a_session(args.date, args.calendar)
    else:  # the session of "now" in the exchange's time zone, decided before Prefect starts
        from ti_core.backfill.calendar import current_session

        args.date, reason = current_session(args.calendar)
        if args.date is None:
            print(f"ti: nothing to publish: {reason}")
            return 0
    _prepare(args, settings)
    local = prepare_prefect(args.debug, settings)
    tickers = split_tickers(args.tickers)
    lines: list[str] = []
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    try:
        with progress:
            bar = progress.add_task("starting Prefect", total=len(tickers))
            wait_for_prefect(local)
            run_id, result = _run_daily(args, progress, bar, lines, settings)
    except Exception as exc:
        raise _fail("daily run failed", exc) from exc
    finally:
        for line in lines:
            print(line)
    if isinstance(result, BaseException):
        raise _fail("daily run failed", result, _retry_hint(run_id)) from result
    _print_result(result)
    return 0


def _pairs_of(flow_name: str, parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """The (ticker, date) pairs a publish-decision or daily run publishes, from its
    parameters (none for a daily run that picked today's session itself)."""
    day = parameters.get("trade_date")
    if not day:
        return []
    if flow_name == "publish-decision":
        return [(normalize_ticker(parameters["ticker"]), normalize_trade_date(day))]
    tickers = dict.fromkeys(normalize_ticker(t) for t in split_tickers(parameters["tickers"]))
    return [(t, normalize_trade_date(day)) for t in tickers]


async def _retry_flow_run(
    ident: str, pairs: list[tuple[str, str]] | None = None
) -> tuple[str, Any]:
    """What ``prefect flow-run retry`` does for a run with no deployment, awaiting async flows.
    ``pairs`` gets the run's (ticker, date) pairs once it is read (for a lost API's report)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.flow_engine import run_flow_async
    from prefect.states import Scheduled

    from flows.pipeline import daily, publish_decision

    flows: dict[str, Any] = {"daily": daily, "publish-decision": publish_decision}
    async with get_client() as client:
        try:
            run = await client.read_flow_run(UUID(ident))
        except ValueError:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ident]))
            )
            if len(runs) != 1:
                raise TiError(f"{len(runs)} flow runs are named {ident!r}: use the id") from None
            run = runs[0]
        flow_name = (await client.read_flow(run.flow_id)).name
        if flow_name not in flows:
            raise TiError(f"flow run {ident} is a {flow_name!r} run, not daily/publish-decision")
        if run.state is None or not run.state.is_final():
            raise TiError(
                f"flow run {ident} is {run.state_name}: only a finished run can be retried"
            )
        await client.set_flow_run_state(
            run.id, Scheduled(message="Retried by ti retry"), force=True
        )
        run = await client.read_flow_run(run.id)
    if pairs is not None:
        pairs.extend(_pairs_of(flow_name, run.parameters))
    state: Any = await run_flow_async(
        flows[flow_name], flow_run=run, parameters=run.parameters, return_type="state"
    )
    return str(run.id), await state.result(raise_on_failure=False)


def _retry(args: argparse.Namespace) -> int:
    settings = TiSettings()
    wait_for_prefect(prepare_prefect(args.debug, settings))
    pairs: list[tuple[str, str]] = []
    started = datetime.now(UTC)
    # Like ti run/daily: a lost Prefect API is noticed in seconds and each decision's
    # outcome is read back from Redis (flows.api_watch).
    watch = watch_api(settings, lambda: report_from_redis(settings, pairs, started))
    try:
        with watch:
            run_id, result = asyncio.run(watch.guard(_retry_flow_run(args.flow_run, pairs)))
    except TiError:
        raise  # one line from cli.main
    except Exception as exc:  # e.g. an unknown id: Prefect's 404
        raise _fail(f"cannot retry {args.flow_run}", exc) from exc
    if isinstance(result, BaseException):
        raise _fail(f"flow run {run_id} failed again", result, _retry_hint(run_id)) from result
    if "rows" in result:
        for row in result["rows"]:
            print(format_outcome(DecisionOutcome.from_row(row), settings))
        _print_result(result)
    else:
        print(format_outcome(DecisionOutcome.from_row(result), settings))
    return 0


def _show(found: Lookup, as_json: bool) -> str:
    if as_json:
        return json.dumps(json.loads(found.fields["json"]), indent=2, sort_keys=False)
    envelope, fields = found.envelope, found.fields
    assert envelope is not None
    demo = " [DEMO arena: not a real analysis]" if envelope.meta.get("demo") else ""
    demo += DEGRADED_MARK if envelope.meta.get("degraded") else ""
    return (
        f"{fields['ticker']} {fields['trade_date']}: {fields['verdict']} confidence "
        f"{float(fields['confidence']):.2f} score {float(fields['ensemble_score']):+.3f}{demo} "
        f"(arena {fields['arena_id'] or '-'}, published {fields['published_at']}, "
        f"correlation {fields['correlation_id']})"
    )


async def _lookup(ticker: str, trade_date: str, settings: TiSettings) -> Lookup:
    async with connect(settings=settings, readonly=True) as client:
        return await read_decision(client, ticker, trade_date)


def _get(args: argparse.Namespace) -> int:
    ticker, trade_date = normalize_ticker(args.ticker), normalize_trade_date(args.trade_date)
    settings = TiSettings()
    found = asyncio.run(_lookup(ticker, trade_date, settings))
    where = settings.redis_url_redacted() if settings.uses_server else _where(settings)
    if found.problem:
        print(
            f"ti: {found.key} is unreadable: {found.problem} (in {where}; `ti verify` "
            "lists every such hash)",
            file=sys.stderr,
        )
        return 1
    if found.envelope is None:
        print(
            f"ti: no decision for {ticker} {trade_date} (hash {found.key}) in {where}",
            file=sys.stderr,
        )
        return 1
    print(_show(found, args.json))
    return 0


def register(subparsers: Any) -> None:
    """Add ``run``, ``daily`` and ``get`` to the ``ti`` command."""
    run = subparsers.add_parser(
        "run",
        help="run the arena for one ticker and date and publish the decision",
        description="Run publish_decision: arena -> envelope -> stream entry + lookup hash.",
    )
    run.add_argument("ticker", metavar="TICKER")
    run.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="trade date")
    add_arena_options(run)
    run.add_argument(
        "--force",
        action="store_true",
        help="append even an identical decision; overwrite a newer lookup hash",
    )
    run.set_defaults(func=_run)

    day = subparsers.add_parser(
        "daily",
        help="publish one decision per ticker for a trading session",
        description="Run the daily flow over TICKERS (arena runs limited by "
        "TI_ARENA_CONCURRENCY). Without --date: the session of now in the exchange's time zone "
        "(before the close, today's unfinished session), or nothing on a closed day; a --date "
        "that is not a session is published with a warning.",
    )
    add_tickers(day)
    day.add_argument(
        "--date", default=None, metavar="YYYY-MM-DD", help="trade date (default: today's session)"
    )
    add_calendar(day, "of the sessions (the default date, the warning for another day)")
    add_arena_options(day)
    day.set_defaults(func=_daily)

    retry = subparsers.add_parser(
        "retry",
        help="retry a failed run/daily flow run: publishes only what failed",
        description="Run a finished publish-decision or daily flow run again under the same id: "
        "arena work that succeeded is reused and nothing already on the stream is duplicated. "
        "Use this, not `prefect flow-run retry`, for runs started by ti run/daily: with no "
        "deployment, Prefect's command only schedules them and they turn Late.",
    )
    retry.add_argument("flow_run", metavar="FLOW_RUN", help="flow run id (or unique name)")
    retry.set_defaults(func=_retry)

    get = subparsers.add_parser(
        "get",
        help="print the published decision for TICKER DATE (exit 1 if missing)",
        description="Read the lookup hash of (TICKER, DATE) from TI_REDIS_URL or the embedded "
        "store. Does not start Prefect.",
    )
    get.add_argument("ticker", metavar="TICKER")
    get.add_argument("trade_date", metavar="DATE")
    get.add_argument("--json", action="store_true", help="print the whole envelope as JSON")
    get.set_defaults(func=_get)


def _warn_if_not_a_session(trade_date: str, calendar: str) -> None:
    """A date the exchange did not trade is published if asked for, with a warning."""
    from ti_core.backfill.calendar import sessions

    plan = sessions(trade_date, trade_date, calendar)
    if not plan.sessions:
        print(
            f"ti: warning: {trade_date} is not a session of {plan.calendar} "
            f"({plan.skipped[0][1]}); publishing it as asked",
            file=sys.stderr,
        )
