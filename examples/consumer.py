"""Example consumer a trading engine can start from: a consumer group, idempotent, crash-safe.

Run several copies with different ``--consumer`` names to share the work; kill one and the
others pick up what it left pending after ``--claim-idle-ms``. Undecodable entries and entries
your handler keeps failing on (``--max-attempts`` calls that raised or crashed the process)
land in the dead-letter stream (``{stream}:dead``) with a reason; this process never stops on
bad data. It stops, leaving the entry pending for another consumer, when the failure is its
own: a halt flag (raised as ``ConsumerBrokenError``), a closed output. A Redis restart or a
dropped connection is ridden out (``--give-up-after`` seconds). Stop it with Ctrl-C or SIGTERM.

    python examples/consumer.py --url redis://localhost:6379/0 --group engine --consumer e1

The "engine" here is a toy: it turns each decision into a target position (+1 BUY, -1 SELL,
0 HOLD or low confidence) kept in a Redis hash. Replace :class:`Engine` with your strategy,
keeping it idempotent: an entry can be delivered more than once (after a crash before its
acknowledgement), so record what you applied in the same atomic step as the effect.

What the handler raises tells the reader whose fault a failure is (docs/consuming.md):
``ConsumerBrokenError``, ``BrokenPipeError``, ``OSError``, Redis errors, ``MemoryError`` mean
"this consumer", and never count against the entry; any other exception means "this entry".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from redis.exceptions import WatchError

from ti_core.consume.groups import ConsumerBrokenError, GroupReader
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import TiError
from ti_core.settings import TiSettings, redact_url
from ti_core.transport.connection import connect

log = logging.getLogger("example-consumer")

# How long the record of applied entry ids is kept (longer than any redelivery takes).
APPLIED_TTL_SECONDS = 30 * 24 * 3600


class Engine:
    """Toy strategy: target position per ticker from the verdict, if confident enough."""

    def __init__(self, client: Any, name: str, min_confidence: float) -> None:
        self.client = client
        self.applied_key = f"example:{name}:applied"  # your engine's own keys
        self.positions_key = f"example:{name}:positions"
        self.halt_key = f"example:{name}:halt"  # an operator sets it to stop trading
        self.min_confidence = min_confidence

    async def __call__(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> None:
        if await self.client.exists(self.halt_key):
            # Our problem, not the decision's: stop, and leave it pending for later.
            raise ConsumerBrokenError(f"trading halted ({self.halt_key} is set)")
        d = envelope.decision
        s = d.synthesis
        position = {"BUY": 1, "SELL": -1, "HOLD": 0}[s.verdict]
        if s.confidence < self.min_confidence:
            position = 0
        applied = await self.apply(entry_id, d.target.ticker, position)
        word = "applied" if applied else "already applied"
        print(
            f"{word} {d.target.ticker} {d.target.trade_date} {s.verdict} "
            f"confidence {s.confidence:.2f} -> position {position:+d} ({entry_id})",
            flush=True,
        )

    async def apply(self, entry_id: str, ticker: str, position: int) -> bool:
        """The effect (a position) and the record that ``entry_id`` was applied, atomically;
        False if it was applied before. Optimistic ``WATCH``/``MULTI``, not a Lua script: a
        consumer's Redis user needs no ``EVAL`` (docs/publishing.md)."""
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.applied_key)
                    if await pipe.sismember(self.applied_key, entry_id):
                        return False
                    pipe.multi()
                    pipe.sadd(self.applied_key, entry_id)
                    pipe.expire(self.applied_key, APPLIED_TTL_SECONDS)
                    pipe.hset(self.positions_key, ticker, position)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # another consumer applied something meanwhile: look again


async def consume(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Read until ``stop``; ``GroupReader.run`` itself rides out Redis outages."""
    settings = TiSettings()
    stream = args.stream or settings.stream_name
    async with connect(args.url, settings=settings) as client:
        reader = GroupReader(
            client,
            args.group,
            args.consumer,
            Engine(client, args.group, args.min_confidence),
            stream_name=stream,
            start="0" if args.from_start else "$",
            max_attempts=args.max_attempts,
            claim_idle_ms=args.claim_idle_ms,
            block_ms=1000,
            give_up_after=args.give_up_after or settings.reconnect_give_up_seconds,
        )
        print(
            f"consumer {args.consumer} of group {args.group} started on {stream} at "
            f"{redact_url(args.url)}",
            flush=True,
        )
        try:
            await reader.run(stop=stop)
        except ConsumerBrokenError as exc:
            log.error("stopping: %s; the entry stays pending for another consumer", exc)
            return 3
    return 0


async def main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # finish the current step, then leave
    return await consume(args, stop)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--url", default=os.environ.get("TI_REDIS_URL"), help="Redis URL (default: $TI_REDIS_URL)"
    )
    p.add_argument("--group", default="engine", help="consumer group (default: engine)")
    p.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this consumer's name, stable across restarts (default: HOST-PID)",
    )
    p.add_argument("--stream", help="stream (default: TI_STREAM_NAME or the contract's)")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="a new group starts at the stream's first entry instead of new ones",
    )
    p.add_argument("--min-confidence", type=float, default=0.6)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--claim-idle-ms", type=int, default=60_000)
    p.add_argument(
        "--give-up-after",
        type=float,
        help="seconds to keep reconnecting to a lost Redis (default: TI_RECONNECT_GIVE_UP_SECONDS)",
    )
    args = p.parse_args(argv)
    if not args.url and not TiSettings().uses_server:
        p.error("a Redis server is needed: pass --url or set TI_REDIS_URL (or TI_REDIS_SENTINELS)")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except TiError as exc:  # e.g. Redis unreachable past --give-up-after
        print(f"consumer: {exc}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # our output was closed: stop quietly, the entry stays pending
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
