"""ti_core.contract.hash_fields: the one list of lookup-hash fields, and what is generated from
it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.publish_workload import envelope, read_hash
from tests.test_wire_shape import CONTRACT_HASH_FIELDS
from ti_core import DEFAULT_STREAM_NAME
from ti_core.consume import lookup
from ti_core.contract import hash_fields as hf
from ti_core.publish.publisher import publish_decision_hash, publish_envelope, publish_many
from ti_core.publish.scripts import ARGV_FIELDS, SCRIPTS, argv


def test_the_contract_fields_are_the_nine_of_v1_and_two_are_added() -> None:
    """Pinned against the wire-shape test's copy, taken from the reference implementation."""
    assert len(set(hf.CONTRACT_FIELDS)) == len(hf.CONTRACT_FIELDS) == 9
    assert set(hf.CONTRACT_FIELDS) == CONTRACT_HASH_FIELDS
    assert hf.FIELDS == (*hf.CONTRACT_FIELDS, "entry_id", "published_ts")
    assert set(hf.NUMBER_FIELDS) <= set(hf.FLAT_FIELDS)
    assert lookup.REQUIRED_FIELDS == hf.CONTRACT_FIELDS


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_hash_writing_script_names_every_field_once(name: str) -> None:
    script = SCRIPTS[name]
    written = re.findall(r"redis\.call\('HSET', kh, (.*)\)", script)
    if name == "stream":
        assert written == []  # the entry alone
        return
    (call,) = written
    assert re.findall(r"'([a-z_]+)', ", call + ", ") == list(hf.FIELDS)


def test_scripts_read_no_argument_beyond_the_layout() -> None:
    for script in SCRIPTS.values():
        used = {int(n) for n in re.findall(r"ARGV\[a \+ (\d+)\]", script)}
        assert used and max(used) <= len(ARGV_FIELDS)
    assert f"local a = i * {len(ARGV_FIELDS)}" in SCRIPTS["batch"]


def test_argv_carries_each_flat_field_at_its_place() -> None:
    env = envelope("NVDA", "2026-05-11")
    named = dict(zip(ARGV_FIELDS, argv(env, "{}", "d", 60, True), strict=True))
    assert {k: named[k] for k in hf.FLAT_FIELDS} == hf.flat_values(env)
    assert named["force"] == "1" and named["published_ts"] == hf.published_ts(env)


@pytest.mark.parametrize("how", ["batch", "entry-then-hash"])
async def test_what_the_scripts_write_is_exactly_the_list(r: Any, how: str) -> None:
    env = envelope("AAPL", "2026-05-12")
    if how == "batch":
        await publish_many(r, [env])
    else:
        await publish_envelope(r, DEFAULT_STREAM_NAME, env)
        assert await read_hash(r, env) == {}
        await publish_decision_hash(r, env)
    fields = await read_hash(r, env)
    assert sorted(fields) == sorted(hf.FIELDS)
    expected = hf.hash_fields(env, env.model_dump_json())
    assert {k: fields[k] for k in expected} == expected
