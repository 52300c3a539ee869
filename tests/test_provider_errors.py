"""LLM and data clients' errors as the framework adapters classify them
(:func:`ti_core.arenas.framework.provider_failure`): fakes named, placed and shaped like the
real ones (openai/anthropic ``APIStatusError`` with ``status_code`` and a response's headers,
httpx's timeout tree, google's ``code``, aiohttp's ``status``), none of those packages
imported; then through the TradingAgents adapter and the backfill's retry loop."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from tests import tradingagents_standin
from tests.test_adapters import TA
from ti_core.arenas.framework import provider_failure
from ti_core.arenas.tradingagents import TradingAgentsArena
from ti_core.backfill.runner import run_items
from ti_core.backfill.status import Item
from ti_core.errors import ArenaError, ArenaTransientError
from ti_core.transport.retry import RetryPolicy, retrying

DAY = "2026-05-11"


def fake(module: str, name: str, *bases: type) -> type:
    """An exception class ``module.name`` (as the provider's package defines it)."""
    cls = type(name, bases or (Exception,), {})
    cls.__module__ = module
    return cls


class Response:
    """Like httpx.Response: a status code and case-insensitive (here: lower-case) headers."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = headers or {}


class _StatusError(Exception):
    """openai/anthropic ``APIStatusError.__init__(message, *, response, body)``."""

    def __init__(self, message: str, *, response: Response, body: object = None) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.body = body


OpenAIError = fake("openai", "OpenAIError")
OpenAIAPIError = fake("openai._exceptions", "APIError", OpenAIError)
APIStatusError = fake("openai._exceptions", "APIStatusError", _StatusError, OpenAIAPIError)
RateLimitError = fake("openai._exceptions", "RateLimitError", APIStatusError)
BadRequestError = fake("openai._exceptions", "BadRequestError", APIStatusError)
InternalServerError = fake("openai._exceptions", "InternalServerError", APIStatusError)
APIConnectionError = fake("openai._exceptions", "APIConnectionError", OpenAIAPIError)
APITimeoutError = fake("openai._exceptions", "APITimeoutError", APIConnectionError)
AnthropicStatusError = fake("anthropic._exceptions", "APIStatusError", _StatusError)
AuthenticationError = fake("anthropic._exceptions", "AuthenticationError", AnthropicStatusError)
HTTPError = fake("httpx", "HTTPError")
TransportError = fake("httpx", "TransportError", fake("httpx", "RequestError", HTTPError))
ConnectTimeout = fake("httpx", "ConnectTimeout", fake("httpx", "TimeoutException", TransportError))
RequestsConnectionError = fake(
    "requests.exceptions",
    "ConnectionError",
    fake("requests.exceptions", "RequestException", OSError),
)
ResourceExhausted = fake("google.api_core.exceptions", "ResourceExhausted")
ClientResponseError = fake("aiohttp.client_exceptions", "ClientResponseError")
InvalidRequest = fake("openai._exceptions", "SomethingNew", OpenAIAPIError)


def rate_limited(headers: dict[str, str] | None = None) -> Exception:
    error: Exception = RateLimitError(
        "Error code: 429 - Rate limit reached for gpt-5.2", response=Response(429, headers)
    )
    return error


def context_too_long() -> Exception:
    error: Exception = BadRequestError(
        "Error code: 400 - This model's maximum context length is 128000 tokens. However, "
        "your messages resulted in 191234 tokens. (code: context_length_exceeded)",
        response=Response(400),
    )
    return error


def with_attrs(error: Exception, **attrs: Any) -> Exception:
    for name, value in attrs.items():
        setattr(error, name, value)
    return error


def caused(outer: Exception, inner: Exception) -> Exception:
    try:
        raise outer from inner
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "transient", "name", "status", "retry_after"),
    [
        (rate_limited({"retry-after": "2"}), True, "openai.RateLimitError", 429, 2.0),
        (rate_limited({"retry-after-ms": "1500"}), True, "openai.RateLimitError", 429, 1.5),
        (rate_limited(), True, "openai.RateLimitError", 429, None),
        (
            APIStatusError("too many", response=Response(429, {"retry-after": "7"})),
            True,
            "openai.APIStatusError",
            429,
            7.0,
        ),
        (
            InternalServerError("overloaded", response=Response(503)),
            True,
            "openai.InternalServerError",
            503,
            None,
        ),
        (APITimeoutError("Request timed out."), True, "openai.APITimeoutError", None, None),
        (ConnectTimeout("timed out"), True, "httpx.ConnectTimeout", None, None),
        (RequestsConnectionError("reset"), True, "requests.ConnectionError", None, None),
        (
            with_attrs(ResourceExhausted("quota"), code=429),
            True,
            "google.ResourceExhausted",
            429,
            None,
        ),
        (
            with_attrs(ClientResponseError("bad gateway"), status=502),
            True,
            "aiohttp.ClientResponseError",
            502,
            None,
        ),
        (
            caused(RuntimeError("graph node failed"), rate_limited({"retry-after": "3"})),
            True,
            "openai.RateLimitError",
            429,
            3.0,
        ),
        (
            AuthenticationError("invalid x-api-key", response=Response(401)),
            False,
            "anthropic.AuthenticationError",
            401,
            None,
        ),
        (context_too_long(), False, "openai.BadRequestError", 400, None),
        (InvalidRequest("unknown"), False, "openai.SomethingNew", None, None),
    ],
)
def test_provider_errors_are_classified(
    error: Exception, transient: bool, name: str, status: int | None, retry_after: float | None
) -> None:
    found = provider_failure(error)
    assert found is not None
    assert (found.transient, found.name, found.status, found.retry_after) == (
        transient,
        name,
        status,
        retry_after,
    )


def test_retry_after_as_an_http_date_and_what_is_not_a_provider_error() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    found = provider_failure(rate_limited({"retry-after": later}))
    assert found is not None and found.retry_after is not None
    assert 3000 < found.retry_after <= 3600
    assert provider_failure(ValueError("bad")) is None
    assert provider_failure(caused(KeyError("x"), ValueError("y"))) is None
    found = provider_failure(context_too_long())
    assert found is not None and found.context_length and not found.transient
    assert found.describe().startswith(
        "openai.BadRequestError (HTTP 400, context length exceeded, not retried): Error code: 400"
    )


async def test_a_transient_provider_error_is_retried_and_published(
    fake_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    graph = tradingagents_standin.TradingAgentsGraph(config={"deep_think_llm": "gpt-5.2"})
    graph.failures = [rate_limited({"retry-after": "0.01"})]
    runner = TradingAgentsArena(TA, graph)
    with pytest.raises(ArenaTransientError) as info:  # what one attempt raises
        graph.failures = [rate_limited({"retry-after": "0.01"})]
        await runner.run("OW", DAY)
    assert info.value.retry_after == 0.01
    assert str(info.value) == (
        f"arena {TA} OW {DAY}: openai.RateLimitError (HTTP 429, retry after 0.01 s): "
        "Error code: 429 - Rate limit reached for gpt-5.2"
    )

    graph.failures = [rate_limited({"retry-after": "0.01"})]
    retry = RetryPolicy(retries=2, delay=0.0, max_delay=0.05, jitter=0.0)
    with caplog.at_level(logging.WARNING, logger="ti_core.retry"):
        (outcome,) = await run_items(fake_redis, runner, [Item("OW", DAY)], retry=retry)
    assert (outcome.status, outcome.verdict) == ("published", "BUY"), outcome.error
    assert [c[0] for c in graph.calls[-2:]] == ["OW", "OW"]
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "ti_core.retry"]
    assert logged == (
        f"arena run OW {DAY} failed (arena {TA} OW {DAY}: openai.RateLimitError (HTTP 429, "
        "retry after 0.01 s): Error code: 429 - Rate limit reached for gpt-5.2); "
        "retrying in 0.01s"
    )


def failure(kind: str) -> Exception:
    if kind == "context":
        return context_too_long()
    error: Exception = AuthenticationError(
        "Error code: 401 - {'type': 'error', 'error': {'type': 'authentication_error', "
        "'message': 'invalid x-api-key'}}",
        response=Response(401),
    )
    return error


@pytest.mark.parametrize("error", ["auth", "context"])
async def test_auth_and_context_length_errors_fail_at_once_in_one_line(
    fake_redis: Any, error: str
) -> None:
    graph = tradingagents_standin.TradingAgentsGraph()
    graph.failures = [failure(error)]
    retry = RetryPolicy(retries=3, delay=0.0, max_delay=0.0, jitter=0.0)
    runner = TradingAgentsArena(TA, graph)
    (outcome,) = await run_items(fake_redis, runner, [Item("BUY", DAY)], retry=retry)
    assert outcome.status == "failed" and len(graph.calls) == 1
    assert outcome.error is not None and "\n" not in outcome.error
    name = "openai.BadRequestError (HTTP 400, context length exceeded, not retried)"
    if error != "context":
        name = "anthropic.AuthenticationError (HTTP 401, not retried)"
    provider = name.partition(" ")[0]
    assert outcome.error.startswith(f"ArenaError: arena {TA} failed for BUY {DAY}: {provider} (")
    graph.failures = [failure(error)]
    with pytest.raises(ArenaError) as info:
        await runner.run("BUY", DAY)
    message = str(info.value)
    assert message.startswith(f"arena {TA} failed for BUY {DAY}: {name}: Error code: 4")
    assert "\n" not in message and len(graph.calls) == 2
    assert not isinstance(info.value, ArenaTransientError)


async def test_a_retry_after_longer_than_the_largest_delay_waits_the_largest_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    async def call() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ArenaTransientError("busy", retry_after=3600.0)
        return "done"

    retry = RetryPolicy(retries=1, delay=0.0, max_delay=0.02, jitter=0.0)
    with caplog.at_level(logging.WARNING, logger="ti_core.retry"):
        assert await retrying(call, retry, what="busy call") == "done"
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "ti_core.retry"]
    assert logged == "busy call failed (busy); retrying in 0.02s"


def test_an_http_status_is_read_from_any_error_but_codes_only_from_a_providers() -> None:
    class GatewayError(Exception):
        status_code = 502

    class AppError(Exception):
        code = 500  # an application's own code, not an HTTP status

    found = provider_failure(GatewayError("upstream"))
    assert found is not None and found.transient and found.name == "GatewayError"
    assert provider_failure(AppError("no")) is None
