"""A customer whose new card fails on the card-update page reads so there ("Try another card"):
the reminders that failure sets off start the next day at the send hour in their time zone,
not seconds later while they may still be on the page. When the worker finishes the card
instead (the customer closed the tab before the page could show the outcome), nobody has told
them: the reminders start at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from recovery.models import OutboxMessage
from recovery.runtime import Runtime
from recovery.services.cases import timeline
from tests.support.card_update import Linked, csrf_from, failed_renewal_with_link
from tests.support.scenario import Story


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: Any) -> Story:
    return Story(runtime, fake_gateway, clock)


@pytest.fixture
def linked(story: Story, runtime: Runtime, clock: Any) -> Linked:
    """A declined renewal (insufficient funds: the soft sequence, its day 0 sent), two days on,
    in the afternoon: the customer opens the link from that reminder."""
    linked = failed_renewal_with_link(story, runtime)
    story.deliver()
    story.run_due()
    clock.set(clock.now() + timedelta(days=2, hours=5))
    story.run_due()
    return linked


def _new_card_declined(client: Any, fake_gateway: Any, linked: Linked, *, returns: bool) -> None:
    page = client.get(f"/update/{linked.token}")
    posted = client.post(f"/update/{linked.token}", data={"csrf_token": csrf_from(page.text)})
    session_id = posted.headers["Location"].rsplit("/", 1)[1]
    # An expired card: the case now needs a new card - another reminder sequence.
    fake_gateway.complete_checkout_session(session_id, declines_with="expired_card")
    if returns:
        done = client.get(f"/update/{linked.token}/done?session_id={session_id}")
        assert "Try another card" in done.text


def _sent_since(runtime: Runtime, since: datetime) -> list[tuple[str, datetime]]:
    with runtime.db.transaction() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.sent_at >= since)).all()
        return [(m.template, m.sent_at) for m in rows if m.sent_at is not None]


def _play(story: Story, clock: Any, hours: float) -> None:
    """Stripe's webhooks arrive and the worker runs, minute by minute."""
    end = clock.now() + timedelta(hours=hours)
    while clock.now() < end:
        story.deliver()
        story.run_due()
        clock.set(clock.now() + timedelta(minutes=1))


def test_reminders_wait_for_the_next_day_after_the_customer_saw_the_card_fail(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, clock: Any, linked: Linked
) -> None:
    seen_at = clock.now()  # 14:00 UTC, 15:00 for the customer (Europe/Berlin)
    zone = ZoneInfo("Europe/Berlin")
    _new_card_declined(client, fake_gateway, linked, returns=True)
    _play(story, clock, hours=18)  # until 09:00 the next morning, their time
    assert _sent_since(runtime, seen_at) == []
    with runtime.db.transaction() as s:
        pending = s.scalars(select(OutboxMessage).where(OutboxMessage.status == "pending")).all()
        assert "card_replace" in {m.template for m in pending}
        told = timeline.story(s, linked.case_id)
        assert told is not None
        lines = [line.summary for line in told.lines]
    assert any("from the next day: the customer saw the new card fail" in x for x in lines)
    # Still no new card the next morning: now they are asked for one, at the send hour.
    _play(story, clock, hours=2)
    sent = _sent_since(runtime, seen_at)
    assert [template for template, _ in sent] == ["card_replace"]
    local = sent[0][1].astimezone(zone)
    assert local.date() == seen_at.astimezone(zone).date() + timedelta(days=1)
    assert local.hour == runtime.rules.reminders.send_hour


def test_reminders_start_at_once_when_the_page_never_showed_the_failure(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, clock: Any, linked: Linked
) -> None:
    seen_at = clock.now()
    _new_card_declined(client, fake_gateway, linked, returns=False)
    _play(story, clock, hours=0.1)
    assert [template for template, _ in _sent_since(runtime, seen_at)] == ["card_replace"]
