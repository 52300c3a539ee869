"""Stream payload -> envelope, or ``None`` with one warning line. It never raises.

A trading engine's loop must survive whatever is on the stream: a v2 envelope, bad JSON,
bytes that are not UTF-8, a JSON array, a huge or deeply nested document, a non-string.
The valid path is one Rust-side parse and validation; only a payload that fails it is
parsed again to say why, checking ``schema_version`` before the body as the contract asks
(a payload without one is not v1, although the model would default it).

It accepts exactly what the published JSON Schema accepts (``ti_core.contract.schema``):
strict types (no numbers as strings), every field present, the documented formats
(:data:`ti_core.contract.models.WIRE`); timestamps come out timezone-aware, in UTC.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic_core
from pydantic import ValidationError

from ti_core.contract.keys import shorten
from ti_core.contract.models import SCHEMA_VERSION, WIRE, TradingIntelligenceEnvelope
from ti_core.errors import one_line

__all__ = ["MAX_PAYLOAD_BYTES", "decode_envelope", "explain_payload"]

logger = logging.getLogger("ti_core.decoder")  # its name before the move

# Far above the builder's 64 KiB cap: a foreign publisher may be larger, but not unbounded.
MAX_PAYLOAD_BYTES = 1024 * 1024


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{where[:120]}: {first['msg']}{more}"
    return one_line(exc, 200, typed=False)


def _printable(text: str) -> str:
    """One line of printable text: keys from the payload may hold newlines or escapes."""
    text = " ".join(text.split())
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def explain_payload(payload: Any) -> tuple[TradingIntelligenceEnvelope | None, str]:
    """Decode like :func:`decode_envelope` but return the reason instead of logging it.

    The reason is ``""`` for a valid envelope, else one printable line. Dead-letter handling
    stores it.
    """
    return _explain(payload)


def _explain(payload: Any) -> tuple[TradingIntelligenceEnvelope | None, str]:
    try:
        envelope, reason = _diagnose(payload)
        if envelope is not None:
            return envelope, ""
        return None, _printable(reason)
    except Exception:  # a str subclass whose methods raise an exception whose str raises...
        return None, "undecodable payload"


def _diagnose(payload: Any) -> tuple[TradingIntelligenceEnvelope | None, str]:
    try:
        if isinstance(payload, memoryview | bytearray):
            payload = bytes(payload)
        if not isinstance(payload, str | bytes):
            return None, f"payload is a {type(payload).__name__}, not str or bytes"
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None, f"payload is {len(payload)} long, over the {MAX_PAYLOAD_BYTES} cap"
        try:
            envelope = TradingIntelligenceEnvelope.model_validate_json(
                payload, strict=True, context=WIRE
            )
        except ValidationError as exc:
            first_failure = exc
        else:  # the model defaults schema_version, but a payload without one is not v1
            if "schema_version" in envelope.model_fields_set:
                return envelope, ""
            return None, f"unknown schema_version=None (this consumer speaks v{SCHEMA_VERSION})"
        if isinstance(payload, bytes):
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return None, f"payload is not UTF-8: {_one_line(exc)}"
        try:
            head = pydantic_core.from_json(payload)
        except ValueError as exc:
            return None, f"malformed JSON: {_one_line(exc)}"
        if not isinstance(head, dict):
            return None, f"JSON is a {type(head).__name__}, not an object"
        version = head.get("schema_version")
        if version != SCHEMA_VERSION:
            return None, (
                f"unknown schema_version={shorten(version, 40)} "
                f"(this consumer speaks v{SCHEMA_VERSION})"
            )
        return None, f"validation failed: {_one_line(first_failure)}"
    except Exception as exc:  # the promise is "never raises": a last line of defence
        return None, f"undecodable payload ({type(exc).__name__}): {_one_line(exc)}"


def decode_envelope(payload: Any) -> TradingIntelligenceEnvelope | None:
    """Return the envelope in ``payload``, or ``None`` after one warning line saying why."""
    envelope, reason = _explain(payload)
    if envelope is None:
        logger.warning("decode_envelope: skipping entry: %s", reason)
    return envelope
