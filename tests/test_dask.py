"""A heavy backfill fanned out on a (local) Dask cluster through prefect-dask's DaskTaskRunner.

The batches must really run as Dask tasks (the scheduler counts them) and publish exactly once.
Skipped when the optional ``dask`` extra is not installed (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backfill_replay import assert_exactly_once, write_replay_dir
from ti_core.calendar import sessions

pytest.importorskip(
    "prefect_dask", reason="prefect-dask is not installed: pip install -e '.[dask]'"
)
distributed = pytest.importorskip("distributed")
plugin = pytest.importorskip("distributed.diagnostics.plugin")

pytestmark = [pytest.mark.redis_server, pytest.mark.prefect]
TICKERS = ["NVDA", "AAPL", "MSFT"]


class _Finished(plugin.SchedulerPlugin):  # type: ignore[misc]
    """Keys of the tasks that finished on the cluster (a scheduler plugin sees every one)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def transition(
        self, key: object, start: str, finish: str, *args: object, **kwargs: object
    ) -> None:
        if finish == "memory":
            self.keys.append(str(key))


async def test_backfill_batches_run_as_dask_tasks(
    prefect_harness: None, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner

    from flows.backfill import backfill

    plan = sessions("2026-05-04", "2026-05-15", "weekdays")  # 10 sessions x 3 tickers
    replay = write_replay_dir(tmp_path / "replay", TICKERS, plan.sessions)
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.setenv("TI_BATCH_SIZE", "6")  # 30 items -> 5 batches
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        finished = _Finished()
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
