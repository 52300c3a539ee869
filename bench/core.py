"""Build and decode throughput of ``ti_core`` against the original module, in one run.

    python bench/core.py [--seconds 0.04] [--rounds 25]

Loads the reference from ``../shared/reference/stream_reference.py`` (relative to the repo)
and times both on the same inputs: for building, the three sample states, the publish
bench's states (``bench_states``, about 2.7 KB envelopes) and the rich shape
(``rich_states``: 20 source-metric records, five signals with key factors and 200-character
summaries, about 2.9 KB); for decoding, the samples' payloads and skip-path inputs the
reference survives (a v2 envelope, bad JSON, a body failing validation). Prints ops per CPU
second and the ratio ours/reference: above 1 means we are faster.
Each measurement is ``--rounds`` pairs of short rounds, ours and the reference's back to back
(which goes first alternates): the medians of each rate and of the per-pair ratios, so a
busy machine skews both alike and one disturbed round moves nothing. For counts that load
does not move at all, see ``bench/instructions.py`` (callgrind).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reference import bench_states, load_reference, rich_states  # noqa: E402
from ti_core import build_envelope_from_state, decode_envelope  # noqa: E402

DATA = ROOT / "tests" / "data"


def _round(fn: Callable[[Any], Any], inputs: list[Any], seconds: float) -> float:
    """Calls per CPU second over ``inputs`` round-robin, for about ``seconds`` of CPU time.

    CPU time, not wall time: other processes on a busy machine then barely move the result.
    """
    calls, start = 0, time.process_time()
    deadline = start + seconds
    while True:
        for item in inputs:
            fn(item)
        calls += len(inputs)
        now = time.process_time()
        if now >= deadline:
            return calls / (now - start)


def rates(
    ours: Callable[[Any], Any],
    theirs: Callable[[Any], Any],
    inputs: list[Any],
    seconds: float,
    rounds: int,
) -> tuple[float, float, float]:
    """Median rate of each and median ratio ours/theirs over ``rounds`` back-to-back pairs."""
    ours_rates, their_rates, ratios = [], [], []
    for index in range(rounds):
        if index % 2:
            theirs_rate = _round(theirs, inputs, seconds)
            ours_rate = _round(ours, inputs, seconds)
        else:
            ours_rate = _round(ours, inputs, seconds)
            theirs_rate = _round(theirs, inputs, seconds)
        ours_rates.append(ours_rate)
        their_rates.append(theirs_rate)
        ratios.append(ours_rate / theirs_rate)
    return median(ours_rates), median(their_rates), median(ratios)


def skip_inputs(payload: str) -> list[str]:
    """Payloads both decoders survive and skip: v2, malformed JSON, a body failing validation."""
    doc = json.loads(payload)
    v2 = dict(doc, schema_version="2")
    bad_body = json.loads(payload)
    bad_body["decision"]["synthesis"]["confidence"] = 85
    return [json.dumps(v2), payload[: len(payload) // 2], json.dumps(bad_body)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.04, help="CPU seconds per timing round")
    parser.add_argument("--rounds", type=int, default=25, help="pairs of rounds per measurement")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # skipped-signal warnings would dominate the timings
    ref = load_reference()
    states = [json.loads(p.read_text()) for p in sorted(DATA.glob("*-20??-??-??-*.json"))]
    payloads = [build_envelope_from_state(s).model_dump_json() for s in states]
    valid = [p.encode() for p in payloads]
    skips = [s for p in payloads for s in skip_inputs(p)]
    for payload in valid + [s.encode() for s in skips]:  # both must agree before we time them
        assert (decode_envelope(payload) is None) == (ref.decode_envelope(payload) is None)

    shapes = {"samples": states, "bench": bench_states(60), "rich": rich_states(60)}

    def dumped(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda s: build(s).model_dump_json()

    cases: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any], list[Any]]] = (
        [
            (f"build {name}", build_envelope_from_state, ref.build_envelope_from_state, inputs)
            for name, inputs in shapes.items()
        ]
        + [
            (
                f"build+serialise {name}",
                dumped(build_envelope_from_state),
                dumped(ref.build_envelope_from_state),
                inputs,
            )
            for name, inputs in shapes.items()
        ]
        + [
            ("decode valid (bytes)", decode_envelope, ref.decode_envelope, valid),
            ("decode skip-path (str)", decode_envelope, ref.decode_envelope, skips),
        ]
    )
    for name, inputs in shapes.items():
        sizes = [len(build_envelope_from_state(s).model_dump_json().encode()) for s in inputs]
        print(f"{name}: {len(inputs)} states, mean envelope {sum(sizes) / len(sizes):,.0f} bytes")
    print(f"medians of {args.rounds} back-to-back pairs of {args.seconds}s rounds (CPU time)")
    print(f"{'operation':<26}{'ours/s':>12}{'reference/s':>14}{'ratio':>9}")
    for name, ours, theirs, inputs in cases:
        ours_rate, ref_rate, ratio = rates(ours, theirs, inputs, args.seconds, args.rounds)
        print(f"{name:<26}{ours_rate:>12,.0f}{ref_rate:>14,.0f}{ratio:>8.2f}x")
    print("ours builds with its rules, bounds and the 64 KiB size check (target >= 1.5x);")
    print("decode skip-path excludes inputs the reference crashes on (arrays, null, non-UTF-8).")


if __name__ == "__main__":
    main()
