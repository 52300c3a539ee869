"""The Prefect UI tells a newcomer what happened, read in a real browser (headless Chromium).

Two real ``ti run`` commands against their own shared local server (a temporary data
directory, as in test_cli_server.py): one publishes NVDA to the embedded store, one fails
to reach Redis (a closed port) for AAPL. Their flow run pages are then opened in Chromium,
through chromedriver, after logging in with the server's credentials (the line in its
``api-auth`` file, as docs/operations.md says), and the test waits until the rendered page
shows what a reader needs: the run named after ticker and date, its task runs named the same
way, its steps in the Logs at INFO, and, for the failed run, a state message that starts with
the one-line cause and says how to retry. Screenshots of both pages are kept in the test's
temporary directory.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from flows.server import LocalServer
from tests.browser import Browser, browser_binaries, png_facts
from tests.test_cli_run import ti
from tests.test_cli_server import _env, data  # noqa: F401 (the fixture that stops the server)

DATE = "2026-05-11"
CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1: Redis is unavailable
STEPS = ("run-arena", "build-envelope", "publish-stream", "publish-hash")


def _flow_run(api: str, name: str, auth: str) -> dict[str, Any]:
    """The one flow run called ``name``, as the UI's API returns it (basic auth ``auth``)."""
    body = json.dumps({"flow_runs": {"name": {"any_": [name]}}}).encode()
    token = base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(
        f"{api}/flow_runs/filter",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        (run,) = json.loads(reply.read())
    return dict(run)


def _check_png(path: Path) -> None:
    width, height, colours = png_facts(path)
    assert width >= 1000 and height >= 800, (path, width, height)
    assert colours > 50, f"{path} looks blank: {colours} colours"
    assert 10_000 < path.stat().st_size < 1_000_000, path.stat().st_size


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_ui_shows_a_published_and_a_failed_run(tmp_path: Path, data: Path) -> None:  # noqa: F811
    browser_binaries()  # skip (or fail under TI_REQUIRE_BROWSER=1) before starting anything
    env = _env(tmp_path, data)
    ok = ti("run", "NVDA", "--date", DATE, env=env, timeout=400)
    assert ok.returncode == 0, ok.stderr
    verdict = ok.stdout.split(": ", 1)[1].split()[0]
    failing = {
        **env,
        "TI_REDIS_URL": CLOSED,
        "TI_TASK_RETRIES": "1",  # one retry: its log line is part of the story
        "TI_TASK_RETRY_DELAY": "0.5",
        "TI_RETRIES": "0",
        "TI_CONNECT_TIMEOUT": "2",
    }
    bad = ti("run", "AAPL", "--date", DATE, "--allow-demo", env=failing, timeout=400)
    assert bad.returncode == 1 and "AAPL 2026-05-11 not published" in bad.stderr, bad.stderr

    record = LocalServer(data).read()
    assert record is not None
    auth = LocalServer(data).auth_file.read_text().strip()
    published = _flow_run(record.url, f"NVDA-{DATE}", auth)
    failed = _flow_run(record.url, f"AAPL-{DATE}", auth)
    assert (published["state_type"], failed["state_type"]) == ("COMPLETED", "FAILED")
    retry = f"`ti retry {failed['id']}`"

    with Browser(tmp_path / "browser", width=1400, height=1600) as browser:
        # The server asks for its credentials once: the line in api-auth (docs/operations.md).
        browser.open(record.ui_url)
        browser.wait_for_text("Login")
        browser.type_into("input[type=password]", auth + "\ue007")  # then Enter
        # The published run: its name, Completed, each step's task run by name, the summary.
        browser.open(f"{record.ui_url}/runs/flow-run/{published['id']}")
        page = browser.wait_for_text(
            f"NVDA-{DATE}",
            "Completed",
            f"Beginning flow run 'NVDA-{DATE}'",
            *(f"{step}-NVDA-{DATE}" for step in STEPS),  # each log row names its task run
            f"NVDA {DATE}: arena demo returned its state",  # each step says what it did
            f"NVDA {DATE}: envelope built: {verdict}, confidence ",
            f"NVDA {DATE}: appended entry ",
            f"NVDA {DATE}: lookup hash maf:arena:trading_intelligence:decisions:NVDA:{DATE}",
            f"NVDA {DATE}: published {verdict}, stream entry ",
        )
        assert "INFO" in page and "ERROR" not in page and "Traceback" not in page
        success_png = browser.screenshot(tmp_path / "ui-success.png")
        browser.click_text("Task Runs")
        browser.wait_for_text(*(f"{step}-NVDA-{DATE}" for step in STEPS), "(4 Completed)")

        # The failed run: its name, Failed, the retry logged with its cause, the final state
        # message (cause first, then the retry command), and no traceback in the way.
        browser.open(f"{record.ui_url}/runs/flow-run/{failed['id']}")
        page = browser.wait_for_text(
            f"AAPL-{DATE}",
            "Failed",
            *(f"{step}-AAPL-{DATE}" for step in STEPS[:3]),
            "RedisUnavailableError",
            "Retry 1/1 will start",
            f'Finished in state Failed("publish-stream: Redis at {CLOSED} unavailable',
            retry,
        )
        assert "Traceback" not in page, "a traceback hides the one-line cause"
        failure_png = browser.screenshot(tmp_path / "ui-failed.png")

        # Details: the state message itself starts with the cause and ends with the command.
        browser.click_text("Details")
        page = browser.wait_for_text("State Message")
        shown = page.split("State Message", 1)[1].strip()
        assert shown.startswith(f"publish-stream: Redis at {CLOSED} unavailable"), shown[:300]
        browser.click_text("See More")
        page = browser.wait_for_text(retry)
        message = failed["state"]["message"]
        assert message.startswith("publish-stream: Redis at ") and message.endswith(
            f"retry it once fixed with {retry}"
        )
        assert "\n" not in message and not re.search(r"Traceback|Flow run encountered", message)

    for png in (success_png, failure_png):
        _check_png(png)
