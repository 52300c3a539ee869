"""Arena post-run state -> v1 envelope. Returns an envelope or raises ``InvalidStateError``.

Coercion rules (everything else that is malformed raises, naming the field and value):

- Missing parts (``None`` or a blank string) default as the original did: no verdict ->
  ``HOLD``, confidence and score 0, no ``arena_total_seconds`` -> ``null``.
- Verdict and signal words are trimmed and upper-cased; unknown words become ``HOLD`` /
  ``NEUTRAL`` (with a warning); a verdict that is not a string raises. Numbers may arrive as
  numeric strings (``"0.7"``); booleans, NaN, infinity and out-of-range values raise
  (confidence in [0, 1], score in [-1, 1], seconds >= 0).
- The ticker is trimmed and upper-cased, then checked (``keys.normalize_ticker``); the date
  becomes ``YYYY-MM-DD``. A caller's ticker/date must agree with the state's target.
- A malformed agent signal (not a mapping, confidence not a number in [0, 1], a field that is
  not text, key factors not a list of text) is skipped with a warning. A source-metrics record
  that is not a mapping is skipped; a bad ``result_bytes`` counts 0 (with a warning).
- Text fields accept strings and numbers; they are trimmed and bounded: summary 300 chars,
  the first 10 key factors of 200 chars each, reasoning 4,000 chars, other strings 200 chars.
  Lone surrogates (not encodable as UTF-8) become ``?``.
- ``phase_timings`` (a list of mappings) and ``extra_meta`` (a mapping with text keys) must
  be strict JSON (no NaN/inf, no sets or objects) nested at most ``MAX_JSON_DEPTH`` deep; they
  are stored in their JSON form so the envelope decodes back to an equal one.
- The serialised envelope must fit in ``MAX_ENVELOPE_BYTES`` (64 KiB).
- Anything else that goes wrong (a mapping whose ``get`` raises, say) is still reported as
  ``InvalidStateError``: the builder raises nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from ti_core.coerce import (
    MAX_JSON_DEPTH,
    NAME_MAX_CHARS,
    as_json,
    number,
    sequence,
    text,
    word,
)
from ti_core.errors import InvalidStateError
from ti_core.keys import normalize_ticker, normalize_trade_date, shorten
from ti_core.models import (
    KEY_FACTORS_MAX,
    SUMMARY_MAX_CHARS,
    Direction,
    TradingIntelligenceEnvelope,
    Verdict,
    _new_correlation_id,
)
from ti_core.wire import remember

__all__ = ["MAX_ENVELOPE_BYTES", "MAX_JSON_DEPTH", "build_envelope_from_state"]

logger = logging.getLogger(__name__)

MAX_ENVELOPE_BYTES = 64 * 1024
REASONING_MAX_CHARS = 4000
FACTOR_MAX_CHARS = 200
_CID_RE = re.compile(r"^[0-9a-f]{32}$")
_VERDICTS: frozenset[str] = frozenset({"BUY", "HOLD", "SELL"})
_DIRECTIONS: frozenset[str] = frozenset({"BULLISH", "BEARISH", "NEUTRAL"})


def _target(state: Mapping[str, Any], ticker: Any, trade_date: Any) -> dict[str, Any]:
    raw = state.get("target")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidStateError(f"target must be a mapping, got {shorten(raw)}")
    state_ticker = raw.get("ticker") or None
    state_date = raw.get("trade_date") or raw.get("date") or None
    if state_ticker is None and ticker is None:
        raise InvalidStateError("target.ticker is missing and no ticker was given")
    if state_date is None and trade_date is None:
        raise InvalidStateError("target.trade_date is missing and no trade date was given")
    final_ticker = normalize_ticker(
        state_ticker if state_ticker is not None else ticker, field="target.ticker"
    )
    final_date = normalize_trade_date(
        state_date if state_date is not None else trade_date, field="target.trade_date"
    )
    if ticker is not None and normalize_ticker(ticker) != final_ticker:
        raise InvalidStateError(
            f"target.ticker {final_ticker!r} differs from the requested ticker {shorten(ticker)}"
        )
    if trade_date is not None and normalize_trade_date(trade_date) != final_date:
        raise InvalidStateError(
            f"target.trade_date {final_date!r} differs from the requested date "
            f"{shorten(trade_date)}"
        )
    return dict(
        ticker=final_ticker,
        trade_date=final_date,
        exchange=text(raw.get("exchange"), "target.exchange"),
        asset_class=text(raw.get("asset_class"), "target.asset_class", default="equity"),
    )


def _synthesis(state: Mapping[str, Any]) -> dict[str, Any]:
    raw_verdict = state.get("synthesis_verdict") or state.get("signal")
    verdict: Verdict = word(raw_verdict, "synthesis_verdict", _VERDICTS, "HOLD")  # type: ignore[assignment]
    return dict(
        verdict=verdict,
        confidence=number(state.get("synthesis_confidence"), "synthesis_confidence", 0.0, 1.0),
        ensemble_score=number(state.get("synthesis_score"), "synthesis_score", -1.0, 1.0),
        reasoning=text(state.get("synthesis_reasoning"), "synthesis_reasoning",
                        REASONING_MAX_CHARS),
    )


def _signal(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One signal; field names in errors are relative (``_signals`` adds ``agent_signals[i].``)."""
    factors: list[str] = []
    for factor in sequence(raw.get("key_factors"), "key_factors"):
        if len(factors) == KEY_FACTORS_MAX:
            break
        factors.append(text(factor, "key_factors", FACTOR_MAX_CHARS))
    direction: Direction = word(raw.get("signal"), "signal", _DIRECTIONS, "NEUTRAL")  # type: ignore[assignment]
    return dict(
        agent=text(raw.get("agent"), "agent"),
        domain=text(raw.get("domain"), "domain"),
        signal=direction,
        confidence=number(raw.get("confidence"), "confidence", 0.0, 1.0),
        summary=text(raw.get("summary"), "summary", SUMMARY_MAX_CHARS),
        key_factors=factors,
    )


def _signals(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    signals: list[dict[str, Any]] = []
    for index, raw in enumerate(sequence(state.get("agent_signals"), "agent_signals")):
        if type(raw) is not dict and not isinstance(raw, Mapping):
            logger.warning("skipping malformed agent signal: agent_signals[%d] must be a "
                           "mapping, got %s", index, shorten(raw))
            continue
        try:
            signals.append(_signal(raw))
        except InvalidStateError as exc:
            logger.warning("skipping malformed agent signal: agent_signals[%d].%s", index,
                           " ".join(str(exc).split()))
    return signals


def _byte_count(value: Any) -> int:
    try:
        count = int(number(value, "result_bytes", 0.0, None))
    except InvalidStateError as exc:
        logger.warning("source_metrics: %s; counting 0 bytes", exc)
        return 0
    return count


def _source_metrics(state: Mapping[str, Any]) -> dict[str, Any]:
    total = successful = total_bytes = 0
    by_source: dict[str, int] = {}
    for index, raw in enumerate(sequence(state.get("source_metrics"), "source_metrics")):
        if type(raw) is not dict and not isinstance(raw, Mapping):
            logger.warning("skipping source_metrics[%d]: not a mapping: %s", index, shorten(raw))
            continue
        total += 1
        successful += raw.get("success") is True
        count = raw.get("result_bytes")
        total_bytes += count if type(count) is int and count >= 0 else _byte_count(count)
        name = raw.get("source")
        if type(name) is not str or not name or not name.isascii() or name != name.strip():
            if not isinstance(name, str) or not name.strip():
                continue
            name = text(name, "source")
        elif len(name) > NAME_MAX_CHARS:
            name = name[:NAME_MAX_CHARS]
        by_source[name] = by_source.get(name, 0) + 1
    return dict(total_calls=total, successful=successful,
                                failed=total - successful, total_bytes=total_bytes,
                                by_source=by_source)


def _phase_timings(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    timings = []
    for index, item in enumerate(sequence(state.get("phase_timings"), "phase_timings")):
        if type(item) is not dict and not isinstance(item, Mapping):
            raise InvalidStateError(
                f"phase_timings[{index}] must be a mapping, got {shorten(item)}"
            )
        timings.append(as_json(item if type(item) is dict else dict(item),
                                f"phase_timings[{index}]"))
    return timings


def _total_seconds(state: Mapping[str, Any]) -> float | None:
    value = state.get("arena_total_seconds")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return number(value, "arena_total_seconds", 0.0, None)


def _published_at(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidStateError(f"published_at must be a timezone-aware datetime, got "
                                f"{shorten(value)}")
    return value.astimezone(UTC)


def _meta(state: Mapping[str, Any], signals: int, extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "agents_count": signals,
        "model_used": text(state.get("llm_model"), "llm_model"),
    }
    if extra is not None:
        if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
            raise InvalidStateError(f"extra_meta must be a mapping with text keys, got "
                                    f"{shorten(extra)}")
        meta.update(as_json(dict(extra), "extra_meta"))
    return meta


def _correlation_id(value: Any) -> str:
    if value is None:
        return _new_correlation_id()
    if not isinstance(value, str) or not _CID_RE.fullmatch(value):
        raise InvalidStateError(f"correlation_id must be 32 lowercase hex chars, got "
                                f"{shorten(value)}")
    return value


def build_envelope_from_state(
    state: Mapping[str, Any],
    *,
    correlation_id: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    ticker: str | None = None,
    trade_date: str | date | None = None,
    published_at: datetime | None = None,
) -> TradingIntelligenceEnvelope:
    """Build a v1 envelope from an arena's post-run state, or raise ``InvalidStateError``.

    ``ticker``/``trade_date`` are what the caller asked the arena for: a state with no target
    takes them, a state naming a different one is refused.
    """
    if not isinstance(state, Mapping):
        raise InvalidStateError(f"state must be a mapping, got {shorten(state)}")
    try:
        signals = _signals(state)
        # Plain dicts, validated in one pass by pydantic: the rules above already hold, and
        # one validation of the whole envelope costs a third of one per model.
        decision = {
            "target": _target(state, ticker, trade_date),
            "synthesis": _synthesis(state),
            "agent_signals": signals,
            "source_metrics": _source_metrics(state),
            "phase_timings": _phase_timings(state),
            "arena_total_seconds": _total_seconds(state),
        }
        envelope = TradingIntelligenceEnvelope.model_validate({
            "decision": decision,
            "published_at": _published_at(published_at),
            "correlation_id": _correlation_id(correlation_id),
            "arena_id": text(state.get("arena_id"), "arena_id"),
            "meta": _meta(state, len(signals), extra_meta),
        })
        size = len(remember(envelope)[0].encode())  # bytes on the wire; publishing reuses them
    except InvalidStateError:
        raise
    except ValidationError as exc:  # a bound the rules above did not foresee
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidStateError(
            f"{where}: {first['msg']} (got {shorten(first.get('input'))})"
        ) from exc
    except Exception as exc:
        # A hostile mapping (a .get that raises, an overflowing date): still the one answer.
        raise InvalidStateError(
            f"state is malformed ({type(exc).__name__}): {shorten(exc, 120)}"
        ) from exc
    if size > MAX_ENVELOPE_BYTES:
        raise InvalidStateError(
            f"envelope is {size} bytes, over the {MAX_ENVELOPE_BYTES}-byte cap "
            "(trim phase_timings, agent_signals or extra_meta)"
        )
    return envelope
