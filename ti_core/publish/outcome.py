"""What became of one decision: the one outcome type of ti run, ti daily and ti backfill.

The pipeline flows build one :class:`DecisionOutcome` per (ticker, date) and every view reads
it: the decision card and the run table (Prefect artifacts), the ``ti.decision.*`` event, the
flow run's result and the ``ti`` command's line. The backfill runner reports each item it ran
as one too (its batch tables, summary and ``FAILED`` lines). A flow run's result is stored by
Prefect as plain data, so the outcome travels as :meth:`DecisionOutcome.as_row` and is read
back with :meth:`DecisionOutcome.from_row` (tolerant of rows an older version stored).

What the words mean, here and in every ``ti`` output (:func:`publish_status` decides):

- ``published``: this run's decision is on the stream as its own entry, appended by this
  attempt or by an earlier attempt of the same run (a retry finds it by its correlation id),
  and its lookup hash was written with it (unless the hash already holds a later decision:
  never back in time).
- ``unchanged``: an identical decision (same ``decision`` and ``arena_id``) another run
  appended was already the last on the stream for the pair; its entry is reported, nothing
  was appended.
- ``failed``: nothing of this decision is known to be written; ``error`` says at which stage
  and why. A retry whose new decision differs from the entry its correlation id already has
  (its cached arena result lost, the arena answering otherwise) is ``failed`` too: its
  ``verdict``, ``confidence`` and ``entry_id`` are that entry's, which consumers see, and
  ``error`` says the new decision was not published.
- ``unacked`` (a flag on a ``failed`` outcome): the write reached the primary but not
  ``TI_MIN_REPLICAS`` replicas (``ReplicaAckError``): consumers may already see the decision,
  so every output labels it ``UNACKED``, not ``FAILED``, and no failure record is written
  (``--only failed`` would re-run a decision consumers see; ``ti verify`` and the next run
  of the pair confirm it once the replicas are back). The run still fails: the decision is
  not durable yet.
- ``appended`` (a flag beside the status; ``PublishResult.created`` in ``publish_many``'s
  results): this attempt itself added the entry. A ``published`` outcome that is not
  ``appended`` was appended by an earlier attempt of the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ti_core.contract.models import TradingIntelligenceEnvelope
    from ti_core.publish.scripts import HeldDecision

__all__ = ["TABLE_COLUMNS", "DecisionOutcome", "Status", "conflict_message", "publish_status"]

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


def publish_status(own_entry: bool) -> Status:
    """The status of a decision the publish scripts accepted: ``published`` when the entry
    returned is this envelope's own (this attempt or an earlier one with its correlation id),
    ``unchanged`` when it is another run's identical decision."""
    return "published" if own_entry else "unchanged"


def conflict_message(held: HeldDecision, envelope: TradingIntelligenceEnvelope) -> str:
    """Why a retry's new decision was not published: the entry its correlation id names."""
    new = envelope.decision.synthesis
    return (
        f"the stream already holds {held.verdict} {held.confidence:.2f} (entry {held.entry_id}) "
        f"for this run's correlation id; the new {new.verdict} {new.confidence:.2f} was not "
        "published"
    )


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """One (ticker, date): ``status`` and ``appended`` as the module says.

    ``note`` is a warning on a decision that stands (its hash confirmation failed after the
    script wrote entry and hash together; a backfill's degraded reason); ``where`` the store,
    safe to print; ``demo`` and ``degraded`` mark decisions that are not a real analysis or
    had no verdict.
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
    appended: bool = False
    unacked: bool = False

    @classmethod
    def of_publish(
        cls,
        envelope: TradingIntelligenceEnvelope,
        *,
        own_entry: bool,
        appended: bool,
        entry_id: str,
        hash_key: str,
        stream: str,
        where: str | None = None,
        note: str | None = None,
        held: HeldDecision | None = None,
    ) -> DecisionOutcome:
        """The outcome of an envelope the publish scripts accepted (``publish_many``'s
        ``own_entry`` and ``created``), with the decision's verdict, scores and marks.

        With ``held`` (``PublishResult.held``: the correlation id's entry holds another
        decision), the outcome is ``failed`` and reports the entry consumers see: its verdict,
        confidence and id, and the error says the new decision was not published."""
        target, synthesis = envelope.decision.target, envelope.decision.synthesis
        if held is not None:
            return cls(
                target.ticker,
                target.trade_date,
                verdict=held.verdict,
                confidence=held.confidence,
                entry_id=held.entry_id,
                hash_key=hash_key,
                error=conflict_message(held, envelope),
                where=where,
                demo=envelope.meta.get("demo") is True,
                correlation_id=envelope.correlation_id,
                stream=stream,
            )
        return cls(
            target.ticker,
            target.trade_date,
            status=publish_status(own_entry),
            verdict=synthesis.verdict,
            confidence=synthesis.confidence,
            entry_id=entry_id,
            hash_key=hash_key,
            where=where,
            demo=envelope.meta.get("demo") is True,
            degraded=envelope.meta.get("degraded") is True,
            note=note,
            score=synthesis.ensemble_score,
            correlation_id=envelope.correlation_id,
            stream=stream,
            appended=appended,
        )

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def label(self) -> str:
        """How a ``ti`` line names a decision that did not succeed: ``UNACKED`` (written to
        the primary, consumers may see it) or ``FAILED``."""
        return "UNACKED" if self.unacked else "FAILED"

    def as_row(self) -> dict[str, Any]:
        """Plain data (a flow run's result): every field, in declaration order."""
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DecisionOutcome:
        """An outcome from :meth:`as_row`'s data; unknown keys are ignored, missing ones default.

        Rows of older versions: a pipeline row without ``appended`` said ``published`` only
        when its attempt appended, so it reads as appended then. A backfill row
        (``reason`` instead of ``error``/``note``; "" for no entry id) reads with its reason
        as the error of a failed item, else as the note (``degraded: ...`` for a degraded
        decision); its ``appended`` is unknown and reads False.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        reason = row.get("reason")
        if isinstance(reason, str) and "error" not in row and "note" not in row:
            failed = values.get("status") == "failed"
            values["error" if failed else "note"] = reason or None
            values.setdefault("degraded", not failed and reason.startswith("degraded"))
            values["entry_id"] = values.get("entry_id") or None
        if "appended" not in row:
            values["appended"] = values.get("status") == "published" and reason is None
        values["demo"] = values.get("demo") is True
        values["degraded"] = values.get("degraded") is True
        values["appended"] = values.get("appended") is True
        values["unacked"] = values.get("unacked") is True
        return cls(**values)

    def event_payload(self) -> dict[str, Any]:
        """The ``ti.decision.*`` event's payload: the fields that have a value."""
        return {k: v for k, v in self.as_row().items() if v not in (None, "")}

    def table_row(self) -> dict[str, Any]:
        """The run table's row: :data:`TABLE_COLUMNS`, blank where unset or false."""
        row = self.as_row()
        return {c: ("" if row[c] is None or row[c] is False else row[c]) for c in TABLE_COLUMNS}
