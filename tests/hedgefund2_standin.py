"""A stand-in for an ai-hedge-fund 2.x assessment and cycle, built from the record classes of
the ``aihf`` 2.6.1 wheel (``hedge_fund/models.py``: ``Signal``; ``hedge_fund/pipeline/
models.py``: ``TickerSkip``, ``StrategyRecord``, ``DecisionRecord``, ``CycleRecord``;
``hedge_fund/brokers/models.py``: ``Order``, ``Fill``): the same fields and types, except that
``spec`` (a ``FundSpec``, the whole mandate) is a plain mapping here.

Upstream: github.com/virattt/ai-hedge-fund, released to the package index as ``aihf``.
``hedge_fund/models.py`` (git blob 5a7e0966) and ``hedge_fund/brokers/models.py`` (blob
8f004544) are byte for byte those of commit eff8a7320fcf0b473b135690fa1a5b0d9b022a83 ("Bump
version to 2.2.0", 2026-08-07, the newest commit of the repository snapshot read here).
``hedge_fund/pipeline/models.py`` is reproduced from the ``aihf`` 2.6.1 wheel (sha256
9e91613b3079d012e393ce448e06f2503682e292b01451d658e5116d9a6ddbe7), where its git blob is
2a0cd636b1293d461b4d69881f2a2c13e744bbbc: the commit that holds that blob is later than the
snapshot, which has no ``DecisionRecord`` yet.

:func:`assess` is the ``FUNCTION(ticker, trade_date)`` a user writes around
``assess_fund(fund, trade_date, data_client, [ticker])`` (or, for ``HELD``, around
``execute_decision``): per ticker, NVDA is bought to 8%, TSLA shorted to -5%, FLAT stays flat
(its strategy has no eligible positions), HALT is skipped (no close), HELD is a cycle that
trims a 5% position to 3%, and OLD is a record as of the day before.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["CycleRecord", "DecisionRecord", "assess"]


class Signal(BaseModel):
    model_name: str
    ticker: str
    date: str
    value: float
    reasoning: str | None = None
    components: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TickerSkip(BaseModel):
    ticker: str
    reason: str


class StrategyRecord(BaseModel):
    name: str
    slice: float
    signals: list[Signal]
    convictions: dict[str, float]
    weights: dict[str, float]
    eligible_scores: dict[str, float] = Field(default_factory=dict)
    flat_reason: (
        Literal["no_eligible_positions", "missing_long_side", "missing_short_side"] | None
    ) = None
    final_contribution: dict[str, float] = Field(default_factory=dict)


class Order(BaseModel):
    ticker: str
    side: Literal["buy", "sell"]
    quantity: int = Field(gt=0)
    price: float


class Fill(BaseModel):
    ticker: str
    side: Literal["buy", "sell"]
    quantity: int
    price: float


class DecisionRecord(BaseModel):
    schema_version: Literal[2] = 2
    fund: str
    as_of: str
    spec: dict[str, Any]
    universe: list[str]
    marks: dict[str, float]
    skipped: list[TickerSkip]
    strategies: list[StrategyRecord]
    target_weights: dict[str, float]
    clamps: list[dict[str, Any]]
    final_weights: dict[str, float]
    risk_scale_factor: float | None = None


class CycleRecord(DecisionRecord):
    equity_before: float
    cash_before: float
    orders: list[Order]
    fills: list[Fill]
    positions: dict[str, int]
    cash: float
    nav: float
    original_assessment: DecisionRecord | None = None
    refreshed_assessment: DecisionRecord | None = None
    execution_as_of: str | None = None
    execution_policy: Literal["next_close", "next_bar"] | None = None


WEIGHTS = {"NVDA": 0.08, "TSLA": -0.05, "FLAT": 0.0, "HELD": 0.03, "OLD": 0.02}


def _strategy(ticker: str, day: str, weight: float) -> StrategyRecord:
    signals = [
        Signal(
            model_name="buffett",
            ticker=ticker,
            date=day,
            value=0.6 if weight >= 0 else -0.4,
            reasoning="Durable moat at a fair price",
        ),
        Signal(model_name="pead", ticker=ticker, date=day, value=0.0 if weight == 0 else 0.2),
    ]
    return StrategyRecord(
        name="quality",
        slice=1.0,
        signals=signals,
        convictions={ticker: weight * 10},
        weights={ticker: weight},
        flat_reason="no_eligible_positions" if weight == 0 else None,
    )


def assess(ticker: str, trade_date: str) -> DecisionRecord:
    day = "2026-05-08" if ticker == "OLD" else trade_date
    if ticker == "HALT":
        return DecisionRecord(
            fund="demo",
            as_of=day,
            spec={},
            universe=[ticker],
            marks={},
            skipped=[TickerSkip(ticker=ticker, reason="no close in the 7 days before 2026-05-11")],
            strategies=[],
            target_weights={},
            clamps=[],
            final_weights={},
        )
    weight = WEIGHTS[ticker]
    fields: dict[str, Any] = {
        "fund": "demo",
        "as_of": day,
        "spec": {},
        "universe": [ticker],
        "marks": {ticker: 50.0},
        "skipped": [],
        "strategies": [_strategy(ticker, day, weight)],
        "target_weights": {ticker: weight},
        "clamps": [],
        "final_weights": {ticker: weight},
    }
    if ticker != "HELD":
        return DecisionRecord(**fields)
    # 100 shares at 50 of 100,000 equity is 5%; 3% is 60 shares: sell 40.
    order = Order(ticker=ticker, side="sell", quantity=40, price=50.0)
    return CycleRecord(
        **fields,
        equity_before=100_000.0,
        cash_before=95_000.0,
        orders=[order],
        fills=[Fill(ticker=ticker, side="sell", quantity=40, price=50.0)],
        positions={ticker: 60},
        cash=97_000.0,
        nav=100_000.0,
        execution_as_of="2026-05-12",
        execution_policy="next_close",
    )
