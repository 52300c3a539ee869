"""``ti tail`` and ``ti lag``: watch decisions arrive, and see how far behind each group is.

``ti tail`` prints one line (or one JSON object) per decision until Ctrl-C, which exits 0
without a traceback, as does a closed output (``ti tail | head -1``: the decision it could not
print stays pending for the group). With ``--group`` it reads as a consumer of that group and
acknowledges each decision once printed. A Redis restart or dropped connection is ridden out
(one line on stderr when lost, one when back; ``--give-up-after`` seconds, then exit 1). With
no ``TI_REDIS_URL`` it polls the embedded store, opening it only briefly each second so
publishers are not locked out. No Prefect here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ti_core.consume.group_lag import group_lag
from ti_core.consume.groups import ConsumerBrokenError, GroupReader
from ti_core.consume.reader import read_batch, stream_last_id, tail
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.defaults import CLAIM_IDLE_MS, RECONNECT_GIVE_UP_SECONDS
from ti_core.errors import ConfigError
from ti_core.settings import TiSettings
from ti_core.transport.connection import connect
from ti_core.transport.retry import redis_policy

__all__ = ["format_line", "lag_lines", "register"]

_POLL_SECONDS = 1.0


def format_line(entry_id: str, envelope: TradingIntelligenceEnvelope, as_json: bool) -> str:
    """One output line: a readable summary, or ``{"entry_id": ..., "envelope": {...}}``."""
    if as_json:
        return f'{{"entry_id": {json.dumps(entry_id)}, "envelope": {envelope.model_dump_json()}}}'
    d = envelope.decision
    s = d.synthesis
    return (
        f"{entry_id}  {d.target.ticker:<6} {d.target.trade_date}  {s.verdict:<4} "
        f"confidence {s.confidence:.2f}  score {s.ensemble_score:+.2f}  "
        f"published {envelope.published_at.isoformat(timespec='seconds')}  "
        f"cid {envelope.correlation_id}"
    )


def register(subparsers: Any) -> None:
    """Add ``tail`` and ``lag`` to the ``ti`` command."""
    p = subparsers.add_parser(
        "tail",
        help="print decisions as they are published, until Ctrl-C",
        description="Print one line per decision published to the stream (or JSON lines), "
        "until interrupted. Entries that cannot be decoded are skipped with a warning.",
    )
    p.add_argument(
        "--from-start",
        action="store_true",
        help="replay the stream's history first (a new --group starts at its start)",
    )
    p.add_argument("--group", help="read as a consumer of this group, acknowledging each entry")
    p.add_argument("--consumer", help="consumer name within --group (default: HOST-PID)")
    p.add_argument(
        "--json", action="store_true", help='JSON lines: {"entry_id": ..., "envelope": {...}}'
    )
    p.add_argument("--stream", help="stream name (default: TI_STREAM_NAME or the contract's)")
    p.add_argument(
        "--claim-idle-ms",
        type=int,
        default=CLAIM_IDLE_MS,
        help="with --group: reclaim entries another consumer left pending this long",
    )
    p.add_argument(
        "--give-up-after",
        type=float,
        metavar="SECONDS",
        help="keep reconnecting to a lost Redis this long, then exit 1 "
        f"(default: TI_RECONNECT_GIVE_UP_SECONDS, {RECONNECT_GIVE_UP_SECONDS:g})",
    )
    p.set_defaults(func=_tail_command)
    q = subparsers.add_parser(
        "lag",
        help="show each consumer group's lag and pending entries (XINFO GROUPS)",
        description="Stream length and, per consumer group, consumers, pending (delivered, not "
        "acknowledged), entries read and lag (not yet delivered). A group whose lag nears "
        "TI_STREAM_MAXLEN loses entries to trimming.",
    )
    q.add_argument("--stream", help="stream name (default: TI_STREAM_NAME or the contract's)")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.set_defaults(func=_lag_command)


class OutputClosedError(ConsumerBrokenError):
    """Our stdout's reader left (``ti tail | head``): this consumer is done, the entry is fine.

    Not an ``OSError``, so no layer on the way up mistakes it for a lost Redis connection.
    """


def _emit(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError as exc:
        raise OutputClosedError("the output of ti tail was closed") from exc


def _until_signal(work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work`` until it returns or SIGINT/SIGTERM arrives; a signal means exit 0."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work())

        def stop() -> None:
            # Repeat the cancel until it lands: on Python 3.11, asyncio.wait_for (which
            # redis-py uses to send each command) drops a cancellation that arrives just as
            # the wrapped send completes (CPython gh-86296), leaving the tail running.
            if not task.done():
                task.cancel()
                loop.call_later(0.2, stop)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            return await task
        except asyncio.CancelledError:
            return 0
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 0
    except (BrokenPipeError, OutputClosedError):  # `ti tail | head`: the reader left; so do we
        # Python flushes stdout at exit: point it at /dev/null first, or that flush raises
        # again (the recipe in the docs of the signal module, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _tail_command(args: argparse.Namespace) -> int:
    settings = TiSettings()
    stream = args.stream or settings.stream_name
    if args.consumer and not args.group:
        raise ConfigError("--consumer needs --group")
    if args.group and not settings.uses_server:
        raise ConfigError(
            "consumer groups need a Redis server: set TI_REDIS_URL or TI_REDIS_SENTINELS"
        )
    if args.give_up_after is not None and args.give_up_after <= 0:
        raise ConfigError("--give-up-after must be a positive number of seconds")

    def show(entry_id: str, envelope: TradingIntelligenceEnvelope) -> None:
        _emit(format_line(entry_id, envelope, args.json))

    start = "0" if args.from_start else "$"
    give_up = args.give_up_after or settings.reconnect_give_up_seconds
    if args.group:
        consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        return _until_signal(
            lambda: _tail_group(
                settings, stream, args.group, consumer, start, args.claim_idle_ms, give_up, show
            )
        )
    if not settings.uses_server:
        return _until_signal(lambda: _poll_embedded(settings, stream, start, show))
    return _until_signal(lambda: _tail_server(settings, stream, start, give_up, show))


async def _tail_server(
    settings: TiSettings, stream: str, start: str, give_up: float, show: Any
) -> int:
    async with connect(settings=settings) as client:
        async for entry_id, envelope in tail(
            client,
            stream_name=stream,
            start=start,
            give_up_after=give_up,
            retry=redis_policy(give_up, settings),
        ):
            show(entry_id, envelope)
    return 0


async def _tail_group(
    settings: TiSettings,
    stream: str,
    group: str,
    consumer: str,
    start: str,
    claim_idle_ms: int,
    give_up: float,
    show: Any,
) -> int:
    """A closed output (BrokenPipeError from ``show``) stops the reader with the entry pending."""
    async with connect(settings=settings) as client:
        reader = GroupReader(
            client,
            group,
            consumer,
            show,
            stream_name=stream,
            start=start,
            claim_idle_ms=claim_idle_ms,
            give_up_after=give_up,
            retry=redis_policy(give_up, settings),
        )
        await reader.run()
    return 0


async def _poll_embedded(settings: TiSettings, stream: str, start: str, show: Any) -> int:
    cursor = start
    while True:
        async with connect(settings=settings, readonly=True) as store:
            if cursor == "$":
                cursor = await stream_last_id(store, stream)
            while True:
                after, entries = await read_batch(
                    store, stream_name=stream, after=cursor, count=500
                )
                for entry_id, envelope in entries:
                    show(entry_id, envelope)
                if after == cursor:
                    break
                cursor = after
        await asyncio.sleep(_POLL_SECONDS)


def _lag_command(args: argparse.Namespace) -> int:
    settings = TiSettings()
    report = asyncio.run(_lag(settings, args.stream or settings.stream_name))
    report["stream_maxlen"] = settings.stream_maxlen
    if args.json:
        _emit(json.dumps(report))
        return 0
    for line in lag_lines(report):
        _emit(line)
    return 0


async def _lag(settings: TiSettings, stream: str) -> dict[str, Any]:
    async with connect(settings=settings, readonly=True) as client:
        return await group_lag(client, stream)


def lag_lines(report: dict[str, Any]) -> list[str]:
    """The human-readable ``ti lag`` report, warnings included."""
    maxlen = int(report.get("stream_maxlen") or 0)
    trim = f"MAXLEN ~ {maxlen}" if maxlen else "never trimmed"
    if not report["exists"]:
        return [f"stream {report['stream']} does not exist yet (nothing published)"]
    lines = [
        f"stream {report['stream']}: {report['length']} entries ({trim}), "
        f"{report['dead_letters']} dead letters"
    ]
    if not report["groups"]:
        return [*lines, "no consumer groups"]
    lines.append(
        f"{'GROUP':<24} {'CONSUMERS':>9} {'PENDING':>8} {'LAG':>8} {'READ':>10} "
        f"{'LOST':>6}  LAST-DELIVERED"
    )
    warnings = []
    for g in report["groups"]:
        cells = ["?" if g[k] is None else str(g[k]) for k in ("lag", "entries_read", "lost")]
        lines.append(
            f"{g['name']:<24} {g['consumers']:>9} {g['pending']:>8} {cells[0]:>8} "
            f"{cells[1]:>10} {cells[2]:>6}  {g['last_delivered_id']}"
        )
        warnings.extend(_lag_warnings(g, maxlen, report.get("removed")))
    return lines + warnings


def _lag_warnings(g: dict[str, Any], maxlen: int, removed: int | None) -> list[str]:
    out = []
    if g["lost"]:
        since = f" (first on {g['lost_since']})" if g.get("lost_since") else ""
        out.append(
            f"warning: {g['name']} lost {g['lost']} entries{since}: trimmed before it "
            "read them (raise TI_STREAM_MAXLEN; rebuild from the lookup hashes)"
        )
    elif g["lost"] is None and removed:
        out.append(
            f"warning: {g['name']} may have lost up to {removed} trimmed entries "
            "(its position is before the stream's first entry)"
        )
    if g["lag"] is not None and maxlen and g["lag"] >= 0.8 * maxlen:
        out.append(
            f"warning: {g['name']} is {g['lag']} entries behind, near the trim limit "
            f"{maxlen}: raise TI_STREAM_MAXLEN or add consumers"
        )
    if g.get("lost_unknown_gaps"):
        out.append(
            f"warning: {g['name']} read past {g['lost_unknown_gaps']} trim gaps of "
            "unknown size (its position was not counted)"
        )
    return out
