"""Email end to end over a real SMTP server (aiosmtpd on loopback): headers, plain text only,
the link; header injection; a hard bounce; and a worker killed between SMTP and our commit."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.generator import BytesGenerator
from pathlib import Path
from typing import Any

import pytest

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.adapters.email import (
    Email,
    Outgoing,
    SmtpMailer,
    address,
    build,
    message_id,
    parse_smtp_url,
)
from recovery.domain.reminders import TEMPLATES
from recovery.runtime import Runtime
from recovery.services.messaging import reminders
from tests.conftest import API_KEY, START
from tests.support.messaging import messages, messaging_runtime, with_locales
from tests.support.scenario import Story
from tests.support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture
def mail_runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any, sink: SmtpSink
) -> Iterator[Runtime]:
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway, smtp_url=sink.url)
    yield rt
    rt.db.dispose()


@pytest.fixture
def story(mail_runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(mail_runtime, fake_gateway, clock)


def _failed_case(story: Story) -> int:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    return story.case(b.invoice).id


def test_reminder_arrives_as_plain_text_from_a_named_person(story: Story, sink: SmtpSink) -> None:
    case_id = _failed_case(story)
    story.worker.run_until_idle()
    [mail] = sink.messages
    assert mail["From"].addresses[0].display_name == "Dana at Acme"
    assert mail["From"].addresses[0].addr_spec == "billing@acme.example"
    assert str(mail["Reply-To"]) == "Dana at Acme <billing@acme.example>"
    assert mail["To"].addresses[0].addr_spec == "kim@example.com"
    assert mail["Message-ID"].startswith("<") and mail["Message-ID"].endswith("@acme.example>")
    assert not mail.is_multipart() and mail.get_content_type() == "text/plain"
    body = mail.get_content()
    assert "Hi Kim," in body and "$20.00" in body and "Visa card ending in 4242" in body
    assert "http://recovery.test/update/" in body
    assert "<html" not in body.lower()
    [row] = [m for m in messages(story.rt, case_id=case_id) if m.status == "sent"]
    assert row.provider_id == mail["Message-ID"]


def test_a_rounds_emails_are_each_recorded_with_their_own_message_id(
    story: Story, sink: SmtpSink
) -> None:
    """Sent in one round, marked sent in one statement (on PostgreSQL one UPDATE over arrays):
    each row keeps the Message-ID of its own email, and one attempt."""
    cases = [_failed_case(story) for _ in range(3)]
    story.worker.run_until_idle()
    assert len(sink.messages) == 3
    ids_sent = {mail["Message-ID"] for mail in sink.messages}
    rows = [m for c in cases for m in messages(story.rt, case_id=c) if m.status == "sent"]
    assert len(rows) == 3 and {row.provider_id for row in rows} == ids_sent
    assert all(row.attempts == 1 and row.sent_at == story.clock.now() for row in rows)
    # each row's is the one derived from its own dedupe key, not another's of the round
    assert all(
        row.provider_id == message_id(row.dedupe_key, "billing@acme.example") for row in rows
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user"),
    [
        (
            "smtp://u%40x:p%3Aw@mail.example:587?tls=starttls",
            "mail.example",
            587,
            "starttls",
            "u@x",
        ),
        ("smtps://mail.example", "mail.example", 465, "implicit", None),
        ("smtp://mail.example:465", "mail.example", 465, "implicit", None),
        ("smtp://mail.example", "mail.example", 587, "starttls", None),
        ("smtp://127.0.0.1:2525?tls=none", "127.0.0.1", 2525, "none", None),
    ],
)
def test_smtp_url_asks_for_starttls_or_implicit_tls(
    url: str, host: str, port: int, tls: str, user: str | None
) -> None:
    config = parse_smtp_url(url)
    assert (config.host, config.port, config.tls, config.username) == (host, port, tls, user)


@pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "smtp://h?tls=maybe"])
def test_a_bad_smtp_url_is_refused_with_a_hint(url: str) -> None:
    with pytest.raises(ValueError, match="RECOVERY_SMTP_URL"):
        parse_smtp_url(url)


def test_cr_lf_in_names_cannot_add_headers() -> None:
    evil = "Dana\r\nBcc: everyone@evil.example"
    msg = build(
        sender=address(evil, "billing@acme.example"),
        reply_to=address(evil, "billing@acme.example"),
        to=address("Kim\nCc: x@evil.example", "kim@example.com"),
        subject="Hello\r\nBcc: more@evil.example",
        body="text",
        dedupe_key="k",
        date=START,
    )
    wire = msg.as_string()
    header_names = [line.split(":", 1)[0] for line in wire.split("\n\n", 1)[0].splitlines()]
    assert "Bcc" not in header_names and "Cc" not in header_names and "X-Evil" not in header_names
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg["From"].addresses[0].display_name == "Dana Bcc: everyone@evil.example"
    # An address (not a name) with a line break is refused outright.
    with pytest.raises(ValueError):
        address("Dana", "billing@acme.example\r\nX-Evil: 1")


def test_a_hard_bounce_fails_the_message_visibly(
    story: Story, sink: SmtpSink, mail_runtime: Runtime
) -> None:
    from recovery.app import create_app

    case_id = _failed_case(story)
    sink.reject_with("550 5.1.1 no such user")
    story.worker.run_until_idle()
    row = next(m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "failed" and "550" in (row.last_error or "")
    client = create_app(runtime=mail_runtime).test_client()
    body = client.get(
        f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).get_json()
    assert body["messages"][0]["status"] == "failed"
    assert "550" in body["messages"][0]["last_error"]


def test_a_temporary_failure_is_retried_with_backoff(story: Story, sink: SmtpSink) -> None:
    case_id = _failed_case(story)
    sink.reject_with("451 4.3.0 try again later")
    story.worker.run_until_idle()
    row = next(m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "pending" and sink.messages == []
    story.clock.advance(timedelta(minutes=3))
    story.worker.run_until_idle()
    row = next(m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "sent" and len(sink.messages) == 1


class WorkerKilled(BaseException):
    """The process dies: nothing after this line runs, nothing uncommitted survives."""


class DiesAfterSending:
    def __init__(self, inner: SmtpMailer) -> None:
        self.inner, self.died = inner, False

    def send(self, message: Outgoing) -> str:
        result = self.inner.send(message)
        if not self.died:
            self.died = True
            raise WorkerKilled
        return result


def test_worker_killed_after_smtp_resends_with_the_same_message_id(
    story: Story, sink: SmtpSink
) -> None:
    case_id = _failed_case(story)
    story.rt.mailer = DiesAfterSending(SmtpMailer(parse_smtp_url(sink.url)))
    with pytest.raises(WorkerKilled):
        story.worker.run_until_idle()
    row = next(m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "pending" and len(sink.messages) == 1  # delivered, not recorded
    story.clock.advance(timedelta(minutes=6))  # the dead worker's lease expires
    story.worker.run_until_idle()
    row = next(m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "sent" and row.attempts == 2
    # At least once, never silently lost; the copy carries the same Message-ID.
    assert len(sink.messages) == 2
    assert sink.messages[0]["Message-ID"] == sink.messages[1]["Message-ID"] == row.provider_id


def _context(locale: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from recovery.models import PaymentMethod

    card = PaymentMethod(id="pm_1", brand="visa", last4="4242")
    return {
        "business": "Acme",
        "sender": "Dana",
        "product": "Acme Pro",
        "name": "Kim",
        "amount": i18n.format_money(1200, "eur", locale),
        "card": reminders.card_label(card, locale),
        "link": "https://recovery.example/update/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "deadline": i18n.format_day(datetime(2026, 11, 30, tzinfo=UTC), locale),
    }


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_in_every_locale(template: str, locale: str) -> None:
    """StrictUndefined: no missing variable; the recorder: no untranslated message; and a
    translation that is not an English copy."""
    i18n.MISSING.seen.clear()
    rendered = reminders.render_email(template, locale, _context(locale))
    assert rendered.subject and "\n" not in rendered.subject
    assert "Acme" in rendered.body and "Kim" in rendered.body
    text = reminders.render_sms(template, locale, _context(locale), max_segments=2)
    assert text is not None and "recovery.example/update/" in text and "STOP" in text
    for name in ("", "x"):  # and without a name or card
        ctx = {**_context(locale), "name": name, "card": name}
        reminders.render_email(template, locale, ctx)
        reminders.render_sms(template, locale, ctx, max_segments=2)
    assert i18n.MISSING.seen == set()
    if locale != "en":
        english = reminders.render_email(template, "en", _context("en"))
        assert rendered.subject != english.subject
        link = _context(locale)["link"]
        body_lines = set(rendered.body.splitlines()) - {"", "Dana, Acme", link}
        assert not body_lines & set(english.body.splitlines()), "an English line is left"


@pytest.mark.parametrize(
    ("locale", "amount", "day", "card"),
    [
        ("de", "12,00\xa0€", "30. November 2026", "Visa-Karte mit der Endung 4242"),
        ("fr", "12,00\xa0€", "30 novembre 2026", "carte Visa se terminant par 4242"),
        ("es", "12,00\xa0€", "30 de noviembre de 2026", "tarjeta Visa terminada en 4242"),
        ("pt_BR", "€\xa012,00", "30 de novembro de 2026", "cartão Visa com final 4242"),
        ("ru", "12,00\xa0€", "30 ноября 2026", "карта Visa с последними цифрами 4242"),
        ("en", "€12.00", "November 30, 2026", "Visa card ending in 4242"),
    ],
)
def test_money_dates_and_cards_are_written_the_local_way(
    locale: str, amount: str, day: str, card: str
) -> None:
    rendered = reminders.render_email("card_replace", locale, _context(locale))
    assert amount in rendered.body and day in rendered.body and card in rendered.body


def test_email_goes_out_in_the_customers_language(story: Story, sink: SmtpSink) -> None:
    b = story.customer(country="DE", amount=1200)
    with_locales(story, b, ["de-DE"])
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.worker.run_until_idle()
    [mail] = sink.messages
    assert mail["Subject"] == "Ihre Zahlung für Acme ist nicht durchgegangen"
    body = mail.get_content()
    assert "Hallo Kim," in body and "12,00\xa0$" in body
    assert "Visa-Karte mit der Endung 4242" in body


def test_the_stored_message_never_holds_the_links_token(
    story: Story, sink: SmtpSink, mail_runtime: Runtime
) -> None:
    from recovery.app import create_app

    case_id = _failed_case(story)
    [stored] = [m for m in messages(story.rt, case_id=case_id) if m.step == "soft.0"]
    assert "http://recovery.test/update/{card-update-token}" in stored.body
    story.worker.run_until_idle()
    [mail] = sink.messages
    token = mail.get_content().split("http://recovery.test/update/", 1)[1].split()[0]
    assert len(token) == 43
    for row in messages(story.rt):
        assert token not in row.body and token not in row.subject
    # The link in the email opens the card-update page.
    client = create_app(runtime=mail_runtime).test_client()
    page = client.get(f"/update/{token}")
    assert page.status_code == 200 and "Visa ending in 4242" in page.text


# ---- the bytes of an outbox email: written directly, the same as EmailMessage's -------------


def _reference_bytes(email: Email) -> bytes:
    """What `SMTP.send_message` hands to `sendmail` for the EmailMessage (smtplib's own steps)."""
    out = io.BytesIO()
    BytesGenerator(out).flatten(email.message(), linesep="\r\n")
    return out.getvalue()


def _emails() -> Iterator[Email]:
    """Every template in every locale, and the header values where writing them directly could
    go wrong: non-ASCII, quoting, encoded-word look-alikes, long lines, line breaks."""
    when = datetime(2026, 12, 5, 3, 0, 7, tzinfo=UTC)
    base = Email(
        sender=("Dana at Acme", "billing@acme.example"),
        reply_to=("Dana at Acme", "help@acme.example"),
        to="kim@example.com",
        subject="Your payment did not go through",
        body="Hello,\n\nyour payment did not go through.\n",
        dedupe_key="case:1:reminder:1",
        date=when,
    )
    for locale in i18n.SUPPORTED_LOCALES:
        for template in sorted(TEMPLATES):
            rendered = reminders.render_email(template, locale, _context(locale))
            yield replace(base, subject=rendered.subject, body=rendered.body)
    long_word = "x" * 90
    for subject in [
        "",
        "  spaced\tout \r\n twice  ",
        "=?utf-8?q?looks_encoded?=",
        "Ihre Zahlung über 12,00 €",
        'a (comment) "quoted" <angle> [x]; semi, comma: colon',
        "word " * 20,
        long_word,
        "Ünïcode " * 12,
        "Hello\r\nBcc: more@evil.example",
    ]:
        yield replace(base, subject=subject)
    for body in ["", "one line", "x" * 200, "crlf\r\nlines\rmixed\n", "é" * 100, "\u2028sep"]:
        yield replace(base, body=body)
    for sender in [("Acme, Inc.", "billing@acme.example"), ("Zoë", "billing@acme.example")]:
        yield replace(base, sender=sender, reply_to=sender)
    for to in [
        "Kim.Lee+tag@Example.CO.uk",
        "kim@localhost",
        "kim@exämple.com",
        " kim@example.com ",
        "a=?b?=@example.com",
        "o'neil/x{y}@example.com",
    ]:
        yield replace(base, to=to)
    yield replace(base, to=f"{'k' * 70}@example.com")
    yield replace(base, date=datetime(2026, 12, 5, 4, 0, tzinfo=timezone(timedelta(hours=1))))
    yield replace(base, date=datetime(2026, 12, 5, 3, 0))  # naive: -0000
    for link in ["https://acme.example/u/abc", "https://acme.example/unsubscribe/" + "t" * 80]:
        yield replace(base, list_unsubscribe=link)


def test_an_email_written_directly_is_byte_for_byte_the_email_package_s() -> None:
    written = 0
    for email in _emails():
        wire = email.wire()
        if wire is None:  # an address beyond plain ASCII: sent as an EmailMessage
            continue
        written += 1
        assert wire.data == _reference_bytes(email), email
        assert (wire.sender, wire.recipient) == ("billing@acme.example", email.to.strip())
    assert written >= 8 * len(TEMPLATES)


def test_an_outbox_email_arrives_as_the_email_package_would_send_it(sink: SmtpSink) -> None:
    """Over SMTP, the directly written email and the EmailMessage arrive the same."""
    mailer = SmtpMailer(parse_smtp_url(sink.url))
    emails = list(_emails())
    try:
        for email in emails:
            assert mailer.send(email) == email.message_id
            mailer.send(email.message())
    finally:
        mailer.close()
    assert len(sink.messages) == 2 * len(emails)
    for direct, reference in zip(sink.messages[::2], sink.messages[1::2], strict=True):
        assert direct.as_bytes() == reference.as_bytes()
    assert sink.envelopes[::2] == sink.envelopes[1::2]
