"""The deployments against the code: prefect.yaml is what ``flows.deployments`` (their one
definition) generates, entry points import, parameters fit the flows' signatures, schedules
carry a time zone, the arena trigger renders to valid parameters, ``ti serve`` serves the same
deployments, and the automation file is what Prefect accepts."""

from __future__ import annotations

import importlib
import inspect
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pytest
import yaml

from flows.arena_events import ARENA_COMPLETED, arena_completed_event, emit_arena_completed
from flows.cli import main
from flows.deployments import (
    ARENA_TRIGGER_PARAMETERS,
    DAILY_CRON,
    DAILY_TIMEZONE,
    prefect_yaml,
    runner_deployments,
)
from flows.deployments import (
    DEPLOYMENTS as TABLE,
)
from ti_core.errors import ConfigError, InvalidStateError, StateNotFoundError

ROOT = Path(__file__).resolve().parent.parent
PROJECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in PROJECT["deployments"]}


def _flow(entrypoint: str) -> Any:
    path, _, name = entrypoint.partition(":")
    assert (ROOT / path).is_file(), f"{entrypoint}: no such file"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _render(template: str, event: dict[str, Any]) -> str:
    return (
        jinja2.Environment(undefined=jinja2.StrictUndefined)
        .from_string(template)
        .render(event=event)
    )


def test_the_three_deployments_exist() -> None:
    assert {"daily-publish", "backfill", "publish-on-arena-complete"} <= set(DEPLOYMENTS)


def test_prefect_yaml_is_generated_from_the_one_definition() -> None:
    """Edit flows/deployments.py, then: python -m flows.deployments > prefect.yaml"""
    assert (ROOT / "prefect.yaml").read_text() == prefect_yaml()
    assert [d.name for d in TABLE] == list(DEPLOYMENTS)
    for d in TABLE:
        assert DEPLOYMENTS[d.name]["entrypoint"] == d.entrypoint
        assert DEPLOYMENTS[d.name].get("parameters", {}) == dict(d.parameters)
        assert DEPLOYMENTS[d.name]["tags"] == list(d.tags)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_imports_and_parameters_fit_the_signature(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    flow = _flow(deployment["entrypoint"])
    signature = inspect.signature(flow.fn)
    given = dict(deployment.get("parameters") or {})
    assert set(given) <= set(signature.parameters), f"{name}: unknown parameters"
    for schedule in deployment.get("schedules") or []:
        assert set(schedule.get("parameters") or {}) <= set(signature.parameters)
    for trigger in deployment.get("triggers") or []:
        assert set(trigger.get("parameters") or {}) <= set(signature.parameters)
    required = {p for p, v in signature.parameters.items() if v.default is inspect.Parameter.empty}
    if deployment.get("schedules"):  # a scheduled run has nobody to supply what is missing
        assert required <= set(given), f"{name}: schedule lacks {required - set(given)}"
        flow.validate_parameters(given)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_deployment_uses_the_shared_work_pool(name: str) -> None:
    pool = PROJECT["definitions"]["work_pools"]["process_pool"]
    assert DEPLOYMENTS[name]["work_pool"] == pool
    assert "*process_pool" in (ROOT / "prefect.yaml").read_text()  # an alias, not a copy


def test_cron_schedules_carry_a_time_zone_and_run_after_the_us_close() -> None:
    crons = [s for d in PROJECT["deployments"] for s in d.get("schedules") or [] if "cron" in s]
    assert crons
    for schedule in crons:
        ZoneInfo(schedule["timezone"])  # a real IANA zone
    daily = DEPLOYMENTS["daily-publish"]["schedules"][0]
    assert daily == PROJECT["definitions"]["schedules"]["after_us_close"]
    minute, hour, _, _, weekdays = daily["cron"].split()
    assert daily["timezone"] == "America/New_York" and weekdays == "1-5"
    assert (int(hour), int(minute)) >= (16, 15), "must run after the 16:00 close"
    assert not DEPLOYMENTS["backfill"].get("schedules")


def test_pull_step_runs_flows_from_the_deployed_checkout() -> None:
    (build,) = PROJECT["build"]
    step = build["prefect.deployments.steps.run_shell_script"]
    (pull,) = PROJECT["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert step["script"] == "pwd" and directory == "{{ " + step["id"] + ".stdout }}"


def test_arena_trigger_renders_to_valid_parameters(tmp_path: Path) -> None:
    deployment = DEPLOYMENTS["publish-on-arena-complete"]
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [ARENA_COMPLETED]
    (tmp_path / "BRK.B").mkdir()
    (tmp_path / "BRK.B" / "2026-05-12.json").write_text("{}")
    event = arena_completed_event("brk.b", "2026-05-12", tmp_path)
    assert (
        trigger["match"]["prefect.resource.id"].rstrip("*")
        in event["resource"]["prefect.resource.id"]
    )
    rendered = {k: _render(v, event) for k, v in trigger["parameters"].items()}
    assert rendered == {
        "ticker": "BRK.B",
        "trade_date": "2026-05-12",
        "arena": f"replay:{tmp_path.resolve()}",
    }
    flow = _flow(deployment["entrypoint"])
    flow.validate_parameters(rendered)


def test_ti_serve_builds_the_same_deployments() -> None:
    served = {d.name: d for d in runner_deployments(["NVDA", "AAPL"])}
    assert set(served) == set(DEPLOYMENTS)
    for name, deployment in served.items():
        assert deployment.entrypoint.endswith(DEPLOYMENTS[name]["entrypoint"].split("/")[-1])
        assert deployment.tags == DEPLOYMENTS[name]["tags"]
        assert deployment.description == DEPLOYMENTS[name]["description"]
    daily = served["daily-publish"]
    (schedule,) = daily.schedules
    yaml_schedule = DEPLOYMENTS["daily-publish"]["schedules"][0]
    assert (
        (schedule.schedule.cron, schedule.schedule.timezone)
        == (yaml_schedule["cron"], yaml_schedule["timezone"])
        == (DAILY_CRON, DAILY_TIMEZONE)
    )
    assert daily.parameters == {
        "tickers": ["NVDA", "AAPL"],  # --tickers replaces the example list
        "calendar": DEPLOYMENTS["daily-publish"]["parameters"]["calendar"],
    }  # no arena: the settings where the runs execute choose it (TI_ARENA, TI_ARENA_ALLOWED)
    assert served["backfill"].parameters == DEPLOYMENTS["backfill"]["parameters"]
    (trigger,) = served["publish-on-arena-complete"].triggers
    (yaml_trigger,) = DEPLOYMENTS["publish-on-arena-complete"]["triggers"]
    assert trigger.parameters == yaml_trigger["parameters"] == ARENA_TRIGGER_PARAMETERS
    assert set(trigger.expect) == set(yaml_trigger["expect"])
    assert trigger.match.model_dump() == yaml_trigger["match"]
    assert not served["backfill"].schedules and not served["backfill"].triggers


def test_automation_file_is_valid_for_prefect() -> None:
    from prefect.events.schemas.automations import AutomationCore

    text = (ROOT / "automations" / "notify-on-publish-failure.yaml").read_text()
    data = yaml.safe_load(text.replace("TI_NOTIFY_BLOCK_ID", str(uuid.uuid4())))
    automations = [AutomationCore.model_validate(a) for a in data["automations"]]
    assert [a.name for a in automations] == ["ti-publish-failed", "ti-decision-failed"]
    assert automations[0].enabled and automations[0].actions[0].type == "send-notification"
    tags = {t for d in PROJECT["deployments"] for t in d["tags"]}
    assert "ti" in tags  # the tag the flow-run automation matches on
    assert all("ti" in d["tags"] for d in PROJECT["deployments"])


def test_arena_event_validates_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(StateNotFoundError, match="NVDA/2026-05-11.json"):
        arena_completed_event("nvda", "2026-05-11", tmp_path)
    with pytest.raises(InvalidStateError):
        arena_completed_event("NV:DA*", "2026-05-11", tmp_path, check_state=False)
    event = arena_completed_event("nvda", "2026-05-11T20:00:00", tmp_path, check_state=False)
    assert event["resource"]["prefect.resource.id"] == "ti.arena.NVDA.2026-05-11"
    assert event["resource"]["ti.state-dir"] == str(tmp_path.resolve())


def test_emit_without_a_prefect_server_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "NVDA").mkdir()
    (tmp_path / "NVDA" / "2026-05-11.json").write_text("{}")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # A session harness started by an earlier test sets the URL in Prefect's settings context.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(ConfigError, match="PREFECT_API_URL"):
            emit_arena_completed("NVDA", "2026-05-11", tmp_path)
        code = main(["emit-arena-completed", "NVDA", "2026-05-11", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
