"""What a flow run tells the UI: its task runs' names, its schedule, and why it failed.

- :func:`failed_run` is the state a failed flow returns: its message starts with the one-line
  cause (not "Flow run encountered an exception:" and a traceback) and ends with how to retry
  it: ``ti retry ID`` for a run without a deployment (Prefect's ``flow-run retry`` only
  schedules those and they turn Late), the UI's Retry for a deployment's run.
- :func:`scheduled_moment` is when the run was scheduled for: a late run, or a retry, still
  knows which session it was meant to publish.
- :func:`daily_run_name` names a daily run after its session, also when a schedule left the
  date out (the session it was scheduled for, not ``daily-None``).
- :func:`run_logger` is where a step says what it did: the run's logger, whose records reach
  the API (the UI's Logs) at INFO while ``ti`` keeps the terminal quiet.
- :func:`one_line_task_failures` keeps a :class:`TiError`'s traceback out of the task run's
  log: its message is already the one-line cause, and 70 lines of frames above it hid the
  cause in the UI's Logs. Any other exception (a bug) keeps its traceback, and so does every
  one with ``PREFECT_LOGGING_LEVEL=DEBUG``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ti_core.defaults import CALENDAR
from ti_core.errors import TiError, one_line

__all__ = [
    "daily_run_name",
    "failed_run",
    "one_line_task_failures",
    "run_logger",
    "scheduled_moment",
]


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


def daily_run_name() -> str:
    """``daily-2026-05-15``: the run's ``trade_date``, else the session it was scheduled for
    (on a closed day, that day: the run then logs why it publishes nothing)."""
    from prefect.runtime import flow_run

    from ti_core.backfill.calendar import current_session

    parameters = flow_run.parameters
    day = parameters.get("trade_date")
    if not day:
        try:
            day, reason = current_session(
                str(parameters.get("calendar") or CALENDAR), now=scheduled_moment()
            )
        except Exception:  # a bad calendar: the flow itself says so
            return "daily"
        day = day or reason.split()[0]  # "2026-11-28 is a weekend (XNYS)"
    return f"daily-{day}"


def run_logger(outside: str = "flows") -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The current flow or task run's logger; the logger ``outside`` when there is no run
    (a flow or task body called through ``.fn()``)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(outside)


def _without_ti_traceback(record: logging.LogRecord) -> bool:
    """Log filter: a record about a TiError loses its traceback (never the record itself),
    unless the task-run logger is at DEBUG."""
    if (
        record.exc_info
        and isinstance(record.exc_info[1], TiError)
        and not logging.getLogger("prefect.task_runs").isEnabledFor(logging.DEBUG)
    ):
        record.exc_info = None
        record.exc_text = None
    return True


def one_line_task_failures() -> None:
    """Prefect logs a task's final failure with its traceback; for a TiError, drop it.

    Installed once on Prefect's task-run logger, in every process that imports the tasks (a
    ``ti`` command, a worker, ``ti serve``).
    """
    logger = logging.getLogger("prefect.task_runs")
    if _without_ti_traceback not in logger.filters:
        logger.addFilter(_without_ti_traceback)
