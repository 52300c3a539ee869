"""The v1 wire models: the exact JSON shape consumers read today (in full: docs/core.md).

Names and field order follow the original module so consumer code keeps working. Compared
with it, numbers must be finite and free text is bounded; anything the original's builder
produced from a sane state still validates. Changing or removing a field needs a
``schema_version`` bump; adding an optional one does not.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "TRADE_DATE_PATTERN",
    "UTC_TIMESTAMP_PATTERN",
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


# The wire's formats the models do not check (a Python caller may give a naive time or a
# blank date): the decoder checks them on what it reads, and the JSON Schema states them
# (ti_core.contract.schema). Portable patterns: see keys.TICKER_PATTERN.
TRADE_DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$(?!\n)"
"""``YYYY-MM-DD`` (and a real date: the schema adds ``format: date``)."""
UTC_TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|\+00:00)$(?!\n)"
)
"""An ISO-8601 UTC timestamp as the publisher writes it (``...T21:30:00Z``, a fraction of up
to six digits when there is one); ``+00:00`` is accepted too, nothing else."""


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


class TargetView(BaseModel):
    """What was analysed: the (ticker, trade date) pair that keys the lookup hash."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ticker: str
    trade_date: str = ""
    exchange: str = ""
    asset_class: str = "equity"


class SynthesisView(BaseModel):
    """The synthesis agent's final verdict."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verdict: Verdict
    confidence: Unit
    ensemble_score: Signed
    reasoning: str = ""


class SourceMetricsSummary(BaseModel):
    """Aggregated source-fetch stats for the run (no per-call detail)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    total_calls: Count = 0
    successful: Count = 0
    failed: Count = 0
    total_bytes: Count = 0
    by_source: dict[str, int] = Field(default_factory=dict)


class MarketMindDecision(BaseModel):
    """The per-(ticker, trade_date) decision: what trading strategies are written against."""

    model_config = ConfigDict(frozen=True)

    target: TargetView
    synthesis: SynthesisView
    agent_signals: list[AgentSignalView] = Field(default_factory=list)
    source_metrics: SourceMetricsSummary = Field(default_factory=SourceMetricsSummary)
    phase_timings: list[dict[str, Any]] = Field(default_factory=list)
    arena_total_seconds: Annotated[float, Field(allow_inf_nan=False)] | None = None


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
