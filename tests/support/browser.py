"""Headless Debian Chromium driven by Playwright (never `playwright install`), and the app served
on a real loopback port for it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from tests.conftest import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
# docs/testing-parts.md: without the last three flags Chromium keeps trying the closed network.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser, or a skip (locally) / failure (CI) saying what is missing."""
    if not CHROMIUM.exists():
        skip_or_fail(
            f"{CHROMIUM} is missing: apt-get install chromium (scripts/install-system-deps)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Served:
    """A WSGI server on 127.0.0.1 whose port is known before the app exists (the app needs its
    public URL), so there is no window between choosing a port and listening on it."""

    def __init__(self) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, _not_ready, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, app: Any) -> None:
        self.server.app = app
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


def _not_ready(environ: Any, start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


def shot(page: Any, name: str, folder: str = "cancel_flow") -> Path:
    directory = SCREENSHOTS / folder
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _channel(value: str) -> tuple[float, float, float]:
    parts = [float(x) for x in re.findall(r"[\d.]+", value)[:3]]
    return parts[0], parts[1], parts[2]


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb() colours."""

    def luminance(rgb: tuple[float, float, float]) -> float:
        def linear(c: float) -> float:
            c /= 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (linear(c) for c in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(_channel(foreground)), luminance(_channel(background))))[::-1]
    return (light + 0.05) / (dark + 0.05)
