"""``decode_envelope``: an envelope, or ``None`` after exactly one warning line; never raises."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from ti_core import build_envelope_from_state, decode_envelope
from ti_core.contract.decoder import MAX_PAYLOAD_BYTES, explain_payload
from ti_core.contract.models import TradingIntelligenceEnvelope

ENVELOPE = build_envelope_from_state(
    {
        "target": {"ticker": "NVDA", "trade_date": "2026-05-11"},
        "synthesis_verdict": "BUY",
        "synthesis_confidence": 0.78,
        "synthesis_score": 0.41,
    },
    correlation_id="0123456789abcdef0123456789abcdef",
    published_at=datetime(2026, 5, 11, 21, 30, tzinfo=UTC),
)
PAYLOAD = ENVELOPE.model_dump_json()


def skipped(payload: Any, caplog: pytest.LogCaptureFixture, *words: str) -> str:
    """Decode ``payload``: expect None and one single-line warning holding every word."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ti_core.decoder"):
        assert decode_envelope(payload) is None
    records = [r for r in caplog.records if r.name == "ti_core.decoder"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    line = records[0].getMessage()
    assert "\n" not in line and "\r" not in line
    for word in words:
        assert word in line, (word, line)
    _, reason = explain_payload(payload)
    assert reason and reason in line
    return line


def body(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(PAYLOAD)
    document.update(changes)
    return document


@pytest.mark.parametrize(
    "payload",
    [
        PAYLOAD,
        PAYLOAD.encode(),
        bytearray(PAYLOAD.encode()),
        memoryview(PAYLOAD.encode()),
    ],
)
def test_valid_payload_in_any_buffer_type(payload: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert decode_envelope(payload) == ENVELOPE
    assert caplog.records == []
    assert explain_payload(payload) == (ENVELOPE, "")


def test_reference_payloads_decode() -> None:
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "reference_expectations.json").read_text())
    for case in data["cases"].values():
        envelope = decode_envelope(case["hash"]["json"])
        assert isinstance(envelope, TradingIntelligenceEnvelope)
        assert json.loads(envelope.model_dump_json()) == case["envelope"]


def test_non_utf8_bytes(caplog: pytest.LogCaptureFixture) -> None:
    skipped(b"\xff\xfe{not utf-8", caplog, "not UTF-8")
    skipped(PAYLOAD.encode()[:-2] + b"\xff}", caplog, "not UTF-8")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("[1, 2]", "list"),
        ("null", "NoneType"),
        ('"a string"', "str"),
        ("42", "int"),
        ("4.5", "float"),
        ("true", "bool"),
        ("NaN", "float"),
    ],
)
def test_json_that_is_not_an_object(
    payload: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    skipped(payload, caplog, "not an object", kind)


@pytest.mark.parametrize("payload", ["", "{", "{'a': 1}", "nan", '{"a": }', "\x00"])
def test_malformed_json(payload: str, caplog: pytest.LogCaptureFixture) -> None:
    skipped(payload, caplog, "malformed JSON")


def test_deep_nesting(caplog: pytest.LogCaptureFixture) -> None:
    skipped("[" * 100_000 + "]" * 100_000, caplog)
    skipped('{"a":' * 100_000 + "1" + "}" * 100_000, caplog)
    skipped(
        json.dumps(body(meta={"x": 1}))[:-2] + ',"deep":' + "[" * 50_000 + "]" * 50_000 + "}}",
        caplog,
    )


def test_payload_over_one_mebibyte(caplog: pytest.LogCaptureFixture) -> None:
    big = json.dumps(body(meta={"pad": "x" * MAX_PAYLOAD_BYTES}))
    skipped(big, caplog, "over the", str(MAX_PAYLOAD_BYTES))
    skipped(big.encode(), caplog, "over the")


@pytest.mark.parametrize("version", ["2", 2, 1, None, "1.0", ["1"]])
def test_unknown_schema_version(version: Any, caplog: pytest.LogCaptureFixture) -> None:
    skipped(json.dumps(body(schema_version=version)), caplog, "schema_version", repr(version))


def test_missing_schema_version(caplog: pytest.LogCaptureFixture) -> None:
    document = body()
    del document["schema_version"]
    skipped(json.dumps(document), caplog, "schema_version=None")


def test_version_is_checked_before_the_body(caplog: pytest.LogCaptureFixture) -> None:
    """A v2 envelope whose body is not v1-valid reports the version, not a validation error."""
    v2 = {"schema_version": "2", "arena": "something_else", "decision": "a new shape"}
    line = skipped(json.dumps(v2), caplog, "schema_version='2'")
    assert "validation" not in line


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"decision": {"target": json.loads(PAYLOAD)["decision"]["target"]}}, "decision.synthesis"),
        ({"arena": "other"}, "arena"),
        ({"published_at": "yesterday"}, "published_at"),
    ],
)
def test_body_failing_validation(
    changes: dict[str, Any], where: str, caplog: pytest.LogCaptureFixture
) -> None:
    skipped(json.dumps(body(**changes)), caplog, "validation failed", where)


def test_out_of_range_values_fail_validation(caplog: pytest.LogCaptureFixture) -> None:
    document = body()
    document["decision"]["synthesis"]["confidence"] = 85
    skipped(json.dumps(document), caplog, "decision.synthesis.confidence")
    document["decision"]["synthesis"]["confidence"] = float("nan")
    skipped(json.dumps(document), caplog, "decision.synthesis.confidence")


def test_warning_stays_on_one_line_with_hostile_keys(caplog: pytest.LogCaptureFixture) -> None:
    document = body()
    document["decision"]["source_metrics"]["by_source"] = {"evil\nkey\r\x1b[31m": "not-int"}
    line = skipped(json.dumps(document), caplog, "by_source")
    assert "\x1b" not in line and line.isprintable()


@pytest.mark.parametrize("payload", [None, 42, 4.2, {"schema_version": "1"}, ["x"], object(), True])
def test_non_string_inputs(payload: Any, caplog: pytest.LogCaptureFixture) -> None:
    skipped(payload, caplog, "not str or bytes", type(payload).__name__)


class ExplodingStr(str):
    def __len__(self) -> int:
        raise RuntimeError("no")


def test_hostile_string_subclass(caplog: pytest.LogCaptureFixture) -> None:
    skipped(ExplodingStr(PAYLOAD), caplog, "undecodable")


def test_lone_surrogate_in_a_str(caplog: pytest.LogCaptureFixture) -> None:
    skipped('{"schema_version": "1", "x": "\ud800"}', caplog)


def test_extra_fields_are_ignored() -> None:
    document = body(new_optional_field={"a": 1})
    document["decision"]["target"]["venue"] = "XNAS"
    assert decode_envelope(json.dumps(document)) == ENVELOPE
