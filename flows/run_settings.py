"""Settings built once and passed down: by the ``ti`` command, and by each flow run for its tasks.

- :func:`with_flags` is how a command's flags override ``TI_*`` settings: keyword arguments to
  :class:`TiSettings` (which win over the environment), never writes to ``os.environ``.
- A flow takes the flags as plain parameters (``allow_demo``, ``publish_degraded``,
  ``arena_timeout``: JSON values, so a deployment's run, a retried run and ``ti retry`` carry
  them), builds its settings once with :func:`flow_settings` from the environment of the
  process it runs in (a worker's, for a deployment) plus those parameters, and its tasks read
  the same object through :func:`run_settings`. A task run the flow's context does not reach
  (another process, a distributed task runner) builds its own from its environment, as the
  flow would.

Prefect is imported only when a flow or task calls these, so the ``ti`` command can use
:func:`with_flags` before Prefect starts.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from ti_core.settings import TiSettings

__all__ = ["flow_run_id", "flow_settings", "run_settings", "with_flags"]

# (flow run id, its settings): set by the flow, read by its tasks in the same context.
_FLOW_SETTINGS: ContextVar[tuple[str, TiSettings] | None] = ContextVar(
    "ti_flow_settings", default=None
)


def with_flags(
    *,
    allow_demo: bool | None = None,
    publish_degraded: bool | None = None,
    arena_timeout: float | None = None,
) -> TiSettings:
    """``TiSettings()`` from the environment, with each flag that is not None overriding it."""
    flags: dict[str, Any] = {
        "allow_demo_publish": allow_demo,
        "publish_degraded": publish_degraded,
        "arena_timeout": arena_timeout,
    }
    return TiSettings(**{name: value for name, value in flags.items() if value is not None})


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in (from a flow or one of its tasks), else None."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_run = getattr(FlowRunContext.get(), "flow_run", None)
    if flow_run is not None:
        return str(flow_run.id)
    task_run = getattr(TaskRunContext.get(), "task_run", None)
    flow_run_id = getattr(task_run, "flow_run_id", None)
    return None if flow_run_id is None else str(flow_run_id)


def flow_settings(
    *,
    allow_demo: bool | None = None,
    publish_degraded: bool | None = None,
    arena_timeout: float | None = None,
) -> TiSettings:
    """This flow run's settings, built once (see :func:`with_flags`) and shared with its tasks."""
    settings = with_flags(
        allow_demo=allow_demo, publish_degraded=publish_degraded, arena_timeout=arena_timeout
    )
    _check_deployed_run(settings)
    run = flow_run_id()
    if run is not None:
        _FLOW_SETTINGS.set((run, settings))
    return settings


def _check_deployed_run(settings: TiSettings) -> None:
    """Refuse a deployment's flow run whose parameters name an arena its worker's settings do
    not allow, or ask to ``force``: anyone who may create a run (an API call, an event)
    chooses them, and an arena spec names code to import and a state to publish.

    Runs the ``ti`` command starts itself (no deployment) take what its user typed.
    """
    from prefect.context import FlowRunContext

    from ti_core.arenas.registry import arena_allowed
    from ti_core.contract.keys import shorten
    from ti_core.errors import ConfigError

    context = FlowRunContext.get()
    flow_run = getattr(context, "flow_run", None)
    if flow_run is None or flow_run.deployment_id is None:
        return
    parameters = getattr(context, "parameters", None) or {}
    if parameters.get("force"):
        raise ConfigError(
            "a deployment's run may not force over newer decisions (parameter force): "
            "use 'ti run --force' on the machine that publishes"
        )
    worker = TiSettings()  # where the run executes, without the run's own parameters
    for parameter, field, variable in (
        ("allow_demo", "allow_demo_publish", "TI_ALLOW_DEMO_PUBLISH"),
        ("publish_degraded", "publish_degraded", "TI_PUBLISH_DEGRADED"),
    ):
        if parameters.get(parameter) and not getattr(worker, field):
            raise ConfigError(
                f"a deployment's run may not set {parameter} (whoever creates runs chooses "
                f"it): set {variable}=1 where the runs execute to allow it"
            )
    arena = parameters.get("arena")
    if not arena_allowed(arena, settings):
        raise ConfigError(
            f"arena {shorten(arena, 200)} is not allowed for a "
            "deployment's run: set it as TI_ARENA or list it in TI_ARENA_ALLOWED where the "
            "runs execute (the worker's or ti serve's environment)"
        )


def run_settings() -> TiSettings:
    """The settings of the flow run this task belongs to; else built from the environment."""
    held = _FLOW_SETTINGS.get()
    if held is not None and held[0] == flow_run_id():
        return held[1]
    return TiSettings()
