"""The README's first command: `recovery demo` seeds a history and serves it; a newcomer can
follow a card-update link from the outbox to a recovered case over real HTTP."""

from __future__ import annotations

import json
import os
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from recovery.devtools.localstripe import free_port

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "demo-api-key"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_"))}
    env["RECOVERY_INSTANCE_PATH"] = str(tmp_path)
    return env


@pytest.mark.slow
def test_localstripe_demo_seeds_through_real_webhooks(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recovery.cli",
            "demo",
            "--stripe",
            "localstripe",
            "--port",
            str(free_port()),
            "--customers",
            "4",
            "--exit-after-seed",
        ],
        cwd=ROOT,
        env=_demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "seeded 4 customers, 4 subscriptions, 1 failed renewals" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "recovery is running at http://127.0.0.1:" in result.stdout
    db = sqlite3.connect(tmp_path / "demo.db")
    assert db.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    assert db.execute(
        "SELECT count(*) FROM invoices WHERE status = 'open' AND attempt_count >= 1"
    ).fetchone() == (1,)
    statuses = dict(db.execute("SELECT status, count(*) FROM stripe_events GROUP BY 1").fetchall())
    assert set(statuses) == {"processed"}


# ---- the default demo, on the Stripe fake -----------------------------------------------------


class Demo:
    """`recovery demo` in a subprocess; its output is read line by line as it comes."""

    def __init__(self, tmp_path: Path, customers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db_path = tmp_path / "demo.db"
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recovery.cli",
                "demo",
                "--port",
                str(self.port),
                "--customers",
                str(customers),
            ],
            cwd=ROOT,
            env=_demo_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.cookies = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect()
        )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in the demo's output:\n{''.join(self.output)}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.db_path, timeout=10)
        try:
            return db.execute(query).fetchall()
        finally:
            db.close()

    def request(
        self, url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """(status, body, Location) without following redirects, keeping cookies."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with self.cookies.open(req, timeout=30) as response:
                return response.status, response.read().decode(), ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers.get("Location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def poll(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo"), customers=60)
    try:
        running.wait_for("stop with Ctrl-C", timeout=420)
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_demo_history_has_the_whole_story(demo: Demo) -> None:
    assert any("history: 60 customers" in line for line in demo.output), demo.output
    statuses = dict(demo.sql("SELECT status, count(*) FROM recovery_cases GROUP BY 1"))
    assert statuses.get("recovered", 0) >= 2 and statuses.get("lost", 0) >= 1, statuses
    open_cases = sum(statuses.get(s, 0) for s in ("open", "retrying", "awaiting_customer"))
    assert open_cases >= 2, statuses
    categories = {row[0] for row in demo.sql("SELECT decline_category FROM recovery_cases")}
    assert len(categories - {None}) >= 3, categories
    via = {row[0] for row in demo.sql("SELECT recovered_via FROM recovery_cases")}
    assert len(via - {None}) >= 2, via
    # Open cases whose pending reminders carry a card-update link.
    assert (
        demo.sql(
            "SELECT count(*) FROM outbox_messages m JOIN recovery_cases c ON c.id = m.case_id "
            "WHERE m.status = 'pending' AND m.body LIKE '%/update/%' "
            "AND c.status IN ('open', 'retrying', 'awaiting_customer')"
        )[0][0]
        >= 1
    )
    outcomes = {row[0] for row in demo.sql("SELECT outcome FROM cancel_sessions")}
    assert "cancelled" in outcomes, outcomes
    assert any(o and o.startswith("saved_by_") for o in outcomes), outcomes
    # A save the subscriber cancelled after all, in a later session: the dashboard's reversed
    # save (scripted, so whatever day the demo runs on, the story is there).
    reversed_saves = demo.sql(
        "SELECT count(*) FROM cancel_sessions a JOIN cancel_sessions b "
        "ON b.subscription_id = a.subscription_id AND b.outcome = 'cancelled' "
        "AND b.decided_at > a.decided_at WHERE a.outcome LIKE 'saved_by_%'"
    )[0][0]
    assert reversed_saves >= 1
    # The expiry tracker found cards running out before their renewal.
    assert demo.sql("SELECT count(*) FROM outbox_messages WHERE about LIKE 'expiry:%'")[0][0] >= 1
    sms = demo.sql("SELECT count(*) FROM outbox_messages WHERE channel = 'sms'")[0][0]
    assert sms >= 1
    assert set(row[0] for row in demo.sql("SELECT locale FROM outbox_messages")) - {"en"}
    assert demo.sql("SELECT count(*) FROM users WHERE email = 'demo@example.com'") == [(1,)]


@pytest.mark.slow
def test_newcomer_updates_a_card_from_the_outbox_and_the_case_recovers(demo: Demo) -> None:
    status, outbox, _ = demo.request(f"{demo.base}/demo/outbox?channel=email")
    assert status == 200 and "/update/" in outbox
    case_id, message_id = demo.sql(
        "SELECT c.id, max(m.id) FROM outbox_messages m JOIN recovery_cases c ON c.id = m.case_id "
        # an English-speaking customer: the pages speak the customer's language, and this test
        # reads the outcome in English
        "WHERE m.channel = 'email' AND m.body LIKE '%/update/%' AND m.locale = 'en' "
        "AND c.status IN ('open', 'retrying', 'awaiting_customer') GROUP BY c.id ORDER BY c.id"
    )[0]
    status, page, _ = demo.request(f"{demo.base}/demo/outbox?before={message_id + 1}")
    article = page.split(f'id="message-{message_id}"', 1)[1].split("</article>", 1)[0]
    link = re.search(r'href="(http://127\.0\.0\.1:\d+/update/[A-Za-z0-9_-]{43})"', article)
    assert link, article
    completed_before = demo.sql(
        "SELECT count(*) FROM stripe_events WHERE type = 'checkout.session.completed'"
    )[0][0]

    status, update_page, _ = demo.request(link.group(1))
    assert status == 200, update_page
    token = CSRF.search(update_page)
    assert token
    status, _, checkout_url = demo.request(link.group(1), {"csrf_token": token.group(1)})
    assert status == 303 and "/demo/checkout/cs_" in checkout_url
    status, checkout, _ = demo.request(checkout_url)
    assert status == 200 and "4242 4242 4242 4242" in checkout
    token = CSRF.search(checkout)
    assert token
    status, _, done_url = demo.request(
        checkout_url, {"csrf_token": token.group(1), "card": "4242", "action": "save"}
    )
    assert status == 303 and "/done?session_id=cs_" in done_url
    status, done, _ = demo.request(done_url)
    assert status == 200 and "went through" in done

    def recovered() -> bool:
        _, body, _ = demo.request(
            f"{demo.base}/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        return bool(json.loads(body)["status"] == "recovered")

    assert poll(recovered), f"case {case_id} did not recover"
    # The fake's events reached the service's webhook endpoint over HTTP, signed.
    assert poll(
        lambda: (
            demo.sql(
                "SELECT count(*) FROM stripe_events "
                "WHERE type = 'checkout.session.completed' AND status = 'processed'"
            )[0][0]
            > completed_before
        )
    )
    status, _, _ = demo.request(f"{demo.base}/dashboard")
    assert status == 302  # signed out: to the sign-in page
