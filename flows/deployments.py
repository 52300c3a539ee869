"""The three deployments, defined once: ``ti serve`` builds them from here, and prefect.yaml is
generated from here (``python -m flows.deployments > prefect.yaml``; a test checks it is).

- ``daily-publish``: the ``daily`` flow on a cron after the US close;
- ``backfill``: the ``backfill`` flow, on demand;
- ``publish-on-arena-complete``: ``publish_decision``, triggered by ``ti.arena.completed``.

prefect.yaml runs them on a work pool's workers (``prefect deploy --all``); ``ti serve`` serves
the same names, parameters, schedule and trigger from one process. Prefect is imported only by
:func:`runner_deployments`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flows.arena_events import ARENA_COMPLETED, RESOURCE_PREFIX
from ti_core.defaults import CALENDAR

__all__ = [
    "ARENA_TRIGGER_PARAMETERS",
    "DAILY_CRON",
    "DAILY_TIMEZONE",
    "DEPLOYMENTS",
    "Deployment",
    "prefect_yaml",
    "runner_deployments",
]

DAILY_CRON = "30 17 * * 1-5"  # 17:30 New York, Monday to Friday: after the 16:00 US close
DAILY_TIMEZONE = "America/New_York"
WORK_POOL = "ti-process"
# The trigger's parameters, templated from the event's resource labels.
ARENA_TRIGGER_PARAMETERS = {
    "ticker": "{{ event.resource['ti.ticker'] }}",
    "trade_date": "{{ event.resource['ti.trade-date'] }}",
    "arena": "replay:{{ event.resource['ti.state-dir'] }}",
}
ARENA_TRIGGER_MATCH = {"prefect.resource.id": f"{RESOURCE_PREFIX}.*"}


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment: its flow (``module:function``), what it is for, and how it starts."""

    name: str
    flow: str
    description: str
    tags: tuple[str, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    scheduled: bool = False  # on the daily cron
    triggered: bool = False  # by ti.arena.completed

    @property
    def entrypoint(self) -> str:
        """``flows/pipeline.py:daily``: the flow's file and name, as prefect.yaml writes it."""
        module, _, function = self.flow.partition(":")
        return f"{module.replace('.', '/')}.py:{function}"


DEPLOYMENTS = (
    Deployment(
        "daily-publish",
        "flows.pipeline:daily",
        "Publish one decision per ticker for today's session, after the US close.",
        ("ti", "scheduled"),
        {"tickers": ["NVDA", "AAPL", "BRK.B"], "calendar": CALENDAR},
        scheduled=True,
    ),
    Deployment(
        "backfill",
        "flows.backfill:backfill",
        "Publish the decisions of a date range on demand (missing ones by default).",
        ("ti", "on-demand"),
        {"only": "missing", "calendar": CALENDAR},
    ),
    Deployment(
        "publish-on-arena-complete",
        "flows.pipeline:publish_decision",
        "Publish one decision when an arena emits ti.arena.completed.",
        ("ti", "event"),
        triggered=True,
    ),
)


def _flow(deployment: Deployment) -> Any:
    import importlib

    module, _, function = deployment.flow.partition(":")
    return getattr(importlib.import_module(module), function)


def runner_deployments(
    tickers: list[str],
    *,
    cron: str = DAILY_CRON,
    timezone: str = DAILY_TIMEZONE,
) -> list[Any]:
    """:data:`DEPLOYMENTS` as Prefect ``RunnerDeployment`` objects for ``serve``: the daily
    runs publish ``tickers`` on ``cron`` in ``timezone``.

    No arena here: a deployment's parameters are the server's to change (anyone who may
    update a deployment), so the arena comes from the settings of the process that runs the
    flows (``TI_ARENA``, ``TI_ARENA_ALLOWED``; see :mod:`flows.run_settings`)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    out = []
    for d in DEPLOYMENTS:
        parameters = dict(d.parameters)
        options: dict[str, Any] = {}
        if d.scheduled:
            parameters["tickers"] = list(tickers)
            options["schedules"] = [Cron(cron, timezone=timezone)]
        if d.triggered:
            options["triggers"] = [
                DeploymentEventTrigger(
                    name=f"{d.name}__{ARENA_COMPLETED.replace('.', '-')}",
                    expect={ARENA_COMPLETED},
                    match=dict(ARENA_TRIGGER_MATCH),
                    parameters=dict(ARENA_TRIGGER_PARAMETERS),
                )
            ]
        out.append(
            _flow(d).to_deployment(
                name=d.name,
                description=d.description,
                parameters=parameters,
                tags=list(d.tags),
                **options,
            )
        )
    return out


_HEADER = f"""\
# Prefect 3 deployments of the trading-intelligence publisher.
# Generated from flows/deployments.py (python -m flows.deployments > prefect.yaml), which
# `ti serve` serves too; tests/test_deployments.py checks the two are the same. For your own
# deployment, edit the copy you deploy (the tickers, the work pool) as you need.
#
#   prefect work-pool create {WORK_POOL} --type process     # once per Prefect server
#   prefect deploy --all                                   # from this directory
#   prefect worker start --pool {WORK_POOL}                 # on each machine that publishes
#
# Workers read TI_* from their own environment (TI_REDIS_URL, TI_ARENA, ...): set them where
# the worker runs, never here. docs/operations.md walks through the whole setup; `ti serve`
# serves the same three deployments from one process, without a work pool.
name: trading-intelligence-publisher
prefect-version: 3.9.1

# Record the absolute path of this checkout at deploy time; workers run the flows from it.
build:
  - prefect.deployments.steps.run_shell_script:
      id: project_dir
      script: pwd
      stream_output: false
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{{{ project_dir.stdout }}}}"

definitions:
  work_pools:
    process_pool: &process_pool
      name: {WORK_POOL}
      work_queue_name: default
      job_variables: {{}}
  schedules:
    # 17:30 in New York, Monday to Friday: after the 16:00 US close. The daily flow itself
    # skips exchange holidays (its `calendar` parameter, XNYS by default).
    after_us_close: &after_us_close
      cron: {json.dumps(DAILY_CRON)}
      timezone: {DAILY_TIMEZONE}
      day_or: true
      active: true

deployments:
"""


def _yaml_value(value: Any) -> str:
    """A flow-style YAML scalar or list (JSON is YAML; plain words stay unquoted)."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    text = str(value)
    plain = text.replace(".", "").replace("-", "").replace("_", "").isalnum()
    return text if isinstance(value, str) and plain else json.dumps(value)


def _trigger_lines() -> list[str]:
    match = [f"          {k}: {v}" for k, v in ARENA_TRIGGER_MATCH.items()]
    parameters = [f"          {k}: {json.dumps(v)}" for k, v in ARENA_TRIGGER_PARAMETERS.items()]
    return [
        "    triggers:",
        "      - type: event",
        "        enabled: true",
        "        # Emitted by flows.arena_events.emit_arena_completed / `ti emit-arena-completed`.",
        "        match:",
        *match,
        "        expect:",
        f"          - {ARENA_COMPLETED}",
        "        posture: Reactive",
        "        threshold: 1",
        "        within: 0",
        "        parameters:",
        *parameters,
    ]


def _deployment_lines(d: Deployment) -> list[str]:
    lines = [
        f"  - name: {d.name}",
        f"    description: {d.description}",
        f"    entrypoint: {d.entrypoint}",
        f"    tags: [{', '.join(d.tags)}]",
    ]
    if d.parameters:
        lines.append("    parameters:")
        lines += [f"      {k}: {_yaml_value(v)}" for k, v in d.parameters.items()]
    lines += ["    schedules:", "      - *after_us_close"] if d.scheduled else ["    schedules: []"]
    lines.append("    work_pool: *process_pool")
    return lines + (_trigger_lines() if d.triggered else [])


def prefect_yaml() -> str:
    """The text of prefect.yaml, from :data:`DEPLOYMENTS` and the constants above."""
    blocks = ["\n".join(_deployment_lines(d)) for d in DEPLOYMENTS]
    return _HEADER + "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    print(prefect_yaml(), end="")
