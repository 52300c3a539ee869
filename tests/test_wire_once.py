"""The envelope is serialised once per decision and never parsed back, on every publishing path.

Counted by spies that wrap (and call) the real functions: ``ti_core.contract.wire.serialise`` (the
only
place an envelope becomes JSON), ``ti_core.contract.wire.parse`` (the only place JSON becomes an
envelope again), and, to catch a path that goes around them, every
``TradingIntelligenceEnvelope.model_dump_json`` / ``model_validate_json`` call and every
``json.loads`` of an envelope's text. The flows run under the session's Prefect harness
against a real redis-server.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.backfill_replay import write_replay_dir
from ti_core.contract import wire
from ti_core.contract.keys import DEFAULT_STREAM_NAME
from ti_core.contract.models import TradingIntelligenceEnvelope

ARENA = "tests.arena_fixtures:counting_arena"
DAY = "2026-05-11"


class Spies:
    """How often each spied function ran (each spy calls the function it wraps)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        self._wrap(monkeypatch, wire, "serialise", "serialise")
        self._wrap(monkeypatch, wire, "parse", "parse")
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

    def _wrap(self, mp: pytest.MonkeyPatch, module: Any, name: str, label: str) -> None:
        real: Callable[..., Any] = getattr(module, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls[label] += 1
            return real(*args, **kwargs)

        mp.setattr(module, name, spy)

    @property
    def serialised(self) -> int:
        """Envelopes turned into JSON: by ``wire.serialise`` or around it."""
        return self.calls["serialise"] + self.calls["model_dump_json"]

    @property
    def parsed(self) -> int:
        """Envelope texts parsed: by pydantic (``wire.parse`` is one) or as plain JSON."""
        return self.calls["model_validate_json"] + self.calls["json.loads"]

    def through_wire(self) -> bool:
        """Every conversion went through ``ti_core.contract.wire`` (v1 envelopes never need
        ``model_dump_json``)."""
        return self.calls["model_dump_json"] == 0 and self.parsed == self.calls["parse"]


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


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_publish_decision_serialises_once_and_never_parses(
    prefect_harness: None, server: redis.Redis, spies: Spies
) -> None:
    from flows.pipeline import publish_decision

    row = await publish_decision("NVDA", DAY, arena=ARENA)
    assert row["status"] == "published"
    assert (spies.serialised, spies.parsed) == (1, 0), spies.calls
    assert spies.through_wire(), spies.calls
    (payload,) = _payloads(server)
    assert json.loads(payload)["correlation_id"] == row["correlation_id"]


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_daily_serialises_once_per_decision(
    prefect_harness: None, server: redis.Redis, spies: Spies
) -> None:
    from flows.pipeline import daily

    result = await daily(["NVDA", "AAPL", "MSFT"], DAY, arena=ARENA)
    assert [r["status"] for r in result["rows"]] == ["published"] * 3
    assert (spies.serialised, spies.parsed) == (3, 0), spies.calls
    assert spies.through_wire(), spies.calls
    assert len(_payloads(server)) == 3


@pytest.mark.prefect
@pytest.mark.redis_server
async def test_backfill_serialises_once_per_decision(
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
async def test_a_retried_flow_run_parses_the_cached_envelope_once_and_never_reserialises_it(
    prefect_harness: None, server: redis.Redis, spies: Spies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVDA's envelope comes back from Prefect's result storage as text and digest: parsed
    once (for the row, the card and both publish tasks), not serialised; AMD's is new."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from flows.pipeline import daily

    monkeypatch.setenv("TI_TEST_ARENA_FAIL", "AMD")
    first = await daily(["NVDA", "AMD"], "2026-05-13", arena=ARENA, return_state=True)
    assert first.is_failed()
    assert (spies.serialised, spies.parsed) == (1, 0), spies.calls
    assert spies.through_wire(), spies.calls
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
    assert (spies.serialised, spies.parsed) == (1, 1), spies.calls
    assert spies.through_wire(), spies.calls


def test_envelope_json_pickles_as_text_and_digest(sample_states: dict[str, Any]) -> None:
    import pickle

    from ti_core.build.builder import build_envelope_from_state

    envelope = build_envelope_from_state(sample_states["nvda-2026-05-11-full"])
    text = wire.wire_form(envelope)
    assert text == envelope.model_dump_json() and text.envelope is envelope
    restored = pickle.loads(pickle.dumps(text))
    assert type(restored) is wire.EnvelopeJson and restored == text
    assert restored.envelope is None and restored.digest == wire.content_digest(envelope)
    assert wire.envelope_of(restored) == envelope  # parsed once, then carried
    assert wire.payload_and_digest(restored.envelope) == (str(text), text.digest)


async def test_the_cores_paths_serialise_each_envelope_once(
    fake_redis: Any, sample_states: dict[str, Any], spies: Spies
) -> None:
    """publish_envelope then publish_decision_hash (the stream-then-hash path), and
    publish_many (entry and hash together): one serialisation per envelope, no parse."""
    from ti_core.build.builder import build_envelope_from_state
    from ti_core.publish.publisher import publish_decision_hash, publish_envelope, publish_many

    state = sample_states["nvda-2026-05-11-full"]
    one = build_envelope_from_state(state)
    await publish_envelope(fake_redis, DEFAULT_STREAM_NAME, one)
    await publish_decision_hash(fake_redis, one)
    assert (spies.serialised, spies.parsed) == (1, 0), spies.calls
    spies.calls.clear()
    many = [
        build_envelope_from_state({**state, "target": {"ticker": t, "trade_date": DAY}})
        for t in ("AAPL", "MSFT", "AMD", "TSLA")
    ]
    assert len(await publish_many(fake_redis, many)) == 4
    assert (spies.serialised, spies.parsed) == (4, 0), spies.calls
    assert spies.through_wire(), spies.calls
