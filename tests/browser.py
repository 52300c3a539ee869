"""A headless Chromium for tests, driven through chromedriver's W3C WebDriver HTTP API.

No Selenium or Playwright: a dozen endpoints over ``urllib`` are enough to open a page, wait
for text to appear in it, click a tab and take a screenshot. Each :class:`Browser` runs its own
``chromedriver`` on a free port (which starts its own Chromium with a fresh profile) and
stops both, by PID, on :meth:`Browser.close`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.redisproc import free_port

REQUIRE_ENV = "TI_REQUIRE_BROWSER"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver); skip the test (or fail, when CI requires it) if absent."""
    chromium = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    driver = shutil.which("chromedriver") or (
        CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else None
    )
    if chromium is None or driver is None:
        reason = (
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 makes this test required")
        pytest.skip(reason)
    return chromium, driver


class Browser:
    """One chromedriver and its headless Chromium."""

    def __init__(self, workdir: Path, *, width: int = 1400, height: int = 1100) -> None:
        chromium, driver = browser_binaries()
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self._log = open(workdir / "chromedriver.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [driver, f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Chromium children share its process group
        )
        self.session: str | None = None
        try:
            self._wait_driver(60)
            reply = self._call(
                "POST",
                "/session",
                {
                    "capabilities": {
                        "alwaysMatch": {
                            "browserName": "chrome",
                            "goog:chromeOptions": {
                                "binary": chromium,
                                "args": [
                                    "--headless=new",
                                    "--no-sandbox",
                                    "--disable-gpu",
                                    "--disable-dev-shm-usage",
                                    f"--window-size={width},{height}",
                                    f"--user-data-dir={workdir / 'profile'}",
                                ],
                            },
                            "timeouts": {"pageLoad": 120_000, "script": 60_000},
                        }
                    }
                },
                timeout=180,
            )
            self.session = str(reply["sessionId"])
        except BaseException:
            self.close()
            raise

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 120
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"webdriver {method} {path}: {error.read()[:500]!r}") from None

    def _wait_driver(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromedriver exited with {self.proc.returncode}")
            try:
                if self._call("GET", "/status", timeout=5).get("ready"):
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"chromedriver did not answer within {within:.0f}s")

    def _session(self, path: str) -> str:
        assert self.session is not None
        return f"/session/{self.session}{path}"

    def open(self, url: str) -> None:
        self._call("POST", self._session("/url"), {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self._call(
            "POST", self._session("/execute/sync"), {"script": source, "args": list(args)}
        )

    def text(self) -> str:
        """What the page shows, as a reader sees it (``innerText`` of the body)."""
        return str(self.script("return document.body ? document.body.innerText : '';"))

    def wait_for_text(self, *needles: str, within: float = 120.0) -> str:
        """Poll the rendered page until it shows every needle; its text, or AssertionError."""
        deadline = time.monotonic() + within
        text = ""
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the page never showed {missing} within {within:.0f}s; it shows:\n{text}"
                )
            time.sleep(0.5)

    def click_text(self, label: str, within: float = 60.0) -> None:
        """Click the innermost element whose own text is ``label`` (a tab, a "See More")."""
        source = (
            "const hits = [...document.querySelectorAll('body *')].filter("
            "  el => el.innerText && el.innerText.trim() === arguments[0]);"
            "const inner = hits.filter(el => !hits.some(o => o !== el && el.contains(o)));"
            "if (!inner.length) return false; inner[0].click(); return true;"
        )
        deadline = time.monotonic() + within
        while not self.script(source, label):
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing labelled {label!r} to click")
            time.sleep(0.5)

    def type_into(self, css: str, text: str) -> None:
        """Type ``text`` into the first element matching ``css``, as a user does (key events)."""
        found = self._call(
            "POST", self._session("/element"), {"using": "css selector", "value": css}
        )
        element = next(iter(found.values()))  # the W3C element reference
        self._call("POST", self._session(f"/element/{element}/value"), {"text": text})

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._call("GET", self._session("/screenshot"))))
        return path

    def close(self) -> None:
        if self.session is not None:
            try:
                self._call("DELETE", self._session(""), timeout=30)
            except (OSError, RuntimeError):
                pass
            self.session = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Chromium may outlive chromedriver in the group: end whatever is left of it, and wait
        # (a little) until the group is gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG, read with zlib alone.

    Distinct colours are counted on every 4th pixel of every 4th row: enough to tell a page
    from a blank or single-colour one.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour_type, interlace = header[8], header[9], header[12]
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    offset = 0
    for row in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        if row % 4 == 0:
            for x in range(0, width, 4):
                colours.add(bytes(line[x * channels : x * channels + 3]))
        previous = line
    return width, height, len(colours)
