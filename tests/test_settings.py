"""TiSettings: read from TI_* variables, frozen, documented, and never shows a password."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from ti_core.contract.keys import DEFAULT_STREAM_NAME
from ti_core.settings import TiSettings, redact_url

SECRET = "s3cr3t-Pa55"
URLS_WITH_SECRETS = [
    f"redis://user:{SECRET}@cache.example.com:6380/0",
    f"redis://:{SECRET}@localhost:6379",
    f"rediss://default:{SECRET}@redis.example.com:6380/1",
    f"unix://:{SECRET}@/var/run/redis/redis.sock?db=0",
    f"unix:///var/run/redis/redis.sock?password={SECRET}&db=2",
    f"redis://:{SECRET}@[::1]:6379/2",
    f"redis://admin:{SECRET}@[2001:db8::7]:6379",
    f"redis://localhost:6379/0?password={SECRET}",
    f"redis://:{SECRET}@host:99999",  # a port no parser accepts
    f"admin:{SECRET}@host:6379",  # no scheme at all
    f"redis://:{SECRET[:4]}@{SECRET[4:]}@host",  # an unescaped '@' in the password
]


def test_defaults() -> None:
    s = TiSettings()
    assert s.redis_url is None and s.stream_name == DEFAULT_STREAM_NAME
    assert s.stream_maxlen > 0
    assert s.redis_url_redacted() == "(embedded store)"


def test_ti_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_REDIS_URL", "redis://127.0.0.1:7000/3")
    monkeypatch.setenv("TI_STREAM_NAME", "test:stream")
    monkeypatch.setenv("TI_STREAM_MAXLEN", "42")
    monkeypatch.setenv("TI_ALLOW_DEMO_PUBLISH", "true")
    s = TiSettings()
    assert isinstance(s.redis_url, SecretStr)
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:7000/3"
    assert (s.stream_name, s.stream_maxlen, s.allow_demo_publish) == ("test:stream", 42, True)


def test_explicit_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_STREAM_MAXLEN", "42")
    assert TiSettings(stream_maxlen=7).stream_maxlen == 7


def test_blank_url_means_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TI_REDIS_URL", "")
    assert TiSettings().redis_url is None


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        TiSettings(stream_name="bad name with spaces")
    monkeypatch.setenv("TI_STREAM_MAXLEN", "-1")
    with pytest.raises(ValidationError):
        TiSettings()


def test_settings_are_frozen() -> None:
    s = TiSettings()
    with pytest.raises(ValidationError):
        s.stream_name = "other"  # type: ignore[misc]
    assert s.stream_name == DEFAULT_STREAM_NAME


def test_every_field_has_a_description() -> None:
    assert TiSettings.model_fields
    for name, field in TiSettings.model_fields.items():
        assert field.description and len(field.description) > 10, name


@pytest.mark.parametrize("url", URLS_WITH_SECRETS)
def test_password_is_never_shown(url: str) -> None:
    s = TiSettings(redis_url=url)
    shown = [
        repr(s),
        str(s),
        s.redis_url_redacted(),
        redact_url(url),
        redact_url(SecretStr(url)),
        s.model_dump_json(),
        repr(s.model_dump()),
    ]
    for text in shown:
        assert SECRET not in text, text
        assert SECRET[:4] not in text and SECRET[4:] not in text, text
    assert s.redis_url is not None and s.redis_url.get_secret_value() == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw@host:6380/0", "redis://***@host:6380/0"),
        ("redis://:pw@localhost", "redis://***@localhost"),
        ("rediss://u:pw@h.example.com:6380", "rediss://***@h.example.com:6380"),
        ("unix://:pw@/tmp/r.sock?db=0", "unix://***@/tmp/r.sock?db=0"),
        ("unix:///tmp/r.sock?password=pw&db=1", "unix:///tmp/r.sock?password=***&db=1"),
        ("redis://:pw@[::1]:6379/2", "redis://***@[::1]:6379/2"),
        ("redis://h:6379/0?db=1&Password=pw", "redis://h:6379/0?db=1&Password=***"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
    ],
)
def test_redacted_form_keeps_the_useful_parts(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_none_is_the_embedded_store() -> None:
    assert redact_url(None) == "(embedded store)"
