"""Shadow mode (RECOVERY_MODE=shadow): a failing renewal opens a case with planned retries and
reminders, and nothing leaves the service - the SMTP sink (aiosmtpd), the Twilio stand-in and
the Stripe fake's request log stay empty of our calls; every action that came due is recorded
as shadow with what it would have done. Switching to live sends only what is due from then on,
never a past shadow action. Pages that would change Stripe say the service is not active."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.shadow import WRITES, ShadowGateway, ShadowModeRefused
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.models import ActionStatus, DueAction, MessageStatus
from recovery.runtime import Runtime, ThreePhase
from recovery.services.registry import ACTIONS
from recovery.services.work import shadow
from tests.conftest import make_settings
from tests.support.cancel_flow import LINK_SECRET, FlowClient, seed, write_rules
from tests.support.card_update import csrf_from, failed_renewal_with_link
from tests.support.messaging import messages, messaging_runtime, with_phone
from tests.support.scenario import Story
from tests.support.smtp_sink import SmtpSink, smtp_sink
from tests.support.twilio_fake import TwilioFake, twilio_fake

SHADOW_DAYS = timedelta(days=14)  # two weeks: long enough for our first planned retry


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    with twilio_fake() as fake:
        yield fake


def _runtime(
    mode: str, database_url: str, tmp_path: Path, clock: FrozenClock, fake: Any, **urls: str
) -> Runtime:
    return messaging_runtime(database_url, tmp_path, clock, fake, mode=mode, **urls)


def _ours(fake: FakeStripeGateway, since: int) -> list[Any]:
    """Requests the service made to Stripe (not Stripe's own renewal charges of the story)."""
    return [r for r in fake.requests[since:] if not (r.idempotency_key or "").startswith("stripe:")]


def _actions(rt: Runtime) -> list[DueAction]:
    with rt.db.transaction() as s:
        return list(s.scalars(select(DueAction).order_by(DueAction.due_at, DueAction.id)))


def _run_through(
    story: Story, invoice: str, until: datetime, stripe_retries: list[datetime]
) -> None:
    """Run the service to `until`: whatever comes due, and Stripe's own retries (declined)."""
    while True:
        due = [t for t in (story.next_due(), *stripe_retries) if t is not None and t <= until]
        if not due:
            break
        story.clock.set(max(story.clock.now(), min(due)))
        if stripe_retries and stripe_retries[0] <= story.clock.now():
            stripe_retries.pop(0)
            story.stripe_charges(invoice, decline_code="insufficient_funds")
        story.run_due()
    story.clock.set(until)


def test_two_weeks_in_shadow_send_nothing_then_live_sends_only_what_is_due_from_then_on(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: FakeStripeGateway,
    sink: SmtpSink,
    twilio: TwilioFake,
) -> None:
    urls = {"smtp_url": sink.url, "twilio_url": twilio.url}
    rt = _runtime("shadow", database_url, tmp_path, clock, fake_gateway, **urls)
    story = Story(rt, fake_gateway, clock)
    billing = story.customer(country="DE")
    with_phone(story, billing)
    story.deliver()
    since = len(fake_gateway.requests)
    assert story.stripe_charges(billing.invoice, decline_code="insufficient_funds") == "declined"
    case = story.case(billing.invoice)
    assert story.pending(case.id), "the case has planned retries and reminders"
    opened = clock.now()
    # Stripe's own retries go on (we never switched them off): days 3 and 5, both declined.
    stripe_days = [opened + timedelta(days=d) for d in (3, 5)]
    _run_through(story, billing.invoice, opened + SHADOW_DAYS, stripe_days)

    assert sink.messages == [] and twilio.sent == []
    assert _ours(fake_gateway, since) == []
    shadows = [a for a in _actions(rt) if a.status == ActionStatus.SHADOW]
    kinds = {a.kind for a in shadows}
    assert {"case.retry", "case.auto_advance_off", "outbox.send"} <= kinds
    notes = [a.shadow_note or "" for a in shadows]
    assert f"switch off Stripe's own retries of {billing.invoice}" in notes
    assert any(n.startswith(f"retry charge of {billing.invoice} 20.00 USD") for n in notes), notes
    assert "email reminder 1 (soft decline) to k***@example.com" in notes
    assert "sms reminder 2 (soft decline) to +49*********78" in notes
    # each shadow action is finished when it came due, and is never claimed again
    assert all(a.finished_at is not None and a.finished_at >= a.due_at for a in shadows)
    shadow_messages = messages(rt, status=MessageStatus.SHADOW)
    assert shadow_messages and not messages(rt, status=MessageStatus.SENT)
    assert all(m.send_after <= opened + SHADOW_DAYS for m in shadow_messages)
    # Stripe's later failures planned our attempt again, each time as a new action
    retries = [a for a in shadows if a.kind == "case.retry"]
    assert len({a.dedupe_key for a in retries}) == len(retries) >= 1
    rt.db.dispose()

    # ---- switch to live ------------------------------------------------------------------
    switched = clock.now()
    live = _runtime("live", database_url, tmp_path, clock, fake_gateway, **urls)
    live_story = Story(live, fake_gateway, clock)
    live_story._delivered = len(fake_gateway.events)
    before = {a.id: (a.status, a.finished_at, a.shadow_note) for a in shadows}
    assert live_story.run_due() == 0, "nothing due at the switch: past shadow actions stay past"
    assert sink.messages == [] and twilio.sent == [] and _ours(fake_gateway, since) == []
    while live_story.advance_to_next_due(limit=timedelta(days=30)):
        if sink.messages or twilio.sent or _ours(fake_gateway, since):
            break
    sent = messages(live, status=MessageStatus.SENT)
    charged = [r for r in _ours(fake_gateway, since) if r.method == "pay_invoice"]
    assert sink.messages or twilio.sent or charged, "live mode acts"
    assert all(m.send_after > switched for m in sent)
    after = {a.id: (a.status, a.finished_at, a.shadow_note) for a in _actions(live)}
    assert all(after[i] == before[i] for i in before), "shadow actions are never re-run"
    live.db.dispose()


def test_every_action_that_calls_out_has_a_shadow_note() -> None:
    calling = {k for k, h in ACTIONS.items() if isinstance(h, ThreePhase)}
    assert calling - shadow.READS_ONLY == set(shadow.NOTED_KINDS)


def test_the_shadow_gateway_reads_and_refuses_every_write(fake_gateway: FakeStripeGateway) -> None:
    cus = fake_gateway.add_customer(email="kim@example.com", name="Kim", country="DE")
    guarded: Any = ShadowGateway(fake_gateway)
    assert guarded.retrieve_customer(cus["id"])["id"] == cus["id"]
    count = len(fake_gateway.requests)
    for name in sorted(WRITES):
        with pytest.raises(ShadowModeRefused):
            getattr(guarded, name)("x", idempotency_key="k")
    assert len(fake_gateway.requests) == count, "no write reached Stripe"
    # the write list names only methods the gateway has
    assert all(callable(getattr(fake_gateway, name)) for name in WRITES)


def test_in_shadow_the_card_update_page_changes_nothing_and_says_so(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    rt = _runtime("shadow", database_url, tmp_path, clock, fake_gateway)
    story = Story(rt, fake_gateway, clock)
    linked = failed_renewal_with_link(story, rt)
    client = create_app(runtime=rt).test_client()
    page = client.get(f"/update/{linked.token}")
    assert page.status_code == 200
    since = len(fake_gateway.requests)
    answer = client.post(
        f"/update/{linked.token}",
        data={"csrf_token": csrf_from(page.get_data(as_text=True))},
        headers={"Accept-Language": "de"},
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 503 and "Location" not in answer.headers
    assert "Dieser Dienst ist noch nicht aktiv" in text
    assert "Es wurde nichts geändert" in text
    assert fake_gateway.requests[since:] == [], "no Checkout session was created"
    assert answer.headers["Cache-Control"] == "no-store"
    rt.db.dispose()


def test_in_shadow_the_cancel_flow_decides_nothing_at_stripe(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    seeded = seed(fake_gateway)
    settings = make_settings(
        database_url,
        tmp_path,
        rules_path=write_rules(tmp_path),
        extra={"RECOVERY_CANCEL_LINK_SECRET": LINK_SECRET},
        mode="shadow",
    )
    from recovery.services.registry import build_runtime

    rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
    client = create_app(runtime=rt).test_client()
    page, _ = FlowClient.start(client, seeded)
    assert page.get().status_code == 200
    since = len(fake_gateway.requests)
    for step, form in (("/offer", {"offer": "pause", "months": "2"}), ("/cancel", {})):
        answer = page.post(step, form)
        assert answer.status_code == 503, step
        assert "This service is not active yet" in page.text()
        assert "Nothing was changed" in page.text()
    writes = [r for r in fake_gateway.requests[since:] if r.idempotency_key is not None]
    assert writes == []
    assert fake_gateway.retrieve_subscription(seeded.subscription)["status"] == "active"
    rt.db.dispose()


def test_live_pages_are_untouched_by_the_shadow_check(client: Any) -> None:
    # live mode (the default): the unknown link gets the card-update page's own answer
    assert client.post("/update/nope", data={}).status_code in (400, 404)


def test_without_a_mail_provider_shadow_messages_are_not_called_sent(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    # Live without SMTP keeps messages in the local outbox and marks them sent; shadow mode
    # says what they are: planned, due, and not sent.
    rt = _runtime("shadow", database_url, tmp_path, clock, fake_gateway)
    story = Story(rt, fake_gateway, clock)
    billing = story.customer(country="DE")
    story.deliver()
    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    story.run_due()
    assert messages(rt, status=MessageStatus.SENT) == []
    [first] = messages(rt, status=MessageStatus.SHADOW)
    assert first.channel == "email" and first.provider_id is None
    rt.db.dispose()


def test_doctor_warns_in_shadow_mode(sqlite_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    from recovery.services.ops.doctor import Probes, run
    from recovery.services.registry import build_runtime

    rt = build_runtime(make_settings(sqlite_url, tmp_path, mode="shadow"), clock=clock)
    [mode] = [c for c in run(rt, Probes(timeout=1.0)).checks if c.name == "mode"]
    assert mode.status.value == "warn" and "nothing is charged" in mode.detail
    assert "RECOVERY_MODE=live" in mode.fix
    rt.db.dispose()
