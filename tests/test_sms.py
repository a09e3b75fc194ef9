"""SMS through the real twilio SDK against a local Twilio stand-in: consent, quiet hours,
segments, opt-outs (21610 and inbound STOP, signed like Twilio), and a worker killed between
Twilio's answer and our commit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from recovery.adapters.clock import FrozenClock
from recovery.adapters.sms import TwilioSms
from recovery.app import create_app
from recovery.domain import sms
from recovery.models import SmsOptOut
from recovery.runtime import Runtime
from tests.support.messaging import (
    MESSAGING_SERVICE,
    TWILIO_SID,
    TWILIO_TOKEN,
    messages,
    messaging_runtime,
    with_phone,
)
from tests.support.scenario import Story
from tests.support.twilio_fake import TwilioFake, twilio_fake

PHONE = "+4915112345678"


# ---- pure rules ---------------------------------------------------------------------------


def test_segments_gsm7_and_ucs2() -> None:
    assert sms.segments("a" * 160) == sms.Segments("GSM-7", 160, 1)
    assert sms.segments("a" * 161).count == 2
    assert sms.segments("€" * 80) == sms.Segments("GSM-7", 160, 1)  # extension: two septets
    assert sms.segments("é" * 160).encoding == "GSM-7"
    assert sms.segments("ж" * 70) == sms.Segments("UCS-2", 70, 1)
    assert sms.segments("ж" * 71).count == 2
    assert sms.segments("😀" * 35).units == 70  # astral characters take two code units
    assert sms.segments("ж" * 135).count == 3


def test_e164_and_masking() -> None:
    assert sms.e164("+49 151 12345678") == PHONE
    assert sms.e164("015112345678") is None  # no country code: never guessed
    assert sms.e164("+1 555") is None
    assert sms.mask_phone(PHONE) == "+49*********78"
    assert sms.mask_email("kim@example.com") == "k***@example.com"


def test_quiet_hours_in_the_recipients_zone() -> None:
    hours = sms.QuietHours()
    late = datetime(2026, 11, 2, 20, 30, tzinfo=UTC)  # 21:30 in Berlin
    assert sms.next_allowed(late, "Europe/Berlin", hours) == datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    early = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    assert sms.next_allowed(early, "Europe/Berlin", hours) == datetime(
        2026, 11, 2, 8, 0, tzinfo=UTC
    )
    ok = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert sms.next_allowed(ok, "Europe/Berlin", hours) == ok


def test_keywords() -> None:
    assert sms.keyword(" stop ") == "stop"
    assert sms.keyword("Unsubscribe") == "stop"
    assert sms.keyword("START") == "start"
    assert sms.keyword("help") == "help"
    assert sms.keyword("stop sending me this") is None


# ---- against the Twilio stand-in ----------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    with twilio_fake() as fake:
        yield fake


@pytest.fixture
def sms_runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any, twilio: TwilioFake
) -> Iterator[Runtime]:
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway, twilio_url=twilio.url)
    yield rt
    rt.db.dispose()


@pytest.fixture
def story(sms_runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(sms_runtime, fake_gateway, clock)


def _case_with_sms(story: Story, consent: str | None = "true") -> int:
    b = story.customer(country="DE")
    with_phone(story, b, consent=consent)
    story.deliver()
    # A debit card short of funds: the first retry waits for Friday's payday (6 November),
    # so the case is still open when the day-3 text is due.
    story.stripe_charges(b.invoice, decline_code="insufficient_funds")
    return story.case(b.invoice).id


def _sms_row(story: Story, case_id: int) -> Any:
    return next(m for m in messages(story.rt, case_id=case_id) if m.channel == "sms")


def _run_until_sms(story: Story, case_id: int) -> None:
    story.clock.set(_sms_row(story, case_id).send_after)
    story.worker.run_until_idle()


def test_day_3_text_goes_out_with_link_and_opt_out_words(story: Story, twilio: TwilioFake) -> None:
    case_id = _case_with_sms(story)
    row = _sms_row(story, case_id)
    assert row.send_after == datetime(2026, 11, 5, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    _run_until_sms(story, case_id)
    [sent] = twilio.sent
    assert sent["To"] == PHONE and sent["MessagingServiceSid"] == MESSAGING_SERVICE
    assert "http://recovery.test/update/" in sent["Body"] and "STOP" in sent["Body"]
    assert sms.segments(sent["Body"]).count <= 2
    assert twilio.requests[-1]["auth"] == f"{TWILIO_SID}:{TWILIO_TOKEN}"
    row = _sms_row(story, case_id)
    assert row.status == "sent" and row.provider_id == twilio.messages[0]["sid"]
    # The text's link opens the card-update page; the stored text never held its token.
    token = sent["Body"].split("http://recovery.test/update/", 1)[1].split()[0]
    assert token not in row.body and "{card-update-token}" in row.body
    page = create_app(runtime=story.rt).test_client().get(f"/update/{token}")
    assert page.status_code == 200


def test_a_from_number_instead_of_a_messaging_service(twilio: TwilioFake) -> None:
    sender = TwilioSms(TWILIO_SID, TWILIO_TOKEN, from_number="+15005550006", api_base=twilio.url)
    sid = sender.send(PHONE, "Acme: hello")
    [sent] = twilio.sent
    assert (sent["To"], sent["From"], sent["Body"]) == (PHONE, "+15005550006", "Acme: hello")
    assert "MessagingServiceSid" not in sent and sid == twilio.messages[0]["sid"]


def test_no_text_without_consent(story: Story, twilio: TwilioFake) -> None:
    case_id = _case_with_sms(story, consent=None)
    assert [m.channel for m in messages(story.rt, case_id=case_id)].count("sms") == 0
    story.clock.advance(timedelta(days=4))
    story.worker.run_until_idle()
    assert twilio.sent == []


def test_consent_withdrawn_after_planning_cancels_the_text(
    story: Story, twilio: TwilioFake
) -> None:
    case_id = _case_with_sms(story)
    cus_id = story.case(_invoice(story, case_id)).customer_id
    cus = story.fake.retrieve_customer(str(cus_id))
    story.clock.advance(timedelta(seconds=1))
    story.fake.put({**cus, "metadata": {}})
    story.fake.add_event("customer.updated", story.fake.retrieve_customer(str(cus_id)))
    story.deliver()
    _run_until_sms(story, case_id)
    assert twilio.sent == []
    row = _sms_row(story, case_id)
    assert row.status == "cancelled" and "consent" in (row.last_error or "")


def _invoice(story: Story, case_id: int) -> str:
    from recovery.models import RecoveryCase

    with story.rt.db.transaction() as s:
        case = s.get(RecoveryCase, case_id)
        assert case is not None
        return case.invoice_id


def test_nothing_outside_the_recipients_hours(story: Story, twilio: TwilioFake) -> None:
    case_id = _case_with_sms(story)
    # A retry with backoff could land at night: the sender checks again and defers.
    story.clock.set(datetime(2026, 11, 4, 21, 0, tzinfo=UTC))  # 22:00 in Berlin
    with story.rt.db.transaction() as s:
        from recovery.models import DueAction

        for action in s.query(DueAction).filter(DueAction.kind == "outbox.send"):
            if action.status == "pending" and action.due_at.day == 5:
                action.due_at = story.clock.now()
    story.worker.run_until_idle()
    assert twilio.sent == []
    assert _sms_row(story, case_id).send_after == datetime(2026, 11, 5, 8, 0, tzinfo=UTC)
    story.clock.set(datetime(2026, 11, 5, 8, 0, tzinfo=UTC))
    story.worker.run_until_idle()
    assert len(twilio.sent) == 1


def test_21610_fails_the_message_and_stores_the_opt_out(story: Story, twilio: TwilioFake) -> None:
    case_id = _case_with_sms(story)
    twilio.fail_next(400, 21610)
    _run_until_sms(story, case_id)
    row = _sms_row(story, case_id)
    assert row.status == "failed" and "21610" in (row.last_error or "")
    with story.rt.db.transaction() as s:
        opt_out = s.get(SmsOptOut, PHONE)
        assert opt_out is not None and opt_out.opted_out and opt_out.via == "twilio_21610"


def test_a_twilio_outage_is_retried(story: Story, twilio: TwilioFake) -> None:
    case_id = _case_with_sms(story)
    twilio.fail_next(503, 20500)
    _run_until_sms(story, case_id)
    assert _sms_row(story, case_id).status == "pending"
    story.clock.advance(timedelta(minutes=3))
    story.worker.run_until_idle()
    assert _sms_row(story, case_id).status == "sent"
    assert len(twilio.messages) == 1


def _signed_post(client: Any, path: str, params: dict[str, str]) -> Any:
    url = "http://recovery.test" + path
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def test_inbound_stop_is_honoured(story: Story, twilio: TwilioFake, sms_runtime: Runtime) -> None:
    case_id = _case_with_sms(story)
    client = create_app(runtime=sms_runtime).test_client()
    params = {"From": PHONE, "To": "+15005550006", "Body": "Stop", "MessageSid": "SMx"}
    forged = client.post(
        "/webhooks/twilio/inbound", data=params, headers={"X-Twilio-Signature": "bad"}
    )
    assert forged.status_code == 403
    assert _signed_post(client, "/webhooks/twilio/inbound", params).status_code == 200
    _run_until_sms(story, case_id)
    assert twilio.sent == []
    row = _sms_row(story, case_id)
    assert row.status == "cancelled" and "opted out" in (row.last_error or "")
    # START opts back in.
    params["Body"] = "START"
    assert _signed_post(client, "/webhooks/twilio/inbound", params).status_code == 200
    with story.rt.db.transaction() as s:
        standing = s.get(SmsOptOut, PHONE)
        assert standing is not None and not standing.opted_out


def test_status_callback_marks_undelivered(
    story: Story, twilio: TwilioFake, sms_runtime: Runtime
) -> None:
    case_id = _case_with_sms(story)
    _run_until_sms(story, case_id)
    sid = _sms_row(story, case_id).provider_id
    client = create_app(runtime=sms_runtime).test_client()
    params = {"MessageSid": str(sid), "MessageStatus": "undelivered", "ErrorCode": "30006"}
    assert _signed_post(client, "/webhooks/twilio/status", params).status_code == 204
    row = _sms_row(story, case_id)
    assert row.status == "failed" and "30006" in (row.last_error or "")


class WorkerKilled(BaseException):
    pass


class DiesAfterSending:
    def __init__(self, inner: TwilioSms) -> None:
        self.inner, self.died = inner, False

    def send(self, to: str, body: str) -> str:
        sid = self.inner.send(to, body)
        if not self.died:
            self.died = True
            raise WorkerKilled
        return sid

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        return self.inner.find_sent(to, body, since)


def test_worker_killed_after_twilio_accepted_never_texts_twice(
    story: Story, twilio: TwilioFake
) -> None:
    case_id = _case_with_sms(story)
    story.rt.sms = DiesAfterSending(
        TwilioSms(
            TWILIO_SID, TWILIO_TOKEN, messaging_service_sid=MESSAGING_SERVICE, api_base=twilio.url
        )
    )
    story.clock.set(_sms_row(story, case_id).send_after)
    with pytest.raises(WorkerKilled):
        story.worker.run_until_idle()
    assert len(twilio.sent) == 1 and _sms_row(story, case_id).status == "pending"
    story.clock.advance(timedelta(minutes=6))  # the lease expires; another run takes over
    story.worker.run_until_idle()
    row = _sms_row(story, case_id)
    assert row.status == "sent" and row.provider_id == twilio.messages[0]["sid"]
    assert len(twilio.sent) == 1  # asked Twilio first (a GET), found it, did not resend
    assert any(r["method"] == "GET" for r in twilio.requests)
