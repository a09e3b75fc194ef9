"""The cancel flow's emails over a real SMTP server (aiosmtpd on loopback), on SQLite and
PostgreSQL: a cancellation is confirmed in writing exactly once - on a double submit, and when
Stripe was unreachable and the worker applied the choice later - in the subscriber's language,
plain text, from the business's named sender; a pause reminder goes out before billing resumes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.adapters.email import SmtpMailer, parse_smtp_url
from recovery.worker import Worker
from tests.conftest import API_KEY
from tests.support.cancel_flow import Flow, emails, make_flow, session_row
from tests.support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


def _flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, gateway: Any, sink: SmtpSink, **kw: Any
) -> Flow:
    made = make_flow(database_url, tmp_path, clock, gateway, **kw)
    made.runtime.mailer = SmtpMailer(parse_smtp_url(sink.url))
    return made


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any, sink: SmtpSink
) -> Iterator[Flow]:
    made = _flow(database_url, tmp_path, clock, fake_gateway, sink)
    yield made
    made.runtime.db.dispose()


def test_double_submit_with_stripe_down_confirms_once_with_the_end_date(
    flow: Flow, sink: SmtpSink
) -> None:
    flow.gateway.outage(3, "server_error", methods={"cancel_subscription"})
    page, started = flow.start()
    page.get()
    first = page.post("/cancel", {"reason": "too_expensive"})
    second = page.post("/cancel", {"reason": "too_expensive"})  # the double click
    assert first.status_code == second.status_code == 303
    assert session_row(flow, started["id"]).stripe_status == "pending"
    worker = Worker(flow.runtime)
    worker.run_until_idle()
    # Stripe is still down, yet the confirmation went out at once.
    [mail] = sink.messages
    assert mail["To"].addresses[0].addr_spec == "ada@example.com"
    assert mail["From"].addresses[0].display_name == "Dana at Acme"
    assert str(mail["Reply-To"]) == "Dana at Acme <billing@acme.example>"
    assert mail["Subject"] == "Your Acme subscription is cancelled"
    assert not mail.is_multipart() and mail.get_content_type() == "text/plain"
    body = mail.get_content()
    assert "Hello Ada," in body
    assert "You can keep using your subscription until November 22, 2026" in body
    assert f"Reference: {started['id']}" in body
    for _ in range(4):  # the worker applies the choice once Stripe answers again
        flow.clock.advance(timedelta(minutes=10))
        worker.run_until_idle()
    assert session_row(flow, started["id"]).stripe_status == "applied"
    assert [w.method for w in flow.writes()] == ["cancel_subscription"] * len(flow.writes())
    assert len({w.idempotency_key for w in flow.writes()}) == 1
    assert len(sink.messages) == 1  # still exactly one email
    [row] = emails(flow)
    assert (row.status, row.provider_id) == ("sent", mail["Message-ID"])


def test_the_confirmation_speaks_the_subscribers_language(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any, sink: SmtpSink
) -> None:
    flow = _flow(database_url, tmp_path, clock, fake_gateway, sink, locales=["de-DE"])
    try:
        page, _ = flow.start()
        page.get()
        page.post("/cancel")
        Worker(flow.runtime).run_until_idle()
    finally:
        flow.runtime.db.dispose()
    [mail] = sink.messages
    body = mail.get_content()
    assert mail["Subject"] == "Ihr Abo bei Acme ist gekündigt"
    assert "22. November 2026" in body
    assert "Hallo Ada," in body


def test_a_smtp_outage_is_retried_and_shows_in_the_api(flow: Flow, sink: SmtpSink) -> None:
    page, started = flow.start()
    page.get()
    page.post("/cancel")
    sink.reject_with("451 4.3.0 try again later")
    worker = Worker(flow.runtime)
    worker.run_until_idle()
    assert sink.messages == [] and emails(flow)[0].status == "pending"
    listed = flow.client.get(
        "/api/v1/cancel-sessions", headers={"Authorization": f"Bearer {API_KEY}"}
    ).get_json()
    [item] = [s for s in listed["data"] if s["id"] == started["id"]]
    [email] = item["messages"]
    assert (email["template"], email["status"]) == ("cancel_confirmation", "pending")
    assert "451" in email["last_error"] and email["to"] == "a***@example.com"
    flow.clock.advance(timedelta(minutes=3))
    worker.run_until_idle()
    assert len(sink.messages) == 1 and emails(flow)[0].status == "sent"


def test_a_pause_is_confirmed_at_once_and_reminded_three_days_before_billing_resumes(
    flow: Flow, sink: SmtpSink
) -> None:
    page, _ = flow.start()
    page.get()
    page.post("", {"reason": "temporary"})
    page.get("/offer")
    page.post("/offer", {"offer": "pause", "months": "2"})
    page.post("/offer", {"offer": "pause", "months": "2"})  # the double click
    worker = Worker(flow.runtime)
    worker.run_until_idle()
    # The pause is confirmed at once, like a cancellation: what changes and when, once.
    [confirmed] = sink.messages
    assert confirmed["Subject"] == "Your subscription is paused - Acme"
    body = confirmed.get_content()
    assert "You won't be charged until January 2, 2027, when billing resumes by itself." in body
    assert "We'll email you 3 days before billing resumes." in body
    resumes = datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
    flow.clock.set(resumes - timedelta(days=3))
    worker.run_until_idle()
    [_, mail] = sink.messages
    assert mail["Subject"] == "Your Acme subscription resumes on January 2, 2027"
    assert "Your pause ends on January 2, 2027, and billing resumes then." in mail.get_content()
    flow.clock.advance(timedelta(days=1))
    worker.run_until_idle()
    assert len(sink.messages) == 2


@pytest.mark.parametrize(
    ("reason", "offer", "subject", "says"),
    [
        (
            "too_expensive",
            "downgrade",
            "Your plan has changed - Acme",
            ["You now pay $9.00 per month.", "taken off your next bill on November 22, 2026."],
        ),
        (
            "switching",
            "discount",
            "Your discount is applied - Acme",
            ["You pay $15.00 per month for the next 3 months.", "your usual price applies again"],
        ),
    ],
)
def test_an_accepted_offer_is_confirmed_by_email_with_what_changes_and_when(
    flow: Flow, sink: SmtpSink, reason: str, offer: str, subject: str, says: list[str]
) -> None:
    page, started = flow.start(locale="en")
    page.get()
    page.post("", {"reason": reason})
    page.get("/offer")
    page.post("/offer", {"offer": offer})
    page.post("/offer", {"offer": offer})  # the double click: one change, one email
    Worker(flow.runtime).run_until_idle()
    [mail] = sink.messages
    assert mail["Subject"] == subject
    body = " ".join(mail.get_content().split())
    for sentence in says:
        assert sentence in body
    assert f"Reference: {started['id']}" in body


def test_the_offer_confirmation_speaks_the_subscribers_language(flow: Flow, sink: SmtpSink) -> None:
    page, _ = flow.start(locale="de")
    page.get()
    page.post("", {"reason": "too_expensive"})
    page.get("/offer")
    page.post("/offer", {"offer": "downgrade"})
    Worker(flow.runtime).run_until_idle()
    [mail] = sink.messages
    assert mail["Subject"] == "Ihr Tarif wurde geändert - Acme"
    assert "Sie zahlen jetzt 9,00\xa0$ pro Monat." in mail.get_content()
