"""What every framework adapter shares: the runner base that calls a framework one call at a
time, and the text helpers of their mappings to a state.

An adapter (one module per framework: :mod:`ti_core.arenas.tradingagents`,
:mod:`ti_core.arenas.hedgefund`) is a runner that calls a framework for one ticker and one date
and maps its output to the state the builder reads, by a pure function of the framework's
output that a fork with a different call can use on its own. It keeps the framework's own words
in ``meta`` and never invents a number: where the framework gives no confidence, the envelope's
confidence is 0 and ``meta.confidence_source`` is ``"none"``. A rating or action it cannot map
leaves the state without a verdict (``meta.no_verdict`` says why), which the pipeline refuses
unless told to publish it degraded.

A framework's LLM and data clients fail in their own types; :func:`provider_failure` reads
them without importing those packages (class and module names up each exception's MRO, its
HTTP status, along its ``__cause__``/``__context__`` chain) so that a rate limit (429, with
the provider's ``Retry-After``), a timeout, a lost connection or a 5xx becomes
:class:`ArenaTransientError` (retried by the task policy), while authentication, bad-request
and context-length errors fail the item at once; either way the one-line error names the
provider's error (``openai.RateLimitError (HTTP 429)``). :meth:`FrameworkArena.failure` applies it
to every adapter's call.

Calls to one framework object run one at a time: a TradingAgents graph keeps the run's ticker
and state on itself, and ai-hedge-fund drives one progress display per process. A call past
``TI_ARENA_TIMEOUT`` keeps its object's lock until the framework returns (its thread cannot be
stopped), so the next calls on that object wait and time out too.
"""

from __future__ import annotations

import email.utils
import inspect
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ti_core.arenas.runner import CallableArena, in_daemon_thread
from ti_core.errors import ArenaError, ArenaTransientError, one_line

__all__ = [
    "PROVIDER_MODULES",
    "REASONING_CHARS",
    "SUMMARY_CHARS",
    "WORD_CHARS",
    "FrameworkArena",
    "ProviderFailure",
    "clip",
    "provider_failure",
    "word",
]

REASONING_CHARS = 4000  # the builder keeps as much
SUMMARY_CHARS = 300
WORD_CHARS = 80

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _one_at_a_time(owner: object) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(id(owner), threading.Lock())


class FrameworkArena(CallableArena):
    """A framework call in a worker thread, one at a time per framework object."""

    owner: object

    def _invoke(self, ticker: str, trade_date: str) -> Any:
        raise NotImplementedError

    def _locked(self, ticker: str, trade_date: str) -> Any:
        with _one_at_a_time(self.owner):
            return self._invoke(ticker, trade_date)

    async def _call(self, ticker: str, trade_date: str) -> Any:
        result = await in_daemon_thread(self._locked, ticker, trade_date)
        if inspect.isawaitable(result):
            result = await result
        return result

    def failure(self, exc: Exception, ticker: str, trade_date: str) -> ArenaError:
        """A provider's error by :func:`provider_failure`, else the callable runner's rule."""
        found = provider_failure(exc)
        if found is None:
            return super().failure(exc, ticker, trade_date)
        if found.transient:
            return ArenaTransientError(
                f"arena {self.spec} {ticker} {trade_date}: {found.describe()}",
                retry_after=found.retry_after,
            )
        return ArenaError(f"arena {self.spec} failed for {ticker} {trade_date}: {found.describe()}")


PROVIDER_MODULES = frozenset(
    {"openai", "anthropic", "google", "httpx", "httpcore", "requests", "urllib3", "aiohttp"}
)
"""Top-level packages whose exceptions :func:`provider_failure` reads by name."""

# Class names (anywhere in a provider exception's MRO) that a later attempt may cure.
_TRANSIENT_NAMES = frozenset(
    {
        # openai, anthropic (and their langchain wrappers, which raise them as they are)
        "RateLimitError",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
        "OverloadedError",
        # google.api_core / google.genai
        "ResourceExhausted",
        "TooManyRequests",
        "ServiceUnavailable",
        "DeadlineExceeded",
        "GatewayTimeout",
        "BadGateway",
        "ServerError",
        # httpx / httpcore
        "TimeoutException",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "NetworkError",
        "ConnectError",
        "ReadError",
        "WriteError",
        "RemoteProtocolError",
        # requests / urllib3
        "Timeout",
        "ConnectionError",
        "ChunkedEncodingError",
        "ProtocolError",
        "NewConnectionError",
        # aiohttp
        "ServerTimeoutError",
        "ClientConnectionError",
        "ServerDisconnectedError",
    }
)
# Class names that no retry cures: credentials, a refused or malformed request.
_PERMANENT_NAMES = frozenset(
    {
        "AuthenticationError",
        "PermissionDeniedError",
        "BadRequestError",
        "NotFoundError",
        "UnprocessableEntityError",
        "Unauthenticated",
        "PermissionDenied",
        "InvalidArgument",
        "InvalidURL",
        "MissingSchema",
    }
)
# A request too long for the model: its error says so in words (a 400, never retried).
_CONTEXT_LENGTH = ("context length", "context_length", "maximum context", "prompt is too long")
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_CHAIN_MAX = 10


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """A recognised LLM or data client error: whether it is worth retrying, and why."""

    transient: bool
    name: str  # "openai.RateLimitError"
    status: int | None
    retry_after: float | None  # seconds the provider asked for
    message: str
    context_length: bool = False

    def describe(self) -> str:
        """One line naming the provider's error: ``openai.RateLimitError (HTTP 429, retry
        after 2 s): ...``."""
        notes = [f"HTTP {self.status}"] if self.status is not None else []
        if self.context_length:
            notes.append("context length exceeded")
        if self.retry_after is not None:
            notes.append(f"retry after {self.retry_after:g} s")
        if not self.transient:
            notes.append("not retried")
        head = f"{self.name} ({', '.join(notes)})"
        return f"{head}: {self.message}" if self.message else head


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (``__cause__``, else an unsuppressed ``__context__``)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _CHAIN_MAX:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _is_provider(cls: type) -> bool:
    """Whether a provider's package (:data:`PROVIDER_MODULES`) defines ``cls``."""
    return str(getattr(cls, "__module__", "")).partition(".")[0] in PROVIDER_MODULES


def _provider_class(exc: BaseException) -> type | None:
    """The first class of ``exc``'s MRO that a provider's package defines."""
    return next((cls for cls in type(exc).__mro__ if _is_provider(cls)), None)


def _http_status(exc: BaseException, provider: bool) -> int | None:
    """The HTTP status an error carries: ``status_code`` or its ``response.status_code``, and
    for a provider's own error also aiohttp's ``status`` and google's ``code``."""
    response = getattr(exc, "response", None)
    values = [getattr(exc, "status_code", None), getattr(response, "status_code", None)]
    if provider:
        values += [getattr(exc, "status", None), getattr(exc, "code", None)]
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _header(headers: Any, name: str) -> Any:
    getter = getattr(headers, "get", None)
    if not callable(getter):
        return None
    try:
        value = getter(name)
        return value if value is not None else getter(name.title())
    except Exception:  # a headers object of another shape: no hint
        return None


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait: ``retry-after-ms``, ``retry-after`` (seconds or an
    HTTP date) in the response's headers, or a ``retry_after`` attribute."""
    own = getattr(exc, "retry_after", None)
    if isinstance(own, int | float) and not isinstance(own, bool):
        return max(0.0, float(own)) if math.isfinite(own) else None
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        headers = getattr(exc, "headers", None)
    millis = _header(headers, "retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except (TypeError, ValueError):
        pass
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(str(raw))
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _classify(link: BaseException) -> ProviderFailure | None:
    cls = _provider_class(link)
    status = _http_status(link, cls is not None)
    if cls is None and status is None:
        return None
    names = {c.__name__ for c in type(link).__mro__ if _is_provider(c)}
    message = one_line(link, 200, typed=False)
    root = (cls.__module__.partition(".")[0] + ".") if cls is not None else ""
    name = root + type(link).__name__
    too_long = any(words in message.lower() for words in _CONTEXT_LENGTH)
    if too_long or names & _PERMANENT_NAMES:
        transient = False
    elif status is not None:
        transient = status in _TRANSIENT_STATUS or status >= 500
    elif names & _TRANSIENT_NAMES:
        transient = True
    elif cls is None:
        return None
    else:
        transient = False
    retry_after = _retry_after(link) if transient else None
    return ProviderFailure(transient, name, status, retry_after, message, too_long)


def provider_failure(exc: BaseException) -> ProviderFailure | None:
    """The first error along ``exc``'s cause chain that an LLM or data client raised
    (:data:`PROVIDER_MODULES`, or any error carrying an HTTP status), classified; None when
    there is none. Nothing is imported: names, modules and status codes are read.

    Transient: a 408/425/429 or 5xx status, or (with no status) a rate-limit, timeout,
    connection or server error class. Permanent: authentication, permission, bad-request,
    not-found and unprocessable classes, any other 4xx, and a context-length error whatever
    its status. Another provider error (no status, no known name) is permanent.
    """
    for link in _chain(exc):
        found = _classify(link)
        if found is not None:
            return found
    return None


def clip(value: Any, limit: int) -> str | None:
    """Text (a mapping or list as compact JSON) cut to ``limit`` characters; None if empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            value = type(value).__name__
    value = value.strip()
    return (value[: limit - 3] + "...") if len(value) > limit else (value or None)


def word(value: Any) -> str | None:
    """``value`` stripped, if it is text that is not blank; else None."""
    return value.strip() if isinstance(value, str) and value.strip() else None
