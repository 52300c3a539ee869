"""Every secret a Redis URL can carry stays hidden: a corpus of URL forms, through
``redact_url``, ``ti get``, ``ti status``, ``ti verify`` and ``ti run`` (its output, logs,
artifacts, events and flow-run parameters), against a real redis-server that requires the
password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
import redis

from tests.redisproc import RedisProcess
from ti_core.settings import TiSettings, redact_url

pytestmark = pytest.mark.redis_server

SECRET = "S3cr3t/Pa55+w0rd"  # '/' and '+' make its encoded forms differ from it
PARTS = ("S3cr3t", "Pa55+w0rd", "Pa55")
ENC = quote(SECRET, safe="")


def forms_of_the_secret() -> list[str]:
    return [SECRET, ENC, quote_plus(SECRET), quote(ENC, safe=""), *PARTS]


def corpus(host: str = "127.0.0.1", port: int = 6379) -> list[str]:
    """URL forms carrying the secret; ``{h}`` is host:port."""
    h = f"{host}:{port}"
    return [
        f"redis://:{ENC}@{h}/0",
        f"redis://ti-user:{ENC}@{h}/0",
        f"redis://ti-user:{SECRET}@{h}/0",  # unescaped '/' in the password
        f"redis://{h}/0?password={ENC}",
        f"redis://{h}/0?password={ENC}&username=default",
        f"redis://{h}/0?PASSWORD={ENC}",
        f"redis://{h}/0?passwor%64={ENC}",
        f"redis://{h}/0?%70assword={ENC}",
        f"redis://{h}/0?pass%77ord={ENC}",
        f"redis://{h}/0?passwor%2564={ENC}",  # double-encoded key
        f"redis://{h}/0?db=0&password={ENC}&db=0",
        f"redis://:{ENC}@{h}/0?ssl_password={ENC}",
        f"redis://:{ENC}@{h}/0?ssl%5Fpassword={ENC}",
        f"rediss://:{ENC}@{h}/0?ssl_password={ENC}&ssl_cert_reqs=none",
        f"redis://:{ENC}@{h}/0#{ENC}",
        f"redis://{h}/0?password={ENC}#password={ENC}",
        f"redis://u%40x:{ENC}@{h}/0",
        f"redis://:{SECRET[:6]}@{SECRET[7:]}@{h}/0",  # a raw '@' in the password
        f"unix:///tmp/ti-none.sock?password={ENC}",
        f"unix://:{ENC}@/tmp/ti-none.sock?db=0",
        f"redis://:{ENC}@{host}:notaport/0",
    ]


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for form in forms_of_the_secret():
            assert form not in text, (form, text)


@pytest.mark.parametrize("url", corpus(), ids=range(len(corpus())))
def test_redact_url_hides_every_form(url: str) -> None:
    s = TiSettings(redis_url=url)
    assert_hidden(redact_url(url), s.redis_url_redacted(), repr(s), str(s), s.model_dump_json())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis-redaction")).start()
    with proc.sync_client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "ti-user", "reset", "on", f">{SECRET}", "~*", "+@all"
        )
        admin.execute_command(
            "ACL", "SETUSER", "default", "reset", "on", f">{SECRET}", "~*", "+@all"
        )
    yield proc
    proc.stop()


@pytest.fixture
def cli(
    server: RedisProcess,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> object:
    from flows.cli import main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TI_RETRIES", "0")
    monkeypatch.setenv("TI_CONNECT_TIMEOUT", "1")

    def run(url: str, *argv: str) -> tuple[int, str]:
        monkeypatch.setenv("TI_REDIS_URL", url)
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert_hidden(out, err, caplog.text)
        return code, out + err

    return run


def test_cli_reads_never_show_the_secret(server: RedisProcess, cli: object) -> None:
    run = cli  # type: ignore[assignment]
    worked = 0
    for url in corpus(port=server.port):
        for argv in (
            ["get", "NVDA", "2026-05-11"],
            ["verify"],
            ["status", "--tickers", "NVDA", "--start", "2026-05-11", "--end", "2026-05-11"],
        ):
            code, text = run(url, *argv)  # type: ignore[operator]
            worked += code == 0 or "no decision for NVDA" in text
    assert worked >= 10 * 3  # most forms authenticate: the secret was really used


@pytest.mark.prefect
def test_run_output_logs_artifacts_events_and_parameters(
    prefect_harness: None, server: RedisProcess, cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli  # type: ignore[assignment]
    monkeypatch.setenv("TI_TASK_RETRIES", "0")
    urls = [
        f"redis://127.0.0.1:{server.port}/0?passwor%64={ENC}",
        f"redis://:{ENC}@127.0.0.1:{server.port}/0?ssl_password={ENC}",
        f"redis://ti-user:{ENC}@127.0.0.1:{server.port}/0",
    ]
    codes = [
        run(
            u,
            "run",
            "RDCT",
            "--date",
            "2026-05-11",  # type: ignore[operator]
            "--arena",
            "tests.arena_fixtures:sync_arena",
        )[0]
        for u in urls
    ]
    assert codes == [0, 1, 0]  # ssl_password on redis:// is refused (in one redacted line)
    with redis.Redis(port=server.port, password=SECRET) as admin:
        assert admin.xlen("maf:arena:trading_intelligence:output") == 1
    assert_hidden(*asyncio.run(_prefect_records("RDCT", "2026-05-11")))


async def _prefect_records(ticker: str, day: str) -> list[str]:
    """Every artifact, event, flow-run parameter set and log line of this decision's runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.events.filters import EventFilter, EventResourceFilter

    texts: list[str] = []
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{ticker}-{day}"]))
        )
        assert len(runs) == 3
        texts += [str(r.parameters) + str(r.state and r.state.message) for r in runs]
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs]))
        )
        texts += [log.message for log in logs]
        keys = [f"decision-{ticker.lower()}-{day}", f"publish-{ticker.lower()}-{day}"]
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
        assert len(artifacts) >= 2
        texts += [str(a.data) + str(a.description) for a in artifacts]
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            page = await client.read_events(
                filter=EventFilter(
                    resource=EventResourceFilter(id=[f"ti.decision.{ticker}.{day}"])
                ),
                limit=50,
            )
            if len(page.events) >= 3 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.25)
        assert len(page.events) >= 3
        texts += [e.model_dump_json() for e in page.events]
    return texts


def test_a_wrong_password_in_every_form_is_hidden(server: RedisProcess, cli: object) -> None:
    run = cli  # type: ignore[assignment]
    wrong = corpus(port=server.port)[3].replace(ENC, ENC + "x")
    code, text = run(wrong, "get", "NVDA", "2026-05-11")  # type: ignore[operator]
    assert code == 1 and "refused the credentials" in text
