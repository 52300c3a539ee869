"""The front door: how long ``ti`` takes, against importing the flows, in one run.

    python bench/cli.py [--repeat 3] [--load 2]   # --load: CPU hogs beside the fresh run

Baseline: ``python -c "import flows.pipeline"`` (the cost of Prefect and the flows, which any
command that runs a flow pays). Each case runs as a child process in a fresh data directory
and HOME (nothing configured: no PREFECT_API_URL, the embedded store):

- ``ti run`` warm: the shared local Prefect server already up (target: within 2x the import);
- ``ti run`` fresh: a new data directory, so the command starts the server itself
  (must succeed; with ``--load N``, N CPU-bound processes run beside it);
- ``ti daily`` on a weekend (the clock of the child set to Sunday 2026-05-10 15:00 UTC) and
  ``ti backfill --dry-run``: nothing to run, so no Prefect (target: within 1.5x).

Prints the median seconds of each case and its ratio to the baseline measured in the same
run. Stops every server it started; kills its load processes by PID.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TI = str(Path(sys.executable).parent / "ti")
SUNDAY = (
    "import datetime as d, sys, ti_core.backfill.calendar as c\n"
    "real = c.current_session\n"
    "c.current_session = lambda cal='XNYS', now=None: "
    "real(cal, now or d.datetime(2026, 5, 10, 15, tzinfo=d.UTC))\n"
    "from flows.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _env(home: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TI_", "PREFECT_", "XDG_")) and k != "HOME"
    }
    home.mkdir(parents=True, exist_ok=True)
    return {**keep, "HOME": str(home), "TI_SERVER_IDLE_TIMEOUT": "120"}


def _timed(args: list[str], env: dict[str, str], timeout: float = 600) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return took


def _median(args: list[str], env: dict[str, str], repeat: int) -> float:
    return statistics.median(_timed(args, env) for _ in range(repeat))


def _load(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument(
        "--load",
        type=int,
        default=2,
        help="CPU-bound processes beside the fresh ti run (the busy machine)",
    )
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ti-bench-cli-"))
    warm_env, fresh_env = _env(tmp / "warm"), _env(tmp / "fresh")
    run = [TI, "run", "NVDA", "--date", "2026-05-11"]
    results: dict[str, float] = {}
    try:
        results["import flows.pipeline (baseline)"] = _median(
            [sys.executable, "-c", "import flows.pipeline"], warm_env, opts.repeat
        )
        _timed([TI, "server", "start"], warm_env)
        _timed(run, warm_env)  # the first run creates the flow in the database
        results["ti run, local server up"] = _median(run, warm_env, opts.repeat)
        results["ti daily on a Sunday"] = _median(
            [sys.executable, "-c", SUNDAY, "daily", "--tickers", "NVDA,AAPL"], warm_env, opts.repeat
        )
        results["ti backfill --dry-run (a month)"] = _median(
            [
                TI,
                "backfill",
                "--tickers",
                "NVDA,AAPL",
                "--start",
                "2026-04-01",
                "--end",
                "2026-04-30",
                "--dry-run",
            ],
            warm_env,
            opts.repeat,
        )
        load = _load(opts.load)
        try:
            results[f"ti run, fresh data dir ({opts.load} CPU hogs beside)"] = _timed(
                run, fresh_env
            )
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
    finally:
        for env in (warm_env, fresh_env):
            subprocess.run([TI, "server", "stop"], env=env, capture_output=True, check=False)
    base = results["import flows.pipeline (baseline)"]
    targets = {
        "ti run, local server up": 2.0,
        "ti daily on a Sunday": 1.5,
        "ti backfill --dry-run (a month)": 1.5,
    }
    print(f"{'case':<48} {'seconds':>8} {'ratio':>6}  target")
    for name, seconds in results.items():
        target = (
            f"<= {targets[name]}x" if name in targets else ("succeeds" if "fresh" in name else "")
        )
        print(f"{name:<48} {seconds:8.2f} {seconds / base:6.2f}  {target}")
    print(f"(load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
