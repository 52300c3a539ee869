"""Least privilege, TLS and secrecy, on a real redis-server started here with a TLS port.

The producer's ACL user gets exactly ``producer_acl_rule()`` (what docs/publishing.md shows):
publishing works, anything else is refused. ``rediss://`` works with a CA (or verification
off) given in the URL query. A wrong password never shows up in a message, a log or a repr.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import SSLConnection

from tests.publish_workload import assert_exactly_once, envelope, many_envelopes
from tests.redisproc import RedisProcess, free_port
from ti_core import (
    DEFAULT_STREAM_NAME,
    ConfigError,
    TiSettings,
    connect,
    publish_decision_hash,
    publish_envelope,
    publish_many,
)
from ti_core.acl import producer_acl_rule
from ti_core.contract.keys import failure_key
from ti_core.publish.publisher import TrimPolicy
from ti_core.transport.connection import open_redis

pytestmark = pytest.mark.redis_server

S = DEFAULT_STREAM_NAME
USER = "ti-producer"
PASSWORD = "pw-Zq8-SECRET-7yX"
WRONG = "wrong-SECRET-K3v9"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "publishing.md"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ti test CA"))
        .issuer_name(_name("ti test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class Server:
    def __init__(self, proc: RedisProcess, tls_port: int, ca: Path) -> None:
        self.proc, self.tls_port, self.ca = proc, tls_port, ca

    def url(
        self,
        user: str | None = USER,
        password: str = PASSWORD,
        *,
        tls: bool = False,
        query: str = "",
    ) -> str:
        auth = f"{user}:{password}@" if user else ""
        scheme, port = ("rediss", self.tls_port) if tls else ("redis", self.proc.port)
        return f"{scheme}://{auth}127.0.0.1:{port}/0" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("redis-acl-tls")
    files = make_tls_files(workdir)
    tls_port = free_port()
    proc = RedisProcess(
        workdir,
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(files["cert"]),
        "--tls-key-file",
        str(files["key"]),
        "--tls-ca-cert-file",
        str(files["ca"]),
        "--tls-auth-clients",
        "no",
    ).start()
    with proc.sync_client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}", *producer_acl_rule().split()
        )
    yield Server(proc, tls_port, files["ca"])
    proc.stop()


@pytest.fixture
def admin(server: Server) -> Iterator[redis.Redis]:
    with server.proc.sync_client() as client:
        client.flushall()
        client.script_flush()  # the producer must be able to load the scripts itself
        yield client


@pytest.fixture
async def producer(server: Server, admin: redis.Redis) -> AsyncIterator[Any]:
    client = open_redis(server.url())
    try:
        yield client
    finally:
        await client.aclose()


def test_the_documented_rule_is_the_tested_rule() -> None:
    assert f"`{producer_acl_rule()}`" in " ".join(DOCS.read_text().split())


async def test_producer_user_can_publish_everything_it_needs(
    producer: Any, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    envs = many_envelopes(300)
    results = await publish_many(producer, envs, trim=TrimPolicy(1_000, approximate=False))
    assert all(r.created and r.hash_written for r in results)
    single = envelope("ACL")
    await publish_envelope(producer, S, single, trim=TrimPolicy(200, approximate=False))
    await publish_decision_hash(producer, single)
    assert admin.xlen(S) == 200  # XTRIM ran with the producer's rights
    assert "trim failed" not in caplog.text
    await producer.hset(failure_key(S), "ACL:2026-05-11", "{}")  # the pipeline's records
    assert await producer.hmget(failure_key(S), ["ACL:2026-05-11"]) == [b"{}"]
    await producer.hdel(failure_key(S), "ACL:2026-05-11")
    assert await producer.hexists(results[0].hash_key, "json")  # backfill --only missing
    info = {c["name"]: c["user"] for c in admin.client_list()}
    assert info.get("ti") == USER  # CLIENT SETNAME was allowed


async def test_commands_outside_the_rule_are_refused(producer: Any, admin: redis.Redis) -> None:
    await publish_many(producer, [envelope()])
    for refused in (
        producer.flushall(),
        producer.xrange(S),
        producer.set("other:key", "1"),
        producer.keys("*"),
        producer.hgetall("maf:arena:other:x"),
        producer.config_get("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            await refused
    with pytest.raises(ConfigError, match="user 'ti-producer' .* lacks the right access to a key"):
        await publish_envelope(producer, "other:stream", envelope())  # never retried
    assert admin.exists("other:stream") == 0


def _secretless(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and WRONG not in text, text


async def test_wrong_password_is_a_config_error_without_the_secret(
    server: Server, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for url in (
        server.url(password=WRONG),
        server.url(password=WRONG, tls=True, query=f"ssl_ca_certs={server.ca}"),
    ):
        client = open_redis(url, TiSettings(retries=1))
        try:
            with pytest.raises(ConfigError, match="refused the credentials") as caught:
                await publish_many(client, [envelope()])
            _secretless(repr(client), str(client), repr(client.connection_pool))
        finally:
            await client.aclose()
        exc = caught.value
        _secretless(str(exc), repr(exc), "".join(traceback.format_exception(exc)))
        with pytest.raises(ConfigError) as via_connect:
            async with connect(url, settings=TiSettings(retries=0)) as other:
                await other.xlen(S)
        assert "***@127.0.0.1" in str(via_connect.value)
        _secretless(str(via_connect.value), "".join(traceback.format_exception(via_connect.value)))
    _secretless(caplog.text)
    assert admin.xlen(S) == 0


def test_malformed_url_with_a_password_is_redacted() -> None:
    with pytest.raises(ConfigError) as caught:
        open_redis(f"redis://{USER}:{PASSWORD}@127.0.0.1:notaport/0")
    _secretless(str(caught.value), "".join(traceback.format_exception(caught.value)))


@pytest.mark.parametrize(
    "query", ["ssl_ca_certs={ca}", "ssl_cert_reqs=none"], ids=["ca-in-url", "no-verification"]
)
async def test_publish_over_rediss(server: Server, admin: redis.Redis, query: str) -> None:
    url = server.url(tls=True, query=query.format(ca=server.ca))
    envs = many_envelopes(20)
    async with connect(url, settings=TiSettings()) as client:
        assert issubclass(client.connection_pool.connection_class, SSLConnection)
        await publish_many(client, envs)
        assert any(c["name"] == "ti" and c["user"] == USER for c in admin.client_list())
    check = AsyncRedis(port=server.proc.port)
    try:
        await assert_exactly_once(check, S, envs)
    finally:
        await check.aclose()


async def test_rediss_with_an_untrusted_certificate_fails_cleanly(
    server: Server, admin: redis.Redis
) -> None:
    client = open_redis(server.url(tls=True), TiSettings(retries=0))
    try:
        with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED.*ssl_ca_certs"):
            await publish_many(client, [envelope()])
    finally:
        await client.aclose()
    assert admin.xlen(S) == 0


async def test_the_scripts_commands_are_checked_too(server: Server, admin: redis.Redis) -> None:
    """Why the rule lists XADD, HSET...: Redis checks what a script calls against the user."""
    rule = producer_acl_rule().replace(" +xadd", "")
    admin.execute_command("ACL", "SETUSER", "no-xadd", "reset", "on", f">{PASSWORD}", *rule.split())
    try:
        client = open_redis(server.url(user="no-xadd"))
        try:
            with pytest.raises(
                ConfigError,
                match=r"user 'no-xadd' .* lacks the right to run a "
                r"command the publish script calls .*script can't run",
            ):
                await publish_many(client, [envelope()])
        finally:
            await client.aclose()
    finally:
        admin.execute_command("ACL", "DELUSER", "no-xadd")
    assert admin.xlen(S) == 0
