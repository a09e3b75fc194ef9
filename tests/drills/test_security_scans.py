"""Security drills: static analysis, known-vulnerable dependencies, and what the logs give away.

- bandit on recovery/: no high-severity finding.
- (pip-audit is not run: its advisory sources - PyPI's JSON API, OSV - are unreachable from
  these machines, and an audit that checked nothing must not pass as clean.)
- a representative slice of the service's scenarios run with every logger at DEBUG (as with
  RECOVERY_LOG_LEVEL=DEBUG): webhook deliveries carrying emails, phone numbers, card data and
  a full card number pasted into metadata; bad deliveries; the API with good and bad bearer
  keys; a database outage; a failed renewal whose reminders the worker sends (one refused by
  the mail server); a Twilio look-up. The captured log text must hold no secret (whsec_,
  sk_/rk_ keys, the API bearer keys, the session secret, the Twilio token, card-update link
  tokens), no full card number (13-19 digits passing Luhn) and no unmasked email address or
  phone number.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.services.registry import build_runtime
from tests.conftest import API_KEY, WEBHOOK_SECRET, make_settings
from tests.support import stripe_payloads as sp
from tests.support.postgres import in_ci

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

STRIPE_KEY = "sk_test_" + "Zq8Lr2Kx9Vb4Nm7Pw3Ty6Hs1"
TWILIO_TOKEN = "twiliotoken" + "f3e9a1c7b5d2e8f4a6c0b"  # 32, the shape Twilio issues
SECRET_KEY = "session-secret-" + "Q7w9E2r4T6y8U1i3O5p7"
CARD_NUMBER = "4242424242424242"  # pasted by a merchant into metadata: must not reach the logs
CUSTOMER_EMAIL = "dana.lee@customer-mail.example"
CUSTOMER_PHONE = "+14155550199"
BUSINESS_ADDRESSES = {"billing@acme.example"}  # the sender's own address is not personal data


# ---- static analysis and dependencies ---------------------------------------------------------


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            message = f"{name} is not installed (pip install -e '.[dev]')"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        return found
    return str(path)


def test_bandit_finds_no_high_severity_issue() -> None:
    result = subprocess.run(
        [_tool("bandit"), "-r", str(ROOT / "recovery"), "-f", "json", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: it found something (any severity)
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    high = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] == "HIGH"
    ]
    assert not high, "bandit high-severity findings:\n" + "\n".join(high)


# ---- what must never be in a log ------------------------------------------------------------

_SECRET_PATTERNS = {
    "Stripe key": re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{8,}"),
    "webhook secret": re.compile(r"whsec_[A-Za-z0-9]+"),
    "Bearer token": re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]+"),
    "card-update link token": re.compile(r"/update/[A-Za-z0-9_-]{16,}"),
}
# 13-19 digits, optionally grouped by spaces or dashes, not glued to an id like evt_123...
_DIGIT_RUN = re.compile(r"(?<![\w])\d(?:[ -]?\d){12,18}(?![\w])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+*-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+\d{7,15}\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def leaks(text: str, exact_secrets: list[str]) -> list[str]:
    """Everything in `text` (also URL-decoded) that must not be in a log."""
    found = []
    for chunk in {text, unquote_plus(text)}:
        for name, pattern in _SECRET_PATTERNS.items():
            found += [f"{name}: {m.group(0)}" for m in pattern.finditer(chunk)]
        found += [f"configured secret: {s[:6]}..." for s in exact_secrets if s and s in chunk]
        for m in _DIGIT_RUN.finditer(chunk):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                found.append(f"card number: {digits[:6]}...{digits[-4:]}")
        for m in _EMAIL.finditer(chunk):
            local = m.group(0).split("@", 1)[0]
            if m.group(0) not in BUSINESS_ADDRESSES and "*" not in local:
                found.append(f"email: {m.group(0)}")
        found += [f"phone: {m.group(0)}" for m in _PHONE.finditer(chunk)]
    return sorted(set(found))


def test_leak_scanner_finds_what_it_looks_for() -> None:
    text = (
        f"key {STRIPE_KEY} whsec_abcdef card {CARD_NUMBER} 4111-1111-1111-1111 to "
        f"{CUSTOMER_EMAIL} {CUSTOMER_PHONE} Authorization: Bearer abcdef123 "
        "https://x/update/AbCdEfGhIjKlMnOpQrSt To=%2B14155550123"
    )
    found = "\n".join(leaks(text, [TWILIO_TOKEN]))
    for expected in (
        "Stripe key",
        "webhook secret",
        "card number: 424242",
        "card number: 411111",
        "email:",
        "phone: +14155550199",
        "phone: +14155550123",
        "Bearer",
        "card-update link token",
    ):
        assert expected in found, expected
    masked = "k***@example.com +49*********78 evt_1700000000123 1700000000 ch_4242"
    assert leaks(masked, []) == []


class _RecordingMailer:
    """Refuses the first message like a mail server would (a permanent 5xx), keeps the rest."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> str:
        from recovery.adapters.email import SendError

        if not self.sent:
            self.sent.append(None)
            raise SendError("recipient refused ([550])", permanent=True, code=550)
        self.sent.append(message)
        return str(message.message_id)


@pytest.fixture
def twilio_stand_in() -> Iterator[str]:
    """A 20-line local Twilio: lists no messages, accepts any message."""
    app = Flask("twilio-stand-in")

    @app.get("/2010-04-01/Accounts/<sid>/Messages.json")
    def list_messages(sid: str) -> Any:
        return jsonify(messages=[], next_page_uri=None, page=0, page_size=50, uri=request.path)

    @app.post("/2010-04-01/Accounts/<sid>/Messages.json")
    def create_message(sid: str) -> Any:
        return jsonify(sid="SM" + "0" * 32, status="queued", to=request.form.get("To")), 201

    class Quiet(WSGIRequestHandler):  # its access log is the test's, not the service's
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def _signed_post(client: Any, evt: dict[str, Any], now: int) -> int:
    body = sp.body_of(evt)
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sp.signature_header(body, WEBHOOK_SECRET, now),
    }
    status: int = client.post("/webhooks/stripe", data=body, headers=headers).status_code
    return status


def test_logs_hold_no_secrets_card_numbers_or_contact_details(
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
    twilio_stand_in: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # root: every logger that does not set its own level
    for name in ("recovery", "werkzeug", "stripe", "twilio", "urllib3", "apscheduler"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    fake = FakeStripeGateway(clock=clock)
    settings = make_settings(
        sqlite_url,
        tmp_path,
        stripe_api_key=STRIPE_KEY,
        secret_key=SECRET_KEY,
        twilio_auth_token=TWILIO_TOKEN,
    )
    rt = build_runtime(settings, clock=clock, gateway=fake)
    app = create_app(runtime=rt)
    app.config["TESTING"] = True
    client = app.test_client()
    now = int(clock.now().timestamp())

    # 1. Webhook deliveries carrying personal data and card details.
    customer = sp.customer(
        "cus_L",
        email=CUSTOMER_EMAIL,
        phone=CUSTOMER_PHONE,
        name="Dana Lee",
        metadata={"note": f"card {CARD_NUMBER}", "phone": CUSTOMER_PHONE},
    )
    charge = sp.failed_charge("ch_L", "cus_L", "pi_L", created=now - 30)
    charge["billing_details"].update(email=CUSTOMER_EMAIL, phone=CUSTOMER_PHONE, name="Dana Lee")
    charge["description"] = f"renewal, card {CARD_NUMBER}"
    invoice = sp.invoice(
        "in_L",
        "cus_L",
        "sub_L",
        attempt_count=1,
        customer_email=CUSTOMER_EMAIL,
        customer_phone=CUSTOMER_PHONE,
    )
    deliveries = [
        sp.event("customer.updated", customer, now - 60),
        sp.event("payment_method.attached", sp.card_payment_method("pm_L", "cus_L"), now - 50),
        sp.event("charge.failed", charge, now - 30),
        sp.event("invoice.payment_failed", invoice, now - 20),
        sp.event("customer.subscription.updated", {"id": "sub_L", "items": {"data": 5}}, now),
    ]
    assert [_signed_post(client, e, now) for e in deliveries] == [200] * 5
    assert _signed_post(client, deliveries[0], now) == 200  # duplicate
    body = sp.body_of(deliveries[0])
    bad = {"Stripe-Signature": sp.signature_header(body, "whsec_wrong_secret_x", now)}
    assert client.post("/webhooks/stripe", data=body, headers=bad).status_code == 400
    assert (
        client.post(
            "/webhooks/stripe",
            data=b"{" + body,
            headers={"Stripe-Signature": sp.signature_header(b"{" + body, WEBHOOK_SECRET, now)},
        ).status_code
        == 400
    )

    from recovery.worker import Worker

    assert Worker(rt).process_events() == 5  # the worker processes what the requests stored

    # 2. The API, with a good and a bad bearer key.
    good = {"Authorization": f"Bearer {API_KEY}"}
    assert client.get("/api/v1/customers/cus_L", headers=good).status_code == 200
    assert client.get("/api/v1/events?status=pending", headers=good).status_code == 200
    bad_key = {"Authorization": "Bearer not-the-key-" + CUSTOMER_EMAIL}
    assert client.get("/api/v1/customers/cus_L", headers=bad_key).status_code == 401

    # 3. A failed renewal: a case, reminders; the worker sends them (one refused for good).
    from tests.support.scenario import Story

    story = Story(rt, fake, clock)
    rt.mailer = mailer = _RecordingMailer()
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.run_due()
    for _ in range(4):
        if not story.advance_to_next_due():
            break
    assert mailer.sent, "the scenario sent no reminder: it no longer exercises the outbox"

    # 4. A Twilio look-up (what the outbox does before re-sending a text after a crash).
    from recovery.adapters.sms import TwilioSms

    sms = TwilioSms(
        "AC" + "1" * 32,
        TWILIO_TOKEN,
        messaging_service_sid="MG" + "2" * 32,
        api_base=twilio_stand_in,
    )
    assert sms.find_sent(CUSTOMER_PHONE, "Your card was declined", clock.now()) is None
    sms.send(CUSTOMER_PHONE, f"Acme: please update your card {settings.public_url}/update/x")

    # 5. The database goes away (a URL with a password in it).
    down_settings = make_settings(
        "postgresql+psycopg://recovery:db-pass-Hn3Jk8Lm@127.0.0.1:9/recovery", tmp_path
    )
    down = create_app(runtime=build_runtime(down_settings, clock=clock, gateway=fake))
    down.config["TESTING"] = True
    now = int(clock.now().timestamp())  # the story moved the clock on
    assert _signed_post(down.test_client(), deliveries[1], now) == 503

    records = caplog.records
    text = caplog.text + "\n".join(
        f"{r.name}: {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in records
    )
    exact = [STRIPE_KEY, TWILIO_TOKEN, SECRET_KEY, API_KEY, WEBHOOK_SECRET, "db-pass-Hn3Jk8Lm"]
    found = leaks(text, exact)
    where = sorted(
        {
            f"{r.name} ({r.pathname.rsplit('/', 3)[-1]}:{r.lineno})"
            for r in records
            if leaks(f"{r.getMessage()} {r.exc_text or ''}", exact)
        }
    )
    # the scenarios log a handful of warnings and errors (9 today): fewer means capture broke
    assert len(records) >= 5, "the scenarios logged (almost) nothing: is capture working?"
    assert not found, f"{len(found)} leaks, logged by {where}:\n" + "\n".join(found[:40])
