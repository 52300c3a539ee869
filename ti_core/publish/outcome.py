"""What became of one decision in a pipeline run: a typed record every reader shares.

The flow builds one :class:`DecisionOutcome` per (ticker, date) and every view reads it: the
decision card and the run table (Prefect artifacts), the ``ti.decision.*`` event, the flow
run's result and the ``ti`` command's line. A flow run's result is stored by Prefect as plain
data, so the outcome travels as :meth:`DecisionOutcome.as_row` and is read back with
:meth:`DecisionOutcome.from_row` (tolerant of rows an older version stored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["TABLE_COLUMNS", "DecisionOutcome", "Status"]

Status = Literal["published", "unchanged", "failed"]

TABLE_COLUMNS = (
    "ticker",
    "trade_date",
    "status",
    "verdict",
    "confidence",
    "degraded",
    "entry_id",
    "error",
)
"""The run table's columns, in order."""


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """One (ticker, date): ``published`` (a new entry), ``unchanged`` (an identical decision
    was already on the stream) or ``failed`` (``error`` says at which stage and why).

    ``note`` is a warning on a decision that stands (its hash confirmation failed after the
    script wrote entry and hash together); ``where`` the store, safe to print; ``demo`` and
    ``degraded`` mark decisions that are not a real analysis or had no verdict.
    """

    ticker: str
    trade_date: str
    status: Status = "failed"
    verdict: str | None = None
    confidence: float | None = None
    entry_id: str | None = None
    hash_key: str | None = None
    error: str | None = None
    where: str | None = None
    demo: bool = False
    degraded: bool = False
    note: str | None = None
    score: float | None = None
    correlation_id: str | None = None
    stream: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def as_row(self) -> dict[str, Any]:
        """Plain data (a flow run's result): every field, in declaration order."""
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DecisionOutcome:
        """An outcome from :meth:`as_row`'s data; unknown keys are ignored, missing ones default."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["demo"] = values.get("demo") is True
        values["degraded"] = values.get("degraded") is True
        return cls(**values)

    def event_payload(self) -> dict[str, Any]:
        """The ``ti.decision.*`` event's payload: the fields that have a value."""
        return {k: v for k, v in self.as_row().items() if v not in (None, "")}

    def table_row(self) -> dict[str, Any]:
        """The run table's row: :data:`TABLE_COLUMNS`, blank where unset or false."""
        row = self.as_row()
        return {c: ("" if row[c] is None or row[c] is False else row[c]) for c in TABLE_COLUMNS}
