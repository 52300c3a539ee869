"""How often each publishing path serialises an envelope and parses one back.

A decision is serialised once: build-envelope (or ``publish_many``, for a bare envelope)
makes its JSON text, and that text, byte for byte, is what the stream gets. Between Prefect
tasks it travels as a plain ``str``, so each task that needs the envelope parses it: the two
publish tasks (which read the digest from the text, serialising only the envelope's small
fields after the decision to find where it ends) and the flow, for the row and the card.

Counted by spies that wrap (and call) the real functions: the decision's serialiser in
``ti_core.contract.wire`` (``serialise`` and ``content_digest`` both call it, however they
were imported), every ``TradingIntelligenceEnvelope.model_dump_json`` /
``model_validate_json`` call (``wire.parse`` is the latter), and every ``json.loads`` of an
envelope's text. The flows run under the session's Prefect harness against a real
redis-server.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.backfill_replay import write_replay_dir
from ti_core.contract import wire
from ti_core.contract.keys import DEFAULT_STREAM_NAME, decision_hash_key
from ti_core.contract.models import TradingIntelligenceEnvelope
from ti_core.errors import InvalidStateError

ARENA = "tests.arena_fixtures:counting_arena"
DAY = "2026-05-11"


class Spies:
    """How often each spied function ran (each spy calls the function it wraps)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        decision_json = wire._DECISION_JSON

        def decision_spy(*args: Any, **kwargs: Any) -> bytes:
            self.calls["decision"] += 1
            return decision_json(*args, **kwargs)

        monkeypatch.setattr(wire, "_DECISION_JSON", decision_spy)
        model = TradingIntelligenceEnvelope
        dump, validate = model.model_dump_json, model.model_validate_json.__func__  # type: ignore[attr-defined]

        def dump_spy(self_: Any, *args: Any, **kwargs: Any) -> str:
            self.calls["model_dump_json"] += 1
            return dump(self_, *args, **kwargs)

        def validate_spy(cls: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls["model_validate_json"] += 1
            return validate(cls, *args, **kwargs)

        monkeypatch.setattr(model, "model_dump_json", dump_spy)
        monkeypatch.setattr(model, "model_validate_json", classmethod(validate_spy))
        loads = json.loads

        def loads_spy(text: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(text, str | bytes) and '"schema_version"' in str(text)[:40]:
                self.calls["json.loads"] += 1
            return loads(text, *args, **kwargs)

        monkeypatch.setattr(json, "loads", loads_spy)

    @property
    def serialised(self) -> int:
        """Envelopes (their decisions) turned into JSON: through ``wire`` or around it."""
        return self.calls["decision"] + self.calls["model_dump_json"]

    @property
    def parsed(self) -> int:
        """Envelope texts parsed: by pydantic (``wire.parse`` is one) or as plain JSON."""
        return self.calls["model_validate_json"] + self.calls["json.loads"]

    def through_wire(self) -> bool:
        """Every conversion went through ``ti_core.contract.wire``'s serialiser and pydantic's
        parser (v1 envelopes never need ``model_dump_json``, nor a plain ``json.loads``)."""
        return self.calls["model_dump_json"] == 0 and self.calls["json.loads"] == 0


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spies]:
    yield Spies(monkeypatch)


@pytest.fixture
def server(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    monkeypatch.setenv("TI_REDIS_URL", redis_url)
    monkeypatch.delenv("TI_TEST_ARENA_FAIL", raising=False)
    monkeypatch.delenv("TI_TEST_ARENA_LOG", raising=False)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def _payloads(client: redis.Redis) -> list[str]:
    return [fields["data"] for _, fields in client.xrange(DEFAULT_STREAM_NAME)]


def _published_as_serialised(client: redis.Redis, payloads: list[str]) -> None:
    """Each payload is what ``serialise`` makes of its envelope, and its hash holds it too."""
    for payload in payloads:
        envelope = wire.parse(payload)
        assert payload == wire.serialise(envelope)[0]
        target = envelope.decision.target
        stored = client.hget(decision_hash_key(target.ticker, target.trade_date), "json")
        assert stored == payload


# Parses per decision through the pipeline: publish-stream, publish-hash, the flow's row/card.
PARSES_PER_DECISION = 3


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_publish_decision_serialises_once_and_each_step_parses_once(
    prefect_harness: None, server: redis.Redis, spies: Spies
) -> None:
    from flows.pipeline import publish_decision

    row = await publish_decision("NVDA", DAY, arena=ARENA)
    assert row["status"] == "published"
    assert (spies.serialised, spies.parsed) == (1, PARSES_PER_DECISION), spies.calls
    assert spies.through_wire(), spies.calls
    payloads = _payloads(server)
    assert [wire.parse(p).correlation_id for p in payloads] == [row["correlation_id"]]
    _published_as_serialised(server, payloads)


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_daily_serialises_once_per_decision(
    prefect_harness: None, server: redis.Redis, spies: Spies
) -> None:
    from flows.pipeline import daily

    result = await daily(["NVDA", "AAPL", "MSFT"], DAY, arena=ARENA)
    assert [r["status"] for r in result["rows"]] == ["published"] * 3
    assert (spies.serialised, spies.parsed) == (3, 3 * PARSES_PER_DECISION), spies.calls
    assert spies.through_wire(), spies.calls
    _published_as_serialised(server, _payloads(server))


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_backfill_serialises_once_per_decision_and_never_parses(
    prefect_harness: None, server: redis.Redis, spies: Spies, tmp_path: Path
) -> None:
    from flows.backfill import backfill

    days = ["2026-04-06", "2026-04-07", "2026-04-08"]
    replay = write_replay_dir(tmp_path / "replay", ["NVDA", "AAPL"], days)
    summary = await backfill(["NVDA", "AAPL"], days[0], days[-1], f"replay:{replay}")
    assert summary.published == 6
    assert (spies.serialised, spies.parsed) == (6, 0), spies.calls
    assert spies.through_wire(), spies.calls
    assert len(_payloads(server)) == 6


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_a_retried_flow_run_publishes_the_cached_text_without_serialising_it(
    prefect_harness: None, server: redis.Redis, spies: Spies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVDA's envelope text comes back from Prefect's result storage and is parsed by each
    step as on the first run, never serialised again; AMD's is new."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from flows.pipeline import daily

    monkeypatch.setenv("TI_TEST_ARENA_FAIL", "AMD")
    first = await daily(["NVDA", "AMD"], "2026-05-13", arena=ARENA, return_state=True)
    assert first.is_failed()
    assert (spies.serialised, spies.parsed) == (1, PARSES_PER_DECISION), spies.calls
    spies.calls.clear()
    monkeypatch.delenv("TI_TEST_ARENA_FAIL")
    async with get_client() as client:
        await client.set_flow_run_state(first.state_details.flow_run_id, Scheduled(), force=True)
        flow_run = await client.read_flow_run(first.state_details.flow_run_id)
    retried = await run_flow(
        daily, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )
    result = await retried.result()
    assert {r["ticker"]: r["status"] for r in result["rows"]} == {
        "NVDA": "published",  # by the first attempt of this flow run
        "AMD": "published",
    }
    assert (spies.serialised, spies.parsed) == (1, 2 * PARSES_PER_DECISION), spies.calls
    assert spies.through_wire(), spies.calls
    _published_as_serialised(server, _payloads(server))


async def test_a_publish_task_refuses_an_envelope_its_run_is_not_named_after(
    sample_states: dict[str, Any],
) -> None:
    """The publish tasks' runs are named from their ticker and date arguments, so those must
    be the envelope's; checked before Redis is touched."""
    from flows.tasks import publish_hash, publish_stream
    from ti_core.build.builder import build_envelope_from_state

    text, _ = wire.serialise(build_envelope_from_state(sample_states["nvda-2026-05-11-full"]))
    for step in (publish_stream, publish_hash):
        with pytest.raises(InvalidStateError, match="is for NVDA 2026-05-11, not AAPL"):
            await step.fn(text, "AAPL", "2026-05-11")


async def test_the_cores_paths_serialise_each_envelope_once(
    fake_redis: Any, sample_states: dict[str, Any], spies: Spies
) -> None:
    """publish_envelope then publish_decision_hash (the stream-then-hash path) given one
    ``Serialised``, and publish_many (entry and hash together): one serialisation per
    envelope, no parse. Given a bare envelope, each call serialises it itself."""
    from ti_core.build.builder import build_envelope_from_state
    from ti_core.publish.publisher import publish_decision_hash, publish_envelope, publish_many

    state = sample_states["nvda-2026-05-11-full"]
    one = wire.Serialised.of(build_envelope_from_state(state))
    await publish_envelope(fake_redis, DEFAULT_STREAM_NAME, one)
    await publish_decision_hash(fake_redis, one)
    assert (spies.serialised, spies.parsed) == (1, 0), spies.calls
    spies.calls.clear()
    await publish_decision_hash(fake_redis, one.envelope)
    assert (spies.serialised, spies.parsed) == (1, 0), spies.calls
    spies.calls.clear()
    many = [
        build_envelope_from_state({**state, "target": {"ticker": t, "trade_date": DAY}})
        for t in ("AAPL", "MSFT", "AMD", "TSLA")
    ]
    assert len(await publish_many(fake_redis, many)) == 4
    assert (spies.serialised, spies.parsed) == (4, 0), spies.calls
    assert spies.through_wire(), spies.calls
