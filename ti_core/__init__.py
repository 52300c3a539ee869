"""Trading-intelligence publisher core: wire models, builder, decoder, keys, publishing.

Pure: no Prefect here (the orchestration lives in ``flows``). Functions that talk to Redis
take a client the caller owns. The package is laid out by the way data flows: ``contract``
(the v1 wire shape), ``arenas`` and ``build`` (arena -> state -> envelope), ``store`` and
``transport`` (the Redis seam), ``publish`` and ``consume``, ``backfill``; ``errors`` and
``settings`` beside them.

The public names below are importable from here, each loaded from its one home on first use
(``import ti_core`` alone loads none of them: the ``ti`` command starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ti_core import _legacy

if TYPE_CHECKING:
    from ti_core.build.builder import (
        MAX_ENVELOPE_BYTES,
        build_envelope_from_state,
    )
    from ti_core.consume.groups import (
        GroupReader,
    )
    from ti_core.consume.reader import (
        get_decision,
        replay_range,
        tail,
    )
    from ti_core.contract.decoder import (
        decode_envelope,
    )
    from ti_core.contract.keys import (
        DECISION_HASH_PREFIX,
        DEFAULT_STREAM_NAME,
        decision_hash_key,
        normalize_ticker,
        normalize_trade_date,
    )
    from ti_core.contract.models import (
        AgentSignalView,
        MarketMindDecision,
        SourceMetricsSummary,
        SynthesisView,
        TargetView,
        TradingIntelligenceEnvelope,
    )
    from ti_core.errors import (
        ArenaError,
        ArenaTransientError,
        ConfigError,
        DemoRefusedError,
        InvalidStateError,
        NotPublishedError,
        NoVerdictError,
        PublishError,
        RedisUnavailableError,
        ReplicaAckError,
        StateNotFoundError,
        TiError,
    )
    from ti_core.publish.publisher import (
        PublishResult,
        TrimPolicy,
        append_envelope,
        publish_decision_hash,
        publish_envelope,
        publish_many,
    )
    from ti_core.settings import (
        TiSettings,
        redact_url,
    )
    from ti_core.transport.connection import (
        connect,
    )

# Each public name and the module that is its home.
_HOMES: dict[str, str] = {
    "AgentSignalView": "ti_core.contract.models",
    "ArenaError": "ti_core.errors",
    "ArenaTransientError": "ti_core.errors",
    "ConfigError": "ti_core.errors",
    "DECISION_HASH_PREFIX": "ti_core.contract.keys",
    "DEFAULT_STREAM_NAME": "ti_core.contract.keys",
    "DemoRefusedError": "ti_core.errors",
    "GroupReader": "ti_core.consume.groups",
    "InvalidStateError": "ti_core.errors",
    "MAX_ENVELOPE_BYTES": "ti_core.build.builder",
    "MarketMindDecision": "ti_core.contract.models",
    "NoVerdictError": "ti_core.errors",
    "NotPublishedError": "ti_core.errors",
    "PublishError": "ti_core.errors",
    "PublishResult": "ti_core.publish.publisher",
    "RedisUnavailableError": "ti_core.errors",
    "ReplicaAckError": "ti_core.errors",
    "SourceMetricsSummary": "ti_core.contract.models",
    "StateNotFoundError": "ti_core.errors",
    "SynthesisView": "ti_core.contract.models",
    "TargetView": "ti_core.contract.models",
    "TiError": "ti_core.errors",
    "TiSettings": "ti_core.settings",
    "TradingIntelligenceEnvelope": "ti_core.contract.models",
    "TrimPolicy": "ti_core.publish.publisher",
    "append_envelope": "ti_core.publish.publisher",
    "build_envelope_from_state": "ti_core.build.builder",
    "connect": "ti_core.transport.connection",
    "decision_hash_key": "ti_core.contract.keys",
    "decode_envelope": "ti_core.contract.decoder",
    "get_decision": "ti_core.consume.reader",
    "normalize_ticker": "ti_core.contract.keys",
    "normalize_trade_date": "ti_core.contract.keys",
    "publish_decision_hash": "ti_core.publish.publisher",
    "publish_envelope": "ti_core.publish.publisher",
    "publish_many": "ti_core.publish.publisher",
    "redact_url": "ti_core.settings",
    "replay_range": "ti_core.consume.reader",
    "tail": "ti_core.consume.reader",
}

__all__ = [
    "AgentSignalView",
    "ArenaError",
    "ArenaTransientError",
    "ConfigError",
    "DECISION_HASH_PREFIX",
    "DEFAULT_STREAM_NAME",
    "DemoRefusedError",
    "GroupReader",
    "InvalidStateError",
    "MAX_ENVELOPE_BYTES",
    "MarketMindDecision",
    "NoVerdictError",
    "NotPublishedError",
    "PublishError",
    "PublishResult",
    "RedisUnavailableError",
    "ReplicaAckError",
    "SourceMetricsSummary",
    "StateNotFoundError",
    "SynthesisView",
    "TargetView",
    "TiError",
    "TiSettings",
    "TradingIntelligenceEnvelope",
    "TrimPolicy",
    "append_envelope",
    "build_envelope_from_state",
    "connect",
    "decision_hash_key",
    "decode_envelope",
    "get_decision",
    "normalize_ticker",
    "normalize_trade_date",
    "publish_decision_hash",
    "publish_envelope",
    "publish_many",
    "redact_url",
    "replay_range",
    "tail",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


# Results that older versions persisted name some old module paths (see _legacy).
_legacy.install()
