"""The v1 wire models: the exact JSON shape consumers read today (in full: docs/core.md).

Names and field order follow the original module so consumer code keeps working. Compared
with it, numbers must be finite and free text is bounded; anything the original's builder
produced from a sane state still validates. Changing or removing a field needs a
``schema_version`` bump; adding an optional one does not.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ti_core.contract.keys import CORRELATION_ID_PATTERN, TICKER_PATTERN

__all__ = [
    "SCHEMA_VERSION",
    "TRADE_DATE_PATTERN",
    "UTC_TIMESTAMP_PATTERN",
    "WIRE",
    "SUMMARY_MAX_CHARS",
    "KEY_FACTORS_MAX",
    "AgentSignalView",
    "Direction",
    "MarketMindDecision",
    "SourceMetricsSummary",
    "SynthesisView",
    "TargetView",
    "TradingIntelligenceEnvelope",
    "Verdict",
]

SCHEMA_VERSION: Final = "1"
SUMMARY_MAX_CHARS = 300
KEY_FACTORS_MAX = 10

Verdict = Literal["BUY", "HOLD", "SELL"]
Direction = Literal["BULLISH", "BEARISH", "NEUTRAL"]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Signed = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


TRADE_DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$(?!\n)"
"""``YYYY-MM-DD`` (and a real date: the schema adds ``format: date``)."""
UTC_TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|\+00:00)$(?!\n)"
)
"""An ISO-8601 UTC timestamp as the publisher writes it (``...T21:30:00Z``, a fraction of up
to six digits when there is one); ``+00:00`` is accepted too, nothing else."""

WIRE: Final = {"wire": True}
"""Validation context of wire input (the decoder): every field the publisher writes must be
present and the documented formats hold, as the JSON Schema says (``ti_core.contract.schema``).
Validate with it and ``strict=True``; without it the models stay as lenient as they were (the
builder makes them without validating, the publisher re-reads its own output)."""

_TICKER_RE = re.compile(TICKER_PATTERN)
_CID_RE = re.compile(CORRELATION_ID_PATTERN)
_DATE_RE = re.compile(TRADE_DATE_PATTERN)
_UTC_RE = re.compile(UTC_TIMESTAMP_PATTERN)


def _on_wire(info: ValidationInfo) -> bool:
    return info.context is WIRE


def _all_present(model: BaseModel, info: ValidationInfo) -> None:
    """On the wire, a field the publisher always writes is required, not defaulted."""
    if _on_wire(info) and len(model.model_fields_set) < len(type(model).model_fields):
        missing = [n for n in type(model).model_fields if n not in model.model_fields_set]
        raise ValueError(f"missing field(s) {', '.join(missing)}")


def _all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value``: JSON has none (RFC 8259), a schema-checking
    consumer's parser refuses them, though Python's and pydantic's accept them."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # NaN and +-inf
                return False
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return True


def _integral(value: Any) -> Any:
    """A JSON number without a fraction (``3.0``) is an integer, as JSON Schema counts it."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_correlation_id() -> str:
    return secrets.token_hex(16)  # 32 random hex chars, as uuid4().hex, in a quarter the time


class AgentSignalView(BaseModel):
    """One specialist agent's signal. Its narrative stays off the wire (it would 5-10x the size)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    agent: str
    domain: str
    signal: Direction
    confidence: Unit
    summary: str = Field(default="", max_length=SUMMARY_MAX_CHARS)
    key_factors: list[str] = Field(default_factory=list, max_length=KEY_FACTORS_MAX)

    @model_validator(mode="after")
    def _wire_complete(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        return self


class TargetView(BaseModel):
    """What was analysed: the (ticker, trade date) pair that keys the lookup hash."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ticker: str
    trade_date: str = ""
    exchange: str = ""
    asset_class: str = "equity"

    @model_validator(mode="after")
    def _wire_checked(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        if _on_wire(info):
            if not _TICKER_RE.search(self.ticker):
                raise ValueError(f"ticker {self.ticker[:40]!r} is not on the allow-list")
            if not _DATE_RE.search(self.trade_date):
                raise ValueError(f"trade_date {self.trade_date[:40]!r} is not YYYY-MM-DD")
            date.fromisoformat(self.trade_date)  # a real date: 2026-02-30 raises
        return self


class SynthesisView(BaseModel):
    """The synthesis agent's final verdict."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verdict: Verdict
    confidence: Unit
    ensemble_score: Signed
    reasoning: str = ""

    @model_validator(mode="after")
    def _wire_complete(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        return self


class SourceMetricsSummary(BaseModel):
    """Aggregated source-fetch stats for the run (no per-call detail)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    total_calls: Count = 0
    successful: Count = 0
    failed: Count = 0
    total_bytes: Count = 0
    by_source: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _wire_integers(cls, data: Any, info: ValidationInfo) -> Any:
        if _on_wire(info) and isinstance(data, dict):
            data = {k: _integral(v) for k, v in data.items()}
            by_source = data.get("by_source")
            if isinstance(by_source, dict):
                data["by_source"] = {k: _integral(v) for k, v in by_source.items()}
        return data

    @model_validator(mode="after")
    def _wire_complete(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        return self


class MarketMindDecision(BaseModel):
    """The per-(ticker, trade_date) decision: what trading strategies are written against."""

    model_config = ConfigDict(frozen=True)

    target: TargetView
    synthesis: SynthesisView
    agent_signals: list[AgentSignalView] = Field(default_factory=list)
    source_metrics: SourceMetricsSummary = Field(default_factory=SourceMetricsSummary)
    phase_timings: list[dict[str, Any]] = Field(default_factory=list)
    arena_total_seconds: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _wire_checked(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        if _on_wire(info) and not _all_finite(self.phase_timings):
            raise ValueError("phase_timings holds NaN or infinity, which JSON has not")
        return self


class TradingIntelligenceEnvelope(BaseModel):
    """The versioned envelope: one per stream entry (field ``data``) and lookup hash (``json``)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    arena: Literal["trading_intelligence"] = "trading_intelligence"
    decision: MarketMindDecision
    published_at: datetime = Field(default_factory=_utcnow)
    correlation_id: str = Field(default_factory=_new_correlation_id)
    arena_id: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("published_at", mode="before")
    @classmethod
    def _wire_timestamp(cls, value: Any, info: ValidationInfo) -> Any:
        if not _on_wire(info):
            return value
        if not (type(value) is str and _UTC_RE.search(value)):
            raise ValueError("published_at must be an ISO-8601 UTC timestamp ending Z or +00:00")
        # Parsed here: after a "before" validator, strict mode takes only a datetime.
        return datetime.fromisoformat(value).astimezone(UTC)

    @model_validator(mode="after")
    def _wire_checked(self, info: ValidationInfo) -> Self:
        _all_present(self, info)
        if _on_wire(info):
            if not _CID_RE.search(self.correlation_id):
                raise ValueError(f"correlation_id {self.correlation_id[:40]!r} is not 32 hex chars")
            if not _all_finite(self.meta):
                raise ValueError("meta holds NaN or infinity, which JSON has not")
        return self
