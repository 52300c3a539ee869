"""Whether a state carries a verdict, and the envelope ``meta`` its publication gets.

The builder reads the verdict from ``synthesis_verdict`` (else ``signal``) and, as the original
did, turns a missing or unknown one into HOLD with confidence 0. A HOLD nobody decided reads
as a decision, so the pipeline asks :func:`missing_verdict` first (the same keys, read the same
way) and by default refuses such a state with :class:`NoVerdictError`. With
``publish_degraded`` it is published as the original did, its ``meta`` saying so:
``degraded: true`` and ``degraded_reason``.

A state may carry ``meta``, a mapping of text keys to JSON values (the framework adapters put
the raw rating or action and ``confidence_source`` there); it is copied into the envelope's
``meta``. ``degraded``, ``degraded_reason`` and ``demo`` are the publisher's to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ti_core.contract.keys import shorten
from ti_core.errors import InvalidStateError, NoVerdictError, clip

__all__ = ["NO_VERDICT_NOTE", "VERDICTS", "decision_meta", "missing_verdict"]

VERDICTS = ("BUY", "HOLD", "SELL")
# A state's ``meta`` key in which an adapter says why its framework gave no verdict.
NO_VERDICT_NOTE = "no_verdict"
_RESERVED = frozenset({"degraded", "degraded_reason", "demo"})
_KEYS_SHOWN = 12


def _keys(state: Mapping[str, Any]) -> str:
    names = sorted(str(k)[:40] for k in state)
    shown = ", ".join(names[:_KEYS_SHOWN])
    more = len(names) - _KEYS_SHOWN
    return (shown + (f" and {more} more" if more > 0 else "")) or "none"


def missing_verdict(state: Mapping[str, Any]) -> str | None:
    """None when the state has a verdict the builder reads as BUY, HOLD or SELL; otherwise
    why not, naming what was missing and the keys the state had."""
    raw = state.get("synthesis_verdict") or state.get("signal")
    if isinstance(raw, str) and raw.strip().upper() in VERDICTS:
        return None
    if raw is not None and raw != "" and not isinstance(raw, str):
        return None  # not a word at all: the builder refuses it, naming the value
    meta = state.get("meta")
    note = meta.get(NO_VERDICT_NOTE) if isinstance(meta, Mapping) else None
    if isinstance(note, str) and note:
        why = clip(note, 200)
    elif raw:
        field = "synthesis_verdict" if state.get("synthesis_verdict") else "signal"
        why = f"{field} {shorten(raw)} is not one of BUY, HOLD, SELL"
    else:
        why = "the state has no synthesis_verdict or signal"
    return f"no verdict: {why} (state keys: {_keys(state)})"


def decision_meta(
    state: Mapping[str, Any],
    *,
    publish_degraded: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The ``extra_meta`` to build the envelope with: the state's ``meta``, then ``extra``
    (the demo's mark), then the degraded mark. Raises :class:`NoVerdictError` for a state
    with no verdict unless ``publish_degraded``, and ``InvalidStateError`` for a ``meta``
    that is not a mapping with text keys."""
    reason = missing_verdict(state)
    if reason is not None and not publish_degraded:
        raise NoVerdictError(
            f"{reason}; to publish it as HOLD marked degraded: TI_PUBLISH_DEGRADED=1"
        )
    own = state.get("meta")
    if own is not None and (
        not isinstance(own, Mapping) or not all(isinstance(k, str) for k in own)
    ):
        raise InvalidStateError(f"meta must be a mapping with text keys, got {shorten(own)}")
    meta: dict[str, Any] = {k: v for k, v in (own or {}).items() if k not in _RESERVED}
    meta.update(extra or {})
    if reason is not None:
        meta.update(degraded=True, degraded_reason=reason)
    return meta or None
