"""A heavy backfill fanned out on a (local) Dask cluster through prefect-dask's DaskTaskRunner.

The batches must really run as Dask tasks (the scheduler counts them) and publish exactly once.
Skipped when the optional ``dask`` extra is not installed (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from tests.backfill_replay import assert_exactly_once, write_replay_dir
from ti_core.backfill.calendar import sessions

# Found, not imported: prefect_dask imports Prefect and distributed (seconds), which the
# collection of a fast tier that never runs this test would pay.
if find_spec("prefect_dask") is None or find_spec("distributed") is None:
    pytest.skip("prefect-dask is not installed: pip install -e '.[dask]'", allow_module_level=True)

pytestmark = [pytest.mark.redis_server, pytest.mark.prefect]
TICKERS = ["NVDA", "AAPL", "MSFT"]


def _finished() -> Any:
    """A scheduler plugin recording the keys of the tasks that finished on the cluster (it
    sees every one)."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Finished(SchedulerPlugin):  # type: ignore[misc]
        def __init__(self) -> None:
            self.keys: list[str] = []

        def transition(
            self, key: object, start: str, finish: str, *args: object, **kwargs: object
        ) -> None:
            if finish == "memory":
                self.keys.append(str(key))

    return Finished()


async def test_backfill_batches_run_as_dask_tasks(
    prefect_harness: None, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed
    from prefect_dask import DaskTaskRunner

    from flows.backfill import backfill

    plan = sessions("2026-05-04", "2026-05-15", "weekdays")  # 10 sessions x 3 tickers
    replay = write_replay_dir(tmp_path / "replay", TICKERS, plan.sessions)
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_BATCH_SIZE", "6")  # 30 items -> 5 batches
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        finished = _finished()
        cluster.scheduler.add_plugin(finished)
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        state = await backfill.with_options(task_runner=runner)(
            TICKERS,
            plan.sessions[0],
            plan.sessions[-1],
            arena=f"replay:{replay}",
            calendar="weekdays",
            return_state=True,
        )
    assert state.is_completed(), state
    summary = await state.result()
    assert (summary.published, summary.failed) == (30, [])
    assert len(finished.keys) >= 5, f"the batches did not run on Dask: {finished.keys}"
    assert_exactly_once(redis_url, [(t, d) for d in plan.sessions for t in TICKERS])
