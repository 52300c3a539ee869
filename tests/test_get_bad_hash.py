"""Bad data read back from a lookup hash: ``ti get`` says what is wrong in one line, exit 1,
and ``ti verify`` lists the hash. The hashes are damaged in the embedded store, where
``ti get`` reads them; :func:`explain_hash` is also checked on every client kind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tests.store_damage import publish_store, single_error_line
from ti_core import TiSettings, connect
from ti_core.consume.lookup import explain_hash, read_decision
from ti_core.consume.reader import get_decision
from ti_core.contract.keys import decision_hash_key

KEY = decision_hash_key("T1", "2026-01-05")


def _bad_json(fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "json": fields["json"][:-5]}


def _without(name: str) -> Any:
    return lambda fields: {k: v for k, v in fields.items() if k != name}


def _with(name: str, value: str) -> Any:
    return lambda fields: {**fields, name: value}


def _json_lacking_decision(fields: dict[str, str]) -> dict[str, str]:
    envelope = json.loads(fields["json"])
    del envelope["decision"]["synthesis"]
    return {**fields, "json": json.dumps(envelope)}


def _json_with_unknown_version(fields: dict[str, str]) -> dict[str, str]:
    envelope = json.loads(fields["json"])
    envelope["schema_version"] = "2"
    return {**fields, "json": json.dumps(envelope)}


DAMAGES: dict[str, tuple[Any, str]] = {
    "bad JSON": (_bad_json, "its json field is unreadable: malformed JSON"),
    "json lacks a field": (_json_lacking_decision, "validation failed: decision.synthesis"),
    "unknown schema": (_json_with_unknown_version, "unknown schema_version"),
    "no json field": (_without("json"), "it has no json field"),
    "no confidence field": (_without("confidence"), "lacks the field(s) confidence"),
    "empty confidence": (_with("confidence", ""), "confidence is '', not a number"),
    "non-numeric score": (_with("ensemble_score", "high"), "ensemble_score is 'high'"),
    "infinite score": (_with("ensemble_score", "inf"), "not a finite number"),
    "verdict disagrees": (_with("verdict", "SELL"), "its verdict field is 'SELL'"),
    "ticker disagrees": (_with("ticker", "T2"), "its ticker field is 'T2'"),
}


async def _rewrite(data_dir: Path, change: Any) -> None:
    async with connect(settings=TiSettings(data_dir=data_dir)) as client:
        raw = await client.hgetall(KEY)
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        await client.delete(KEY)
        if change == "string":
            await client.set(KEY, "not a hash")
        else:
            await client.hset(KEY, mapping=change(fields))


@pytest.mark.parametrize("damage", [*DAMAGES, "wrong key type"])
def test_ti_get_reports_a_damaged_hash_in_one_line_and_verify_lists_it(
    tmp_path: Path,
    damage: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "ti-data"
    publish_store(data_dir, 3)
    change, expected = DAMAGES.get(damage, ("string", "holds another type than a hash"))
    asyncio.run(_rewrite(data_dir, change))
    monkeypatch.setenv("TI_DATA_DIR", str(data_dir))
    for args in (["get", "T1", "2026-01-05"], ["get", "T1", "2026-01-05", "--json"]):
        assert main(args) == 1
        line = single_error_line(capsys.readouterr().err)
        assert KEY in line and expected in line, line
    assert main(["verify"]) == 2
    report = capsys.readouterr().out
    assert "undecodable_hash: 1" in report and KEY in report, report
    assert main(["get", "T0", "2026-01-05"]) == 0  # the others still read


async def test_get_decision_returns_none_with_the_reason_logged(
    r: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await r.hset(KEY, mapping={"json": "{", "ticker": "T1"})
    assert await get_decision(r, "T1", "2026-01-05") is None
    assert "malformed JSON" in caplog.text
    assert (await read_decision(r, "T1", "2026-01-09")).problem == ""  # absent: no problem


def test_explain_hash_never_raises_on_hostile_values() -> None:
    class Hostile(bytes):
        def decode(self, *args: Any) -> str:
            raise RuntimeError("no")

    for raw in ({b"json": b"\xff\xfe"}, {b"json": Hostile(b"x")}, {1: 2}, {"json": None}):
        found = explain_hash(KEY, raw)
        assert found.envelope is None and found.problem, raw
