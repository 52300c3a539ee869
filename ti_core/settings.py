"""Settings from the environment (prefix ``TI_``); explicit function arguments override them.

The Redis URL is a secret: it is held as ``SecretStr`` and only ever shown through
:func:`redact_url`, so a password cannot reach a log line, an error, a ``repr`` or an artifact.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ti_core import defaults
from ti_core.contract.bounds import DEFAULT_MAX_STATE_BYTES
from ti_core.contract.keys import DEFAULT_STREAM_NAME, validate_stream_name

__all__ = ["TiSettings", "default_data_dir", "redact_sentinels", "redact_url"]


# redis-py reads credentials from the query string too (``?password=``, ``?ssl_password=``),
# after percent-decoding the key (``?passwor%64=`` is a password). A key is secret when, decoded
# (repeatedly) and reduced to its letters, it contains any of these: over-redacting a path such as
# ``ssl_keyfile`` costs nothing, printing a password costs a lot.
_SECRET_KEY_PARTS = ("pass", "user", "secret", "token", "auth", "cred", "key")


def _decoded(text: str) -> str:
    for _ in range(5):  # double-encoded (%2564) still names the same key to a reader
        decoded = unquote_plus(text)
        if decoded == text:
            break
        text = decoded
    return text


def _secret_key(key: str) -> bool:
    letters = re.sub(r"[^a-z]", "", _decoded(key).lower())
    return any(part in letters for part in _SECRET_KEY_PARTS)


def _redacted_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        key, eq, _ = pair.partition("=")
        pairs.append(
            f"{key}=***"
            if eq and _secret_key(key)
            else ("***" if not eq and _secret_key(key) else pair)
        )
    return "&".join(pairs)


def redact_sentinels(listed: str) -> str:
    """``TI_REDIS_SENTINELS`` safe to print: in each ``host:port`` entry, anything up to an
    ``@`` (credentials someone wrote there, ``:pw@host:port``) becomes ``***@``. Such an
    entry is refused by ``connect``; this keeps it out of every line and event meanwhile."""
    entries = []
    for entry in listed.split(","):
        head, at, tail = entry.rpartition("@")
        if not at and "%40" in entry.lower():  # an encoded @ hides credentials the same way
            head, at, tail = entry.lower().rpartition("%40")
        entries.append(f"***@{tail}" if at else entry)
    return ",".join(entries)


def redact_url(url: str | SecretStr | None) -> str:
    """The URL with every credential it can carry as ``***``; printable anywhere.

    Hidden: the userinfo (user and password, however encoded), the value of any query key that
    decodes to a secret-looking name (``password``, ``ssl_password``, ``passwor%64``,
    ``username``...), and the fragment. A URL that still holds an ``@`` (raw or encoded) where
    no parser looks for credentials is hidden whole.
    """
    if url is None:
        return "(embedded store)"
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = (f"***@[{host}]" if ":" in host else f"***@{host}") + (f":{port}" if port else "")
    text = (f"{parts.scheme}://" if parts.scheme else "") + netloc + parts.path
    query = _redacted_query(parts.query) if parts.query else ""
    text += (f"?{query}" if query else "") + ("#***" if parts.fragment else "")
    if "@" in _decoded(text).replace("***@", "", 1):  # credentials where no parser looks
        return "<URL hidden: unexpected '@'>"
    return text


def default_data_dir() -> Path:
    """Where the embedded store lives: ``$XDG_DATA_HOME/ti`` or the platform's equivalent."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "ti"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "ti"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ti"


class TiSettings(BaseSettings):
    """Everything the publisher, consumer and pipeline read from ``TI_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="TI_", frozen=True, extra="ignore")

    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (redis://, rediss://, unix://). Unset, and no "
        "TI_REDIS_SENTINELS: the embedded, file-backed store in data_dir is used.",
    )
    redis_sentinels: str | None = Field(
        default=None,
        description="Redis Sentinels as 'host:port,host:port,...' (instead of TI_REDIS_URL): "
        "the client follows the primary they name across a failover.",
    )
    redis_sentinel_master: str | None = Field(
        default=None, description="The service (master) name the Sentinels monitor."
    )
    redis_username: str | None = Field(
        default=None, description="ACL user of the Sentinel-managed data connections."
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinel-managed data connections."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinels themselves (their requirepass)."
    )
    redis_tls: bool = Field(
        default=False, description="TLS to the Sentinels and the data connections."
    )
    redis_tls_ca_certs: Path | None = Field(
        default=None, description="CA bundle that signs the servers' TLS certificates."
    )
    redis_failover_wait: float = Field(
        default=20.0,
        ge=0,
        description="Seconds a Sentinel client keeps retrying a command while a failover "
        "promotes a new primary (make it exceed down-after-milliseconds + a few seconds).",
    )
    min_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas that must have each publish before it counts (WAIT); 0: none.",
    )
    replica_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds each publish waits for TI_MIN_REPLICAS (below socket_timeout).",
    )
    stream_name: str = Field(
        default=DEFAULT_STREAM_NAME, description="Stream that decisions are appended to."
    )
    stream_maxlen: int = Field(
        default=defaults.STREAM_MAXLEN,
        ge=0,
        description="Trim the stream to about this many entries (0: never trim).",
    )
    stream_trim_approximate: bool = Field(
        default=True,
        description="Trim with MAXLEN ~ (cheap, may keep a few more entries) instead of exact.",
    )
    idempotency_ttl_seconds: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        description="How long a correlation id remembers its stream entry (retry window).",
    )
    socket_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a Redis reply before retrying."
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a Redis connection."
    )
    retries: int = Field(
        default=3,
        ge=0,
        description="Client retries on connection errors and timeouts (writes are idempotent).",
    )
    reconnect_give_up_seconds: float = Field(
        default=defaults.RECONNECT_GIVE_UP_SECONDS,
        gt=0,
        description="Consumers (ti tail, GroupReader) keep reconnecting to a lost Redis this "
        "long, then give up with one line and a non-zero exit.",
    )
    arena: str | None = Field(
        default=None,
        description="Arena runner spec: 'replay:DIR', 'package.module:function', "
        "'tradingagents:MODULE:OBJECT', 'hedgefund:MODULE:FUNCTION', "
        "'hedgefund2:MODULE:FUNCTION' or 'demo'.",
    )
    arena_allowed: str | None = Field(
        default=None,
        description="Comma-separated arena specs a deployment's flow run may name in its "
        "'arena' parameter, besides TI_ARENA ('replay:DIR' admits DIR and the directories "
        "under it). Any other spec in a run's parameters is refused: run parameters come from "
        "whoever may create runs, and a spec names code to import.",
    )
    allow_demo_publish: bool = Field(
        default=False,
        description="Let the demo arena publish to a configured (non-embedded) Redis.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory of the embedded store and other local state.",
    )
    max_state_bytes: int = Field(
        default=DEFAULT_MAX_STATE_BYTES,
        ge=1024,
        description="Largest arena state accepted, in bytes of JSON: a bigger one is refused "
        "before it is read or parsed (and never reaches Prefect's result storage).",
    )
    publish_degraded: bool = Field(
        default=False,
        description="Publish a state with no readable verdict as HOLD, confidence 0, marked "
        "meta.degraded (default: it is a failed item).",
    )
    calendar: str = Field(
        default=defaults.CALENDAR,
        description="Exchange calendar (exchange_calendars code, or 'weekdays').",
    )
    arena_concurrency: int = Field(
        default=4, ge=1, description="Arena runs in flight at once in daily and backfill runs."
    )
    arena_timeout: float = Field(
        default=900.0,
        ge=0,
        description="Seconds one arena run may take before its item fails with 'did not "
        "return within N s' (0: no limit). A sync arena's thread cannot be stopped: it is "
        "left running, its result ignored, and the command exits without waiting for it.",
    )
    batch_size: int = Field(
        default=500, ge=1, description="Decisions per publish batch in backfills."
    )
    task_retries: int = Field(
        default=4, ge=0, description="Pipeline task retries on retryable failures (Prefect)."
    )
    task_retry_delay: float = Field(
        default=2.0,
        ge=0,
        description="First pipeline retry delay in seconds; doubles each retry, with jitter.",
    )
    task_retry_max_delay: float = Field(
        default=60.0,
        ge=0,
        description="Longest pause between two retries of a task or an arena run, in seconds.",
    )
    retry_jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Spread of every retry pause: a pause of d waits d*(1-j) to d*(1+j).",
    )
    redis_retry_delay: float = Field(
        default=0.05,
        ge=0,
        description="First pause while waiting for an unreachable Redis (client retries, "
        "backfill batches, consumers); doubles each retry, with jitter.",
    )
    redis_retry_max_delay: float = Field(
        default=1.0,
        ge=0,
        description="Longest pause while waiting for an unreachable Redis, in seconds.",
    )
    server_idle_timeout: float = Field(
        default=900.0,
        ge=0,
        description="Seconds the shared local Prefect server stays up with nothing to do "
        "(0: until 'ti server stop'). Used only when PREFECT_API_URL is not set.",
    )
    prefect_lost_after: float = Field(
        default=5.0,
        gt=0,
        description="Seconds of refused connections (six times this for accepted but "
        "unanswered ones) after which ti run, daily and backfill call their Prefect API lost: "
        "they stop, print each decision's outcome as read back from Redis, and exit 1.",
    )
    server_start_timeout: float = Field(
        default=180.0,
        gt=0,
        description="Seconds to wait for the local Prefect server to answer after it starts.",
    )

    @field_validator("stream_name")
    @classmethod
    def _stream_is_a_key(cls, value: str) -> str:
        return validate_stream_name(value)

    @field_validator("redis_url", "redis_sentinels", "redis_sentinel_master", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def uses_server(self) -> bool:
        """A Redis server is configured (``TI_REDIS_URL`` or ``TI_REDIS_SENTINELS``): not the
        embedded store.

        The one answer to "server or embedded store?": ``connect`` opens what it says, the
        embedded store's checks (``check_store``, ``ti store``) apply only when it is False,
        and every line naming where decisions go follows it. A half or contradictory server
        configuration is refused by ``connect`` (``transport.sentinel.sentinel_target``).
        """
        return self.redis_url is not None or self.redis_sentinels is not None

    def redis_url_redacted(self) -> str:
        """The configured URL without its credentials, or a note that the embedded store is used."""
        if self.redis_sentinels is not None and self.redis_url is None:
            listed = redact_sentinels(self.redis_sentinels)
            return f"sentinel:{self.redis_sentinel_master or '?'}@{listed}"
        return redact_url(self.redis_url)
