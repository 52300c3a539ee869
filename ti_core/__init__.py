"""Trading-intelligence publisher core: wire models, builder, decoder, keys, publishing.

Pure: no Prefect here (the orchestration lives in ``flows``). Functions that talk to Redis
take a client the caller owns.
"""

from ti_core.build.builder import MAX_ENVELOPE_BYTES, build_envelope_from_state
from ti_core.consume.groups import GroupReader
from ti_core.consume.reader import get_decision, replay_range, tail
from ti_core.contract.decoder import decode_envelope
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
from ti_core.settings import TiSettings, redact_url
from ti_core.transport.connection import connect

__all__ = [
    "DECISION_HASH_PREFIX",
    "DEFAULT_STREAM_NAME",
    "MAX_ENVELOPE_BYTES",
    "AgentSignalView",
    "GroupReader",
    "ArenaError",
    "ArenaTransientError",
    "ConfigError",
    "DemoRefusedError",
    "InvalidStateError",
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

# After the public names: results that older versions persisted name some old module paths.
from ti_core import _legacy  # noqa: E402

_legacy.install()
