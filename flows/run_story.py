"""What a flow run tells the UI: its task runs' names, its schedule, and why it failed.

- :func:`failed_run` is the state a failed flow returns: its message starts with the one-line
  cause (not "Flow run encountered an exception:" and a traceback) and ends with how to retry
  it: ``ti retry ID`` for a run without a deployment (Prefect's ``flow-run retry`` only
  schedules those and they turn Late), the UI's Retry for a deployment's run.
- :func:`scheduled_moment` is when the run was scheduled for: a late run, or a retry, still
  knows which session it was meant to publish.
- :func:`envelope_run_name` names the publish task runs after their ticker and date.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ti_core.errors import one_line

__all__ = ["envelope_run_name", "failed_run", "scheduled_moment"]


def _retry_advice() -> str:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None:
        return "retry it once fixed"
    if run.deployment_id is not None:
        return "retry it once fixed with the Retry button in the UI or `prefect flow-run retry ID`"
    return f"retry it once fixed with `ti retry {run.id}`"


def failed_run(exc: BaseException, cause: str | None = None) -> Any:
    """A Failed state for the current flow run: the cause (default: ``exc`` on one line)
    first, then how to retry.

    Calling the flow still raises ``exc``, and ``state.result(raise_on_failure=False)``
    returns it, as if the flow had raised it.
    """
    from prefect.states import Failed

    return Failed(message=f"{cause or one_line(exc, 500)} -- {_retry_advice()}", data=exc)


def scheduled_moment() -> datetime:
    """When this flow run was scheduled to start (now, outside a run); retries keep it."""
    from prefect.runtime import flow_run

    moment = flow_run.scheduled_start_time
    return datetime.fromtimestamp(moment.timestamp(), UTC)


def envelope_run_name() -> str:
    """``publish-stream-NVDA-2026-05-11``: a publish task's run named after its decision."""
    from prefect.runtime import task_run

    name = str(task_run.task_name or "publish")
    try:
        target = json.loads(task_run.parameters["envelope_json"])["decision"]["target"]
        return f"{name}-{target['ticker']}-{target['trade_date']}"
    except (KeyError, TypeError, ValueError):
        return name
