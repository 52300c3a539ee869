"""``ti run``, ``ti daily`` and ``ti get``: the main job, and reading a decision back.

``run`` and ``daily`` check their arguments and the demo guard before Prefect is imported
(a refusal costs no server start), then run the flow in Prefect's ephemeral mode unless
``PREFECT_API_URL`` points at a server. Prefect's console logging is silenced unless
``--debug`` (the run's logs still reach the Prefect API and UI); the command prints one line
per decision. ``get`` only reads the lookup hash and never imports Prefect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from ti_core.connection import connect
from ti_core.errors import TiError
from ti_core.keys import decision_hash_key, normalize_ticker, normalize_trade_date
from ti_core.settings import TiSettings

__all__ = ["format_row", "register"]

SERVER_HINT = "set TI_REDIS_URL=redis://HOST:6379/0 to publish to a Redis server"


def _where(settings: TiSettings) -> str:
    if settings.uses_server:
        return settings.redis_url_redacted()
    from ti_core.connection import embedded_store_path

    return f"embedded store {embedded_store_path(settings)} ({SERVER_HINT})"


def format_row(row: dict[str, Any], settings: TiSettings) -> str:
    """One line for a finished decision: verdict, confidence, and where it was written."""
    if row["status"] == "failed":
        return f"{row['ticker']} {row['trade_date']}: FAILED {row['error']}"
    demo = " [DEMO arena: not a real analysis]" if row.get("demo") else ""
    again = " (already on the stream)" if row["status"] == "unchanged" else ""
    return (
        f"{row['ticker']} {row['trade_date']}: {row['verdict']} confidence "
        f"{row['confidence']:.2f}{demo} -> stream {row.get('stream', settings.stream_name)} "
        f"entry {row['entry_id']}{again}, hash {row['hash_key']}, in {_where(settings)}"
    )


def _prepare(args: argparse.Namespace) -> TiSettings:
    """Apply flags to the environment the flow reads, and fail fast on a refused demo."""
    if getattr(args, "allow_demo", False):
        os.environ["TI_ALLOW_DEMO_PUBLISH"] = "1"
    from ti_core.arena import ensure_demo_allowed, load_arena

    settings = TiSettings()
    ensure_demo_allowed(load_arena(args.arena, settings=settings), settings)
    if not args.debug:
        # Failures are reported by this command in one line; tracebacks stay in the run's logs.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return settings


def _quiet_prefect_console(debug: bool) -> None:
    """Without --debug, Prefect's records reach the API (the UI) but not this terminal."""
    if not debug:
        logging.getLogger("prefect").propagate = False


def _fail(args: argparse.Namespace, what: str, exc: BaseException, hint: str = "") -> int:
    if args.debug:
        raise exc
    text = str(exc) if isinstance(exc, TiError) else f"{type(exc).__name__}: {exc}"
    print(f"ti: {what}: {' '.join(text.split())}{hint}", file=sys.stderr)
    return 1


async def _outcome(call: Any) -> tuple[str, Any]:
    """Await a flow call made with ``return_state=True``: (flow run id, result or exception)."""
    state = await call
    value = await state.result(raise_on_failure=False)
    return str(state.state_details.flow_run_id), value


def _retry_hint(flow_run_id: str) -> str:
    return f" [flow run {flow_run_id}; once fixed: ti retry {flow_run_id}]"


def _run(args: argparse.Namespace) -> int:
    ticker, trade_date = normalize_ticker(args.ticker), normalize_trade_date(args.date)
    settings = _prepare(args)
    from flows.pipeline import publish_decision

    _quiet_prefect_console(args.debug)
    try:
        run_id, row = asyncio.run(_outcome(publish_decision(
            ticker, trade_date, args.arena, args.force, return_state=True)))
    except Exception as exc:
        return _fail(args, f"{ticker} {trade_date} not published", exc)
    if isinstance(row, BaseException):
        return _fail(args, f"{ticker} {trade_date} not published", row, _retry_hint(run_id))
    print(format_row(row, settings))
    return 0


def _run_daily(args: argparse.Namespace, progress: Any, bar: Any, lines: list[str],
               settings: TiSettings) -> tuple[str, Any]:
    from flows.pipeline import ON_DECISION, daily

    _quiet_prefect_console(args.debug)

    def on_decision(row: dict[str, Any]) -> None:
        lines.append(format_row(row, settings))
        progress.update(bar, advance=1, description=f"{row['ticker']} {row['status']}")

    async def go() -> tuple[str, Any]:
        ON_DECISION.set(on_decision)
        return await _outcome(daily(args.tickers.split(","), args.date, args.arena,
                                    args.calendar, return_state=True))

    return asyncio.run(go())


def _print_result(result: dict[str, Any]) -> None:
    if result["skipped"]:
        print(f"ti: nothing to publish: {result['skipped']}")
        return
    statuses = [r["status"] for r in result["rows"]]
    print(f"{result['trade_date']}: {statuses.count('published')} published, "
          f"{statuses.count('unchanged')} already on the stream")


def _daily(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.date is not None:
        args.date = normalize_trade_date(args.date)
    settings = _prepare(args)
    tickers = [t for t in args.tickers.split(",") if t.strip()]
    lines: list[str] = []
    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)
    try:
        with progress:
            bar = progress.add_task("starting Prefect", total=len(tickers))
            run_id, result = _run_daily(args, progress, bar, lines, settings)
    except Exception as exc:
        return _fail(args, "daily run failed", exc)
    finally:
        for line in lines:
            print(line)
    if isinstance(result, BaseException):
        return _fail(args, "daily run failed", result, _retry_hint(run_id))
    _print_result(result)
    return 0


async def _retry_flow_run(ident: str) -> tuple[str, Any]:
    """What ``prefect flow-run retry`` does for a run with no deployment, awaiting async flows."""
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
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ident])))
            if len(runs) != 1:
                raise TiError(f"{len(runs)} flow runs are named {ident!r}: use the id") from None
            run = runs[0]
        flow_name = (await client.read_flow(run.flow_id)).name
        if flow_name not in flows:
            raise TiError(f"flow run {ident} is a {flow_name!r} run, not daily/publish-decision")
        if run.state is None or not run.state.is_final():
            raise TiError(f"flow run {ident} is {run.state_name}: only a finished run can be "
                          "retried")
        await client.set_flow_run_state(run.id, Scheduled(message="Retried by ti retry"),
                                        force=True)
        run = await client.read_flow_run(run.id)
    state: Any = await run_flow_async(flows[flow_name], flow_run=run,
                                      parameters=run.parameters, return_type="state")
    return str(run.id), await state.result(raise_on_failure=False)


def _retry(args: argparse.Namespace) -> int:
    settings = TiSettings()
    if not args.debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    _quiet_prefect_console(args.debug)
    try:
        run_id, result = asyncio.run(_retry_flow_run(args.flow_run))
    except TiError:
        raise  # one line from cli.main
    except Exception as exc:  # e.g. an unknown id: Prefect's 404
        return _fail(args, f"cannot retry {args.flow_run}", exc)
    if isinstance(result, BaseException):
        return _fail(args, f"flow run {run_id} failed again", result)
    if "rows" in result:
        for row in result["rows"]:
            print(format_row(row, settings))
        _print_result(result)
    else:
        print(format_row(result, settings))
    return 0


def _show(fields: dict[str, str], as_json: bool) -> str:
    if as_json:
        return json.dumps(json.loads(fields["json"]), indent=2, sort_keys=False)
    envelope = json.loads(fields["json"])
    meta = envelope.get("meta", {})
    demo = " [DEMO arena: not a real analysis]" if meta.get("demo") else ""
    return (
        f"{fields['ticker']} {fields['trade_date']}: {fields['verdict']} confidence "
        f"{float(fields['confidence']):.2f} score {float(fields['ensemble_score']):+.3f}{demo} "
        f"(arena {fields['arena_id'] or '-'}, published {fields['published_at']}, "
        f"correlation {fields['correlation_id']})"
    )


async def _read_hash(key: str, settings: TiSettings) -> dict[str, str]:
    async with connect(settings=settings) as client:
        raw = await client.hgetall(key)
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (raw or {}).items()
    }


def _get(args: argparse.Namespace) -> int:
    key = decision_hash_key(args.ticker, args.trade_date)
    settings = TiSettings()
    fields = asyncio.run(_read_hash(key, settings))
    if "json" not in fields:
        where = settings.redis_url_redacted() if settings.uses_server else _where(settings)
        print(f"ti: no decision for {normalize_ticker(args.ticker)} "
              f"{normalize_trade_date(args.trade_date)} (hash {key}) in {where}",
              file=sys.stderr)
        return 1
    print(_show(fields, args.json))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arena", default=None, metavar="SPEC",
                        help="'replay:DIR', 'package.module:function' or 'demo' "
                        "(default: TI_ARENA, else the demo)")
    parser.add_argument("--allow-demo", action="store_true",
                        help="let the demo arena publish to TI_REDIS_URL "
                        "(same as TI_ALLOW_DEMO_PUBLISH=1)")


def register(subparsers: Any) -> None:
    """Add ``run``, ``daily`` and ``get`` to the ``ti`` command."""
    run = subparsers.add_parser(
        "run", help="run the arena for one ticker and date and publish the decision",
        description="Run publish_decision: arena -> envelope -> stream entry + lookup hash.")
    run.add_argument("ticker", metavar="TICKER")
    run.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="trade date")
    _common(run)
    run.add_argument("--force", action="store_true",
                     help="append even an identical decision; overwrite a newer lookup hash")
    run.set_defaults(func=_run)

    day = subparsers.add_parser(
        "daily", help="publish one decision per ticker for a trading session",
        description="Run the daily flow over TICKERS (arena runs limited by "
        "TI_ARENA_CONCURRENCY). Without --date: today's session, or nothing on a closed day.")
    day.add_argument("--tickers", required=True, metavar="A,B,C", help="comma-separated tickers")
    day.add_argument("--date", default=None, metavar="YYYY-MM-DD",
                     help="trade date (default: today's session)")
    day.add_argument("--calendar", default=None, metavar="CODE",
                     help="exchange calendar for the default date (default TI_CALENDAR, XNYS)")
    _common(day)
    day.set_defaults(func=_daily_entry)

    retry = subparsers.add_parser(
        "retry", help="retry a failed run/daily flow run: publishes only what failed",
        description="Run a finished publish-decision or daily flow run again under the same id: "
        "arena work that succeeded is reused and nothing already on the stream is duplicated. "
        "(Prefect 3.8's `prefect flow-run retry` does not run async flows.)")
    retry.add_argument("flow_run", metavar="FLOW_RUN", help="flow run id (or unique name)")
    retry.set_defaults(func=_retry)

    get = subparsers.add_parser(
        "get", help="print the published decision for TICKER DATE (exit 1 if missing)",
        description="Read the lookup hash of (TICKER, DATE) from TI_REDIS_URL or the embedded "
        "store. Does not start Prefect.")
    get.add_argument("ticker", metavar="TICKER")
    get.add_argument("trade_date", metavar="DATE")
    get.add_argument("--json", action="store_true", help="print the whole envelope as JSON")
    get.set_defaults(func=_get)


def _daily_entry(args: argparse.Namespace) -> int:
    if args.calendar is None:
        args.calendar = TiSettings().calendar
    return _daily(args)
