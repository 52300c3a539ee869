"""Instructions per build, ours and the original module's, counted by callgrind, in one run.

    python bench/instructions.py [--states 20] [--repeat 10] [--bytes]

Wall and CPU time on a shared machine move by 10-20% between runs; instruction counts do not
move with load. Runs this script under ``valgrind --tool=callgrind`` (which must be
installed), counting only inside ``operator.call`` (the C function ``_operator_call``, which
nothing else here calls): each builder is warmed up, then called ``--repeat`` times over
``--states`` states of each shape (the publish bench's and the rich one) inside one
``operator.call``. Prints instructions per build and the ratio reference/ours (above 1: we
execute fewer). Instructions are not time (a Rust loop in pydantic-core retires more of them
per nanosecond than the interpreter), so read it beside ``bench/core.py``. With ``--bytes``
each build is followed by the bytes publishing sends (ours: ``wire.payload_and_digest``, which
reuses what the builder serialised; the original's: ``model_dump_json``). About a minute.
"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ("ours bench", "reference bench", "ours rich", "reference rich")


def child(states: int, repeat: int, with_bytes: bool) -> None:
    """Under callgrind: one ``operator.call`` per case, in ``CASES`` order."""
    from bench.reference import bench_states, load_reference, rich_states
    from ti_core import build_envelope_from_state
    from ti_core.contract.wire import payload_and_digest

    logging.disable(logging.CRITICAL)
    reference = load_reference().build_envelope_from_state
    builders: dict[str, Callable[[Any], Any]] = {
        "ours": build_envelope_from_state,
        "reference": reference,
    }
    if with_bytes:
        builders = {
            "ours": lambda state: payload_and_digest(build_envelope_from_state(state)),
            "reference": lambda state: reference(state).model_dump_json(),
        }
    shapes = {"bench": bench_states(states), "rich": rich_states(states)}
    for case in CASES:
        who, shape = case.split()
        build = builders[who]
        inputs = shapes[shape]
        for state in inputs:  # warm: caches, the interpreter's specialisations
            build(state)

        def loop(build=build, inputs=inputs) -> None:  # type: ignore[no-untyped-def]
            for _ in range(repeat):
                for state in inputs:
                    build(state)

        operator.call(loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=20, help="states per shape")
    parser.add_argument("--repeat", type=int, default=10, help="passes over the states")
    parser.add_argument("--bytes", action="store_true", help="each build, then its JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.states, args.repeat, args.bytes)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=_operator_call",
            "--dump-after=_operator_call",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            f"--states={args.states}",
            f"--repeat={args.repeat}",
            *(["--bytes"] if args.bytes else []),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(command, check=True, env=env, capture_output=True)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        totals = []
        for dump in dumps:
            found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
            if found:
                totals.append(int(found.group(1)))
    if len(totals) != len(CASES):
        raise SystemExit(f"expected {len(CASES)} callgrind dumps, got {len(totals)}")
    builds = args.states * args.repeat
    per = {case: total / builds for case, total in zip(CASES, totals, strict=True)}
    what = "build and its JSON" if args.bytes else "build"
    print(f"instructions per {what} (callgrind), {args.states} states x {args.repeat} passes")
    for shape in ("bench", "rich"):
        ours, ref = per[f"ours {shape}"], per[f"reference {shape}"]
        print(f"build {shape:<6} ours {ours:>9,.0f}  reference {ref:>9,.0f}  {ref / ours:5.2f}x")


if __name__ == "__main__":
    main()
