"""Stream payload -> envelope, or ``None`` with one warning line. It never raises.

A trading engine's loop must survive whatever is on the stream: a v2 envelope, bad JSON,
bytes that are not UTF-8, a JSON array, a huge or deeply nested document, a non-string.
The valid path is one Rust-side parse and validation; only a payload that fails it is
parsed again to say why, checking ``schema_version`` before the body as the contract asks
(a payload without one is not v1, although the model would default it).

It accepts exactly what the published JSON Schema accepts (``ti_core.contract.schema``):
strict types (no numbers as strings), every field present, the documented formats
(``_WireEnvelope``, then ``_wire_problem``); timestamps come out timezone-aware, in UTC.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Union

import pydantic_core
from pydantic import BeforeValidator, Field, ValidationError
from typing_extensions import TypeAliasType

from ti_core.contract.keys import CORRELATION_ID_PATTERN, TICKER_PATTERN, shorten
from ti_core.contract.models import (
    SCHEMA_VERSION,
    TRADE_DATE_PATTERN,
    UTC_TIMESTAMP_PATTERN,
    AgentSignalView,
    MarketMindDecision,
    SourceMetricsSummary,
    SynthesisView,
    TargetView,
    TradingIntelligenceEnvelope,
)
from ti_core.errors import one_line

__all__ = ["MAX_PAYLOAD_BYTES", "decode_envelope", "explain_payload"]

logger = logging.getLogger("ti_core.decoder")  # its name before the move

# Far above the builder's 64 KiB cap: a foreign publisher may be larger, but not unbounded.
MAX_PAYLOAD_BYTES = 1024 * 1024


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if any(err["type"] == "finite_number" for err in errors):  # NaN in meta: not a union
            errors = [err for err in errors if err["type"] == "finite_number"]  # of 6 errors
            errors[0]["loc"] = tuple(p for p in errors[0]["loc"] if p != "float")
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{where[:120]}: {first['msg']}{more}"
    return one_line(exc, 200, typed=False)


_UTC_RE = re.compile(UTC_TIMESTAMP_PATTERN)
_TICKER_RE = re.compile(TICKER_PATTERN)
_CID_RE = re.compile(CORRELATION_ID_PATTERN)
_DATE_RE = re.compile(TRADE_DATE_PATTERN)


def _utc_timestamp(value: Any) -> datetime:
    """A UTC timestamp as the schema says (parsed here: pydantic's parser takes more forms)."""
    if type(value) is not str or not _UTC_RE.search(value):
        raise ValueError("must be an ISO-8601 UTC timestamp ending Z or +00:00")
    return datetime.fromisoformat(value).astimezone(UTC)


def _integral(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _integral_counts_only(exc: ValidationError) -> bool:
    """Every error is a source-metric count written as ``3.0``: an integer to JSON Schema,
    though strict validation refuses it (rare: the publisher writes ``3``)."""
    errors = exc.errors()
    return bool(errors) and all(
        err["type"] == "int_type"
        and err["loc"][:2] == ("decision", "source_metrics")
        and type(err["input"]) is float
        and err["input"].is_integer()
        for err in errors
    )


def _with_integral_counts(payload: str | bytes) -> _WireEnvelope:
    """``payload`` validated again with its integral float counts made integers."""
    document = pydantic_core.from_json(payload)
    metrics = document["decision"]["source_metrics"]
    for key, value in metrics.items():
        metrics[key] = _integral(value)
    by_source = metrics.get("by_source")
    if type(by_source) is dict:
        for key, value in by_source.items():
            by_source[key] = _integral(value)
    return _WireEnvelope.model_validate(document, strict=True)


# JSON values without NaN or infinity (RFC 8259 has none; a schema-checking consumer's parser
# refuses them, pydantic's and Python's accept them): ``meta`` and ``phase_timings`` on the wire.
if TYPE_CHECKING:  # mypy cannot follow the recursive alias; pydantic needs it at run time
    _JsonValue = Any
else:
    _JsonValue = TypeAliasType(
        "_JsonValue",
        Union[  # noqa: UP007 - the recursive alias needs the Union form
            None,
            bool,
            int,
            Annotated[float, Field(allow_inf_nan=False)],
            str,
            list["_JsonValue"],
            dict[str, "_JsonValue"],
        ],
    )


class _WireDecision(MarketMindDecision):
    """The decision as the decoder validates it; it leaves as a ``MarketMindDecision``."""

    __slots__ = ()
    phase_timings: list[dict[str, _JsonValue]] = Field(default_factory=list)


class _WireEnvelope(TradingIntelligenceEnvelope):
    """The envelope as the decoder validates it (strict): what the publisher's models take
    from a Python caller, narrowed to what the wire may hold. Same fields and layout, so a
    validated one becomes a ``TradingIntelligenceEnvelope`` by ``__class__`` assignment, as
    the builder's shells do (``ti_core.build._fast``)."""

    __slots__ = ()
    decision: _WireDecision
    meta: dict[str, _JsonValue] = Field(default_factory=dict)
    published_at: Annotated[datetime, BeforeValidator(_utc_timestamp)] = Field(
        default_factory=lambda: datetime.now(UTC)
    )


def _as_public(wire: _WireEnvelope) -> TradingIntelligenceEnvelope:
    object.__setattr__(wire.decision, "__class__", MarketMindDecision)
    object.__setattr__(wire, "__class__", TradingIntelligenceEnvelope)
    return wire


_FIELD_COUNTS = {
    model: len(model.model_fields)
    for model in (
        TradingIntelligenceEnvelope,
        MarketMindDecision,
        TargetView,
        SynthesisView,
        SourceMetricsSummary,
        AgentSignalView,
    )
}


def _complete(model: Any) -> bool:
    """Every field of ``model`` was in the payload (none left to its default)."""
    return len(model.__pydantic_fields_set__) == _FIELD_COUNTS[type(model)]


def _first_missing(envelope: TradingIntelligenceEnvelope) -> str:
    """Where the first field left to its default is, and which fields it lacks."""
    decision = envelope.decision
    parts: list[tuple[Any, str]] = [
        (envelope, "body"),
        (decision, "decision"),
        (decision.target, "decision.target"),
        (decision.synthesis, "decision.synthesis"),
        (decision.source_metrics, "decision.source_metrics"),
    ]
    parts += [(s, f"decision.agent_signals.{i}") for i, s in enumerate(decision.agent_signals)]
    for model, where in parts:
        if not _complete(model):
            fields = type(model).model_fields
            absent = [name for name in fields if name not in model.model_fields_set]
            return f"{where}: missing field(s) {', '.join(absent)}"
    return ""


def _wire_problem(envelope: TradingIntelligenceEnvelope) -> str:
    """What the JSON Schema refuses in an envelope pydantic accepted (``_WireEnvelope``), or
    ``""``: a field left to its default, the formats of the ids and dates."""
    decision = envelope.decision
    target = decision.target
    if not (
        _complete(envelope)
        and _complete(decision)
        and _complete(target)
        and _complete(decision.synthesis)
        and _complete(decision.source_metrics)
        and all(map(_complete, decision.agent_signals))
    ):
        return _first_missing(envelope)
    if not _CID_RE.search(envelope.correlation_id):
        return f"correlation_id: {shorten(envelope.correlation_id, 40)} is not 32 lowercase hex"
    if not _TICKER_RE.search(target.ticker):
        return f"decision.target.ticker: {shorten(target.ticker, 40)} is not on the allow-list"
    if not _DATE_RE.search(target.trade_date):
        return f"decision.target.trade_date: {shorten(target.trade_date, 40)} is not YYYY-MM-DD"
    try:
        date.fromisoformat(target.trade_date)
    except ValueError:
        return f"decision.target.trade_date: {target.trade_date!r} is not a real date"
    return ""


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


def _accepted(
    envelope: TradingIntelligenceEnvelope,
) -> tuple[TradingIntelligenceEnvelope | None, str]:
    """An envelope pydantic accepted, if the wire's other rules hold too."""
    if "schema_version" not in envelope.model_fields_set:  # defaulted: a payload without one
        return None, f"unknown schema_version=None (this consumer speaks v{SCHEMA_VERSION})"
    problem = _wire_problem(envelope)
    if problem:
        return None, f"validation failed: {problem}"
    return envelope, ""


def _validated(payload: str | bytes) -> tuple[Any, ValidationError | None]:
    """The wire envelope in ``payload`` as the public model, or the validation's failure."""
    try:
        return _as_public(_WireEnvelope.model_validate_json(payload, strict=True)), None
    except ValidationError as exc:
        if not _integral_counts_only(exc):
            return None, exc
    try:
        return _as_public(_with_integral_counts(payload)), None
    except ValidationError as exc:
        return None, exc


def _diagnose(payload: Any) -> tuple[TradingIntelligenceEnvelope | None, str]:
    try:
        if isinstance(payload, memoryview | bytearray):
            payload = bytes(payload)
        if not isinstance(payload, str | bytes):
            return None, f"payload is a {type(payload).__name__}, not str or bytes"
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None, f"payload is {len(payload)} long, over the {MAX_PAYLOAD_BYTES} cap"
        envelope, first_failure = _validated(payload)
        if first_failure is None:
            return _accepted(envelope)
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
