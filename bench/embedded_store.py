"""Memory and time of a backfill into the embedded store, by size: where it stops fitting.

    python bench/embedded_store.py [--sizes 25000,50000,100000] [--batch 2500]

For each size, a child process (so its peak RSS is its own) publishes that many decisions
(the NVDA sample, ~4 KB each, retargeted) into a fresh embedded store the way a backfill
batch task does: one ``connect()`` per batch, ``publish_many``, and the save when the batch
leaves. Prints per size: total seconds, the store file's size, the child's peak RSS, and the
seconds of the last save (the whole store is rewritten by every save, so a backfill's time
grows with the square of its size; with TI_BATCH_SIZE's default of 500 there are
``--batch``/500 times more saves than here). No Prefect: this is the store's own cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import asyncio, json, sys, time
sys.path.insert(0, {root!r})
from tests.publish_workload import many_envelopes
from ti_core import connect, publish_many

async def main(count, batch):
    envelopes = many_envelopes(count, tickers=100)
    started = time.perf_counter()
    last_save = 0.0
    for first in range(0, count, batch):
        async with connect() as client:
            await publish_many(client, envelopes[first:first + batch])
            leaving = time.perf_counter()
        last_save = time.perf_counter() - leaving
    print(json.dumps({{"seconds": time.perf_counter() - started, "last_save": last_save}}))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def measure(count: int, batch: int) -> dict[str, float]:
    """One child process filling a fresh store with ``count`` decisions."""
    with tempfile.TemporaryDirectory(prefix="ti-bench-embedded-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TI_")}
        env["TI_DATA_DIR"] = tmp
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(count), str(batch)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        result["file_mb"] = (Path(tmp) / "store.dat").stat().st_size / 2**20
    # ru_maxrss of children is the largest so far: sizes run in increasing order.
    result["peak_rss_mb"] = max(peak, before) / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--batch", type=int, default=2500)
    opts = parser.parse_args()
    print(f"{'decisions':>9} {'seconds':>8} {'file MB':>8} {'peak RSS MB':>11} {'last save s':>11}")
    for count in sorted(int(s) for s in opts.sizes.split(",")):
        t = time.perf_counter()
        r = measure(count, opts.batch)
        print(
            f"{count:>9} {r['seconds']:>8.1f} {r['file_mb']:>8.1f} {r['peak_rss_mb']:>11.0f} "
            f"{r['last_save']:>11.2f}  (wall {time.perf_counter() - t:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
