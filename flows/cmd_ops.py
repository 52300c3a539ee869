"""``ti serve``, ``ti emit-arena-completed`` and ``ti verify``: running and auditing the stage.

``ti serve`` is the one-machine form of prefect.yaml: the same three deployments, both made
from the one table in :mod:`flows.deployments`, served from this process by Prefect's
``serve`` instead of a work pool and workers. With no ``PREFECT_API_URL`` it serves them on
the local Prefect server ``ti`` commands share (:mod:`flows.server`), kept up while it
serves: its scheduler creates the cron runs, its triggers react to events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from flows.deployments import DAILY_CRON, DAILY_TIMEZONE, runner_deployments
from flows.options import add_arena, add_tickers
from ti_core.errors import ConfigError
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect
from ti_core.verify import INCONSISTENT, INFORMATIONAL, VerifyReport, verify_store

__all__ = ["EXIT_INCONSISTENT", "register"]

EXIT_INCONSISTENT = 2


def _ticker_list(text: str) -> list[str]:
    """``NVDA,aapl`` -> ``["NVDA", "AAPL"]``, each checked as a ticker."""
    from ti_core.contract.keys import parse_tickers
    from ti_core.errors import InvalidStateError

    try:
        return parse_tickers(text)
    except InvalidStateError as exc:  # "no tickers given" too
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _deployed_by_prefect_deploy(deployments: list[Any]) -> list[str]:
    """Names among ``deployments`` that exist on the server as work-pool deployments."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    taken = []
    async with get_client() as client:
        for deployment in deployments:
            try:
                existing = await client.read_deployment_by_name(deployment.full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name or existing.pull_steps:
                taken.append(deployment.full_name)
    return taken


def _serve(args: argparse.Namespace) -> int:
    from flows.cli import prepare_prefect, wait_for_prefect

    local = prepare_prefect(args.debug)  # the shared local server, leased while this serves
    from prefect import serve

    wait_for_prefect(local)
    if local is not None:
        print(
            f"ti serve: on the local Prefect server, UI {local[1].ui_url} "
            f"(to emit events to it: export PREFECT_API_URL={local[1].url} "
            f'PREFECT_API_AUTH_STRING="$(cat {local[0].auth_file})")',
            file=sys.stderr,
        )
    if args.arena is not None:
        # The flow runs are processes this one starts: they read TI_ARENA from the environment
        # they inherit, as a worker's runs read the worker's. A run parameter could not be
        # trusted (see flows.run_settings), so the arena is not a deployment parameter.
        os.environ["TI_ARENA"] = args.arena
    deployments = runner_deployments(args.tickers, cron=args.cron, timezone=args.timezone)
    # Serving over a `prefect deploy` deployment would keep its pull steps and break its runs.
    taken = asyncio.run(_deployed_by_prefect_deploy(deployments))
    if taken:
        raise ConfigError(
            f"{', '.join(taken)} already served by a work pool (prefect deploy); remove them "
            f"first ({'; '.join(f'prefect deployment delete {n}' for n in taken)}) or let "
            "workers run them"
        )
    serve(*deployments, limit=args.limit)
    return 0


def _emit(args: argparse.Namespace) -> int:
    from flows.arena_events import emit_arena_completed

    event_id = emit_arena_completed(
        args.ticker, args.trade_date, args.state_dir, check_state=not args.no_check
    )
    print(f"emitted ti.arena.completed {args.ticker.upper()} {args.trade_date} (event {event_id})")
    return 0


def _print_report(report: VerifyReport, settings: TiSettings) -> None:
    verdict = "consistent" if report.ok else f"INCONSISTENT ({report.problems} problems)"
    print(f"{settings.redis_url_redacted()} {report.stream_name}: {verdict}")
    bound = report.stream_bound or "unbounded"
    print(f"  stream {report.stream_length} entries (bound {bound}), {report.hashes} hashes")
    for kind in INCONSISTENT + INFORMATIONAL:
        count = report.counts.get(kind, 0)
        if not count:
            continue
        label = "problem" if kind in INCONSISTENT else "note"
        print(f"  {label} {kind}: {count}")
        for example in report.examples.get(kind, []):
            print(f"    {example}")


async def _audit(settings: TiSettings, page_size: int) -> VerifyReport:
    async with connect(settings=settings, readonly=True) as client:
        return await verify_store(
            client,
            stream_name=settings.stream_name,
            maxlen=settings.stream_maxlen,
            approximate=settings.stream_trim_approximate,
            page_size=page_size,
        )


def _verify(args: argparse.Namespace) -> int:
    settings = TiSettings()
    report = asyncio.run(_audit(settings, args.page_size))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, settings)
    return 0 if report.ok else EXIT_INCONSISTENT


def register(subparsers: Any) -> None:
    """Add ``serve``, ``emit-arena-completed`` and ``verify`` to the ``ti`` command."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the daily, backfill and arena-triggered deployments from this process",
        description="Serve daily-publish (cron), backfill (on demand) and "
        "publish-on-arena-complete (event ti.arena.completed) without workers.",
    )
    add_tickers(serve, type=_ticker_list)
    add_arena(serve, " of the runs it serves (their TI_ARENA)")
    serve.add_argument(
        "--cron", default=DAILY_CRON, help=f"daily schedule (default {DAILY_CRON!r})"
    )
    serve.add_argument(
        "--timezone",
        default=DAILY_TIMEZONE,
        help=f"time zone of the schedule (default {DAILY_TIMEZONE})",
    )
    serve.add_argument("--limit", type=int, default=None, help="flow runs at once (default no cap)")
    serve.set_defaults(func=_serve)

    emit = subparsers.add_parser(
        "emit-arena-completed",
        help="tell Prefect an arena run finished (triggers publish-on-arena-complete)",
        description="Emit ti.arena.completed for TICKER DATE, whose state is "
        "STATE_DIR/TICKER/DATE.json. Needs PREFECT_API_URL.",
    )
    emit.add_argument("ticker")
    emit.add_argument("trade_date", metavar="DATE")
    emit.add_argument("--state-dir", required=True, help="replay directory holding the state")
    emit.add_argument(
        "--no-check",
        action="store_true",
        help="do not require the state file to exist here (shared storage)",
    )
    emit.set_defaults(func=_emit)

    verify = subparsers.add_parser(
        "verify",
        help="audit Redis: hashes vs stream entries, orphans, stream length vs its bound",
        description="Read-only audit. Exit 0: consistent; 2: inconsistencies found; "
        "1: Redis unreachable or another error.",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--page-size", type=int, default=500, help="keys per SCAN/XRANGE page")
    verify.set_defaults(func=_verify)
