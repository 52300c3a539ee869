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

Each value is checked once, by these rules; the models are then made from the checked values
without pydantic validating them again (``_fast.maker``: a property test shows validation
would give an equal envelope). Signals and source-metric records shaped as arenas send them
take a one-go path (a whole list of signals in one loop, records read by subscripts, source
names already found clean not checked again); anything else takes the field-by-field rules,
and ``tests/test_builder_differential.py`` shows both give the same bytes. The size cap is
proved from a bound on the JSON size (up to 6 bytes a character); only an envelope whose
bound is over the cap is serialised here, to measure it (publishing serialises it again).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from ti_core.build._fast import maker, shell_of
from ti_core.build.coerce import (
    NAME_MAX_CHARS,
    TEXT_BYTES,
    as_json_sized,
    flat_json,
    number,
    sequence,
    text,
    word,
)
from ti_core.build.source_metrics import summarise_source_metrics
from ti_core.contract.keys import normalize_ticker, normalize_trade_date, shorten
from ti_core.contract.models import (
    KEY_FACTORS_MAX,
    SUMMARY_MAX_CHARS,
    AgentSignalView,
    MarketMindDecision,
    SynthesisView,
    TargetView,
    TradingIntelligenceEnvelope,
)
from ti_core.contract.wire import serialise
from ti_core.errors import InvalidStateError, one_line

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "build_envelope_from_state",
]

logger = logging.getLogger("ti_core.builder")  # its name before the move
_new = object.__new__

MAX_ENVELOPE_BYTES = 64 * 1024
REASONING_MAX_CHARS = 4000
FACTOR_MAX_CHARS = 200
_CID_RE = re.compile(r"^[0-9a-f]{32}$")
_VERDICTS: frozenset[str] = frozenset({"BUY", "HOLD", "SELL"})
_DIRECTIONS: frozenset[str] = frozenset({"BULLISH", "BEARISH", "NEUTRAL"})
# The spellings arenas actually send, answered by one lookup; anything else goes to ``word``.
_VERDICT_OF = {w: w.upper() for v in _VERDICTS for w in (v, v.lower(), v.title())}
_DIRECTION_OF = {w: w.upper() for v in _DIRECTIONS for w in (v, v.lower(), v.title())}

# The fields each model would report as set after validating what the builder gives it.
_SIGNAL_SET = set(AgentSignalView.model_fields)
_SIGNAL_SHELL = shell_of(AgentSignalView)
_make_signal = maker(AgentSignalView, _SIGNAL_SET)
_make_target = maker(TargetView)
_make_synthesis = maker(SynthesisView)
_make_decision = maker(MarketMindDecision)
_make_envelope = maker(
    TradingIntelligenceEnvelope, {"decision", "published_at", "correlation_id", "arena_id", "meta"}
)
# JSON bytes of everything an envelope holds besides its texts and variable parts: field
# names, punctuation, numbers, ticker, date, timestamp, correlation id (a test checks it).
_SKELETON_BYTES = 1024
_SIGNAL_BYTES = 256
_FLOAT_MAX = sys.float_info.max


def _short(value: Any, limit: int) -> str | None:
    """``value`` trimmed when it is plain ASCII text within ``limit`` (the common case, which
    ``text`` would return unchanged); None sends it to ``text``."""
    if type(value) is str and len(value) <= limit and value.isascii():
        return value.strip()
    return None


def _target(state: Mapping[str, Any], ticker: Any, trade_date: Any) -> TargetView:
    raw = state.get("target")
    if raw is None:
        raw = {}
    if type(raw) is not dict and not isinstance(raw, Mapping):
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
    return _make_target(
        final_ticker,
        final_date,
        text(raw.get("exchange"), "target.exchange"),
        text(raw.get("asset_class"), "target.asset_class", default="equity"),
    )


def _synthesis(state: Mapping[str, Any]) -> SynthesisView:
    raw_verdict = state.get("synthesis_verdict") or state.get("signal")
    verdict = _VERDICT_OF.get(raw_verdict) if type(raw_verdict) is str else None
    if verdict is None:
        verdict = word(raw_verdict, "synthesis_verdict", _VERDICTS, "HOLD")
    confidence = state.get("synthesis_confidence")
    if type(confidence) is not float or not 0.0 <= confidence <= 1.0:
        confidence = number(confidence, "synthesis_confidence", 0.0, 1.0)
    score = state.get("synthesis_score")
    if type(score) is not float or not -1.0 <= score <= 1.0:
        score = number(score, "synthesis_score", -1.0, 1.0)
    reasoning = text(state.get("synthesis_reasoning"), "synthesis_reasoning", REASONING_MAX_CHARS)
    return _make_synthesis(verdict, confidence, score, reasoning)


def _signal(raw: Mapping[str, Any]) -> AgentSignalView:
    """One signal, fields checked in a fixed order (the first bad one names the warning);
    names in errors are relative (``_signals`` adds ``agent_signals[i].``)."""
    get = raw.get
    factors: list[str] = []
    raw_factors = get("key_factors")
    if raw_factors is not None:
        for factor in sequence(raw_factors, "key_factors"):
            if len(factors) == KEY_FACTORS_MAX:
                break
            if type(factor) is str and len(factor) <= FACTOR_MAX_CHARS and factor.isascii():
                factors.append(factor.strip())  # what ``text`` gives for plain ASCII text
            else:
                factors.append(text(factor, "key_factors", FACTOR_MAX_CHARS))
    raw_word = get("signal")
    direction = _DIRECTION_OF.get(raw_word) if type(raw_word) is str else None
    if direction is None:
        direction = word(raw_word, "signal", _DIRECTIONS, "NEUTRAL")
    raw_agent = get("agent")
    agent = _short(raw_agent, NAME_MAX_CHARS)
    if agent is None:
        agent = text(raw_agent, "agent")
    raw_domain = get("domain")
    domain = _short(raw_domain, NAME_MAX_CHARS)
    if domain is None:
        domain = text(raw_domain, "domain")
    confidence = get("confidence")
    if type(confidence) is not float or not 0.0 <= confidence <= 1.0:
        confidence = number(confidence, "confidence", 0.0, 1.0)
    raw_summary = get("summary")
    summary = _short(raw_summary, SUMMARY_MAX_CHARS)
    if summary is None:
        summary = text(raw_summary, "summary", SUMMARY_MAX_CHARS)
    return _make_signal(agent, domain, direction, confidence, summary, factors)


def _plain_signals(raws: Sequence[Any]) -> tuple[list[AgentSignalView], int] | None:
    """Signals as arenas send them (dicts with all six fields: plain ASCII texts within their
    bounds, a known word, a float confidence in [0, 1], a list of factors), built in one go
    with the characters they hold; None as soon as one is anything else (``_signals`` then
    takes each through ``_signal``'s rules)."""
    signals = []
    texts: list[str] = []  # every text, for one ASCII check and one count at the end
    for raw in raws:
        if type(raw) is not dict:
            return None
        try:
            direction = _DIRECTION_OF[raw["signal"]]  # subscripts: cheaper than an itemgetter
            factors = raw["key_factors"]
            agent = raw["agent"]
            domain = raw["domain"]
            confidence = raw["confidence"]
            summary = raw["summary"]
        except (KeyError, TypeError):
            return None
        if (
            type(confidence) is not float
            or not 0.0 <= confidence <= 1.0
            or type(factors) is not list
            or len(factors) > KEY_FACTORS_MAX
            or type(agent) is not str
            or type(domain) is not str
            or type(summary) is not str
            or len(agent) > NAME_MAX_CHARS
            or len(domain) > NAME_MAX_CHARS
            or len(summary) > SUMMARY_MAX_CHARS
        ):
            return None
        clean = []
        for factor in factors:
            if type(factor) is not str or len(factor) > FACTOR_MAX_CHARS:
                return None
            clean.append(factor.strip())
        texts += (agent, domain, summary)
        texts += factors
        signal: Any = _new(_SIGNAL_SHELL)  # _make_signal, inline: this runs for every signal
        signal.agent = agent.strip()
        signal.domain = domain.strip()
        signal.signal = direction
        signal.confidence = confidence
        signal.summary = summary.strip()
        signal.key_factors = clean
        signal.__pydantic_fields_set__ = _SIGNAL_SET
        signal.__pydantic_extra__ = None
        signal.__pydantic_private__ = None
        signal.__class__ = AgentSignalView
        signals.append(signal)
    joined = "".join(texts)
    if not joined.isascii():  # ASCII text is what ``text`` keeps as it is
        return None
    return signals, len(joined) + len(texts) - 3 * len(signals)  # characters, and one a factor


def _plain_signal(raw: Any) -> tuple[AgentSignalView, int] | None:
    """One signal by ``_plain_signals``: the signal and its characters, or None."""
    plain = _plain_signals((raw,))
    return None if plain is None else (plain[0][0], plain[1])


def _signals(state: Mapping[str, Any]) -> tuple[list[AgentSignalView], int]:
    """The signals kept, and a bound on their JSON bytes."""
    raws = sequence(state.get("agent_signals"), "agent_signals")
    plain = _plain_signals(raws)  # the common case: every signal as arenas send them
    if plain is not None:
        signals, chars = plain
        return signals, TEXT_BYTES * chars + _SIGNAL_BYTES * len(signals)
    signals = []
    chars = 0
    for index, raw in enumerate(raws):
        plain_one = _plain_signal(raw)
        if plain_one is not None:
            signals.append(plain_one[0])
            chars += plain_one[1]
            continue
        if not isinstance(raw, Mapping):
            logger.warning(
                "skipping malformed agent signal: agent_signals[%d] must be a mapping, got %s",
                index,
                shorten(raw),
            )
            continue
        try:
            signal = _signal(raw)
        except InvalidStateError as exc:
            logger.warning(
                "skipping malformed agent signal: agent_signals[%d].%s",
                index,
                one_line(exc, None),
            )
            continue
        signals.append(signal)
        chars += (
            len(signal.agent)
            + len(signal.domain)
            + len(signal.summary)
            + sum(map(len, signal.key_factors))
            + len(signal.key_factors)
        )
    return signals, TEXT_BYTES * chars + _SIGNAL_BYTES * len(signals)


def _phase_timings(state: Mapping[str, Any]) -> tuple[list[Any], int]:
    items = sequence(state.get("phase_timings"), "phase_timings")
    timings = []
    size = len(items)
    for index, item in enumerate(items):
        flat = flat_json(item)  # the common case: a flat dict of plain values
        if flat is None:
            if type(item) is not dict and not isinstance(item, Mapping):
                raise InvalidStateError(
                    f"phase_timings[{index}] must be a mapping, got {shorten(item)}"
                )
            flat = as_json_sized(dict(item), f"phase_timings[{index}]")
        timings.append(flat[0])
        size += flat[1]
    return timings, size


def _total_seconds(state: Mapping[str, Any]) -> float | None:
    value = state.get("arena_total_seconds")
    if type(value) is float and 0.0 <= value <= _FLOAT_MAX:  # finite and >= 0: as it is
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return number(value, "arena_total_seconds", 0.0, None)


def _published_at(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidStateError(
            f"published_at must be a timezone-aware datetime, got {shorten(value)}"
        )
    return value.astimezone(UTC)


def _meta(state: Mapping[str, Any], signals: int, extra: Any) -> tuple[dict[str, Any], int]:
    model = text(state.get("llm_model"), "llm_model")
    meta: dict[str, Any] = {"agents_count": signals, "model_used": model}
    size = TEXT_BYTES * len(model)
    if extra is not None:
        if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
            raise InvalidStateError(
                f"extra_meta must be a mapping with text keys, got {shorten(extra)}"
            )
        more, more_size = as_json_sized(dict(extra), "extra_meta")
        meta.update(more)
        size += more_size
    return meta, size


def _correlation_id(value: Any) -> str:
    if value is None:
        return secrets.token_hex(16)  # as the model's default: 32 random hex chars
    if not isinstance(value, str) or not _CID_RE.fullmatch(value):
        raise InvalidStateError(
            f"correlation_id must be 32 lowercase hex chars, got {shorten(value)}"
        )
    return value


def _build(
    state: Mapping[str, Any],
    correlation_id: Any,
    extra_meta: Any,
    ticker: Any,
    trade_date: Any,
    published_at: Any,
) -> tuple[TradingIntelligenceEnvelope, int]:
    """The envelope, from values each checked once against the models' rules (so built
    without validating them again), and a bound on its JSON bytes."""
    signals, signals_size = _signals(state)
    target = _target(state, ticker, trade_date)
    synthesis = _synthesis(state)
    metrics, metrics_size = summarise_source_metrics(state)
    timings, timings_size = _phase_timings(state)
    decision = _make_decision(target, synthesis, signals, metrics, timings, _total_seconds(state))
    when = _published_at(published_at)
    cid = _correlation_id(correlation_id)
    arena_id = text(state.get("arena_id"), "arena_id")
    meta, meta_size = _meta(state, len(signals), extra_meta)
    envelope = _make_envelope(decision, when, cid, arena_id, meta)
    texts = (
        len(target.exchange) + len(target.asset_class) + len(synthesis.reasoning) + len(arena_id)
    )
    size = (
        _SKELETON_BYTES
        + TEXT_BYTES * texts
        + signals_size
        + metrics_size
        + timings_size
        + meta_size
    )
    return envelope, size


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
    if type(state) is not dict and not isinstance(state, Mapping):
        raise InvalidStateError(f"state must be a mapping, got {shorten(state)}")
    try:
        envelope, bound = _build(
            state, correlation_id, extra_meta, ticker, trade_date, published_at
        )
        # Serialising costs as much as building: only when the bound (a few times the real
        # size: it allows 6 bytes a character) cannot prove the cap is kept.
        size = len(serialise(envelope)[0].encode()) if bound > MAX_ENVELOPE_BYTES else 0
    except InvalidStateError:
        raise
    except ValidationError as exc:  # pragma: no cover - only if the models gain validators
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
