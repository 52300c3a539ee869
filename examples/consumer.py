"""Example consumer a trading engine can start from: a consumer group, idempotent, crash-safe.

Run several copies with different ``--consumer`` names to share the work; kill one and the
others pick up what it left pending after ``--claim-idle-ms``. Undecodable entries and entries
your handler keeps failing on land in the dead-letter stream (``{stream}:dead``) with a reason;
this process never stops on bad data. Stop it with Ctrl-C or SIGTERM.

    python examples/consumer.py --url redis://localhost:6379/0 --group engine --consumer e1

The "engine" here is a toy: it turns each decision into a target position (+1 BUY, -1 SELL,
0 HOLD or low confidence) kept in a Redis hash. Replace :class:`Engine` with your strategy,
keeping it idempotent: an entry can be delivered more than once (after a crash before its
acknowledgement), so record what you applied in the same atomic step as the effect.
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

from ti_core.connection import connect
from ti_core.errors import RedisUnavailableError, TiError
from ti_core.groups import GroupReader
from ti_core.models import TradingIntelligenceEnvelope
from ti_core.settings import TiSettings

log = logging.getLogger("example-consumer")

# The effect (a position) and the record that this entry id was applied, atomically.
APPLY = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], 2592000)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class Engine:
    """Toy strategy: target position per ticker from the verdict, if confident enough."""

    def __init__(self, client: Any, name: str, min_confidence: float) -> None:
        self.client = client
        self.applied_key = f"example:{name}:applied"  # your engine's own keys
        self.positions_key = f"example:{name}:positions"
        self.min_confidence = min_confidence

    async def __call__(self, entry_id: str, envelope: TradingIntelligenceEnvelope) -> None:
        d = envelope.decision
        s = d.synthesis
        position = {"BUY": 1, "SELL": -1, "HOLD": 0}[s.verdict]
        if s.confidence < self.min_confidence:
            position = 0
        applied = await self.client.eval(
            APPLY, 2, self.applied_key, self.positions_key, entry_id, d.target.ticker, position
        )
        word = "applied" if applied else "already applied"
        print(f"{word} {d.target.ticker} {d.target.trade_date} {s.verdict} "
              f"confidence {s.confidence:.2f} -> position {position:+d} ({entry_id})", flush=True)


async def consume(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Read until ``stop``; on a Redis outage, reconnect with backoff instead of dying."""
    settings = TiSettings()
    backoff = 1.0
    while not stop.is_set():
        try:
            async with connect(args.url, settings=settings) as client:
                reader = GroupReader(
                    client, args.group, args.consumer,
                    Engine(client, args.group, args.min_confidence),
                    stream_name=args.stream or settings.stream_name,
                    start="0" if args.from_start else "$",
                    max_attempts=args.max_attempts, claim_idle_ms=args.claim_idle_ms,
                    block_ms=1000,
                )
                await reader.run(stop=stop)
                backoff = 1.0
        except RedisUnavailableError as exc:
            log.warning("Redis unavailable (%s); retrying in %.0f s", exc, backoff)
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)


async def main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # finish the current step, then leave
    await consume(args, stop)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("TI_REDIS_URL"),
                   help="Redis URL (default: $TI_REDIS_URL)")
    p.add_argument("--group", default="engine", help="consumer group (default: engine)")
    p.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}",
                   help="this consumer's name, stable across restarts (default: HOST-PID)")
    p.add_argument("--stream", help="stream (default: TI_STREAM_NAME or the contract's)")
    p.add_argument("--from-start", action="store_true",
                   help="a new group starts at the stream's first entry instead of new ones")
    p.add_argument("--min-confidence", type=float, default=0.6)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--claim-idle-ms", type=int, default=60_000)
    args = p.parse_args(argv)
    if not args.url and not TiSettings().uses_server:
        p.error("a Redis server is needed: pass --url or set TI_REDIS_URL (or TI_REDIS_SENTINELS)")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except TiError as exc:
        print(f"consumer: {exc}", file=sys.stderr)
        sys.exit(1)
