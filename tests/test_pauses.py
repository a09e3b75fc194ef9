"""A pause instead of a loss (`retry.end_of_dunning = "offer_pause"`) end to end on the Stripe
fake, mail into aiosmtpd: the final notice's pause link, the page, one click pausing collection
in Stripe until the chosen date - once, whatever the clicks - the case closed as paused, and
the notice before billing resumes with a card-update link. Not taken: the subscription ends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.domain.pauses import add_months
from recovery.models import DunningPause, OutboxMessage
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.outreach import Outreach, body, token_in
from tests.support.smtp_sink import smtp_sink


def day(at: datetime) -> str:
    return i18n.format_day(at, "en")


RULES = """
[retry]
end_of_dunning = "offer_pause"
pause_months = {months}
"""


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.format(months=3))
    with smtp_sink() as sink:
        settings = make_settings(
            database_url,
            tmp_path,
            rules_path=rules,
            smtp_url=sink.url,
            public_url="http://recovery.test",
        )
        rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
        try:
            yield Outreach(rt, fake_gateway, clock, sink)
        finally:
            rt.db.dispose()


def _failing(story: Outreach) -> Any:
    # A Wednesday: the final notice, 26 days on, falls on a business day (a Monday).
    story.clock.set(datetime(2026, 11, 4, 9, tzinfo=UTC))
    billing = story.customer(amount=2000)
    story.deliver()
    story.fake.fail_next_payment(billing.invoice, "call_issuer", times=30)
    assert story.stripe_charges(billing.invoice) == "declined"
    return billing


def _final_notice(story: Outreach) -> Any:
    story.later(26.5)  # the final notice goes out 2 days before the 28-day window ends
    [notice] = [
        m for m in story.mails_to("kim@example.com") if m["Subject"].startswith("Last reminder")
    ]
    return notice


def _pauses(story: Outreach) -> list[Any]:
    return [r for r in story.fake.requests if r.method == "pause_subscription"]


def test_a_pause_from_the_final_notice_pauses_once_and_resumes_with_a_card_link(
    story: Outreach,
) -> None:
    billing = _failing(story)
    case = story.case(billing.invoice)
    window_end = case.opened_at + timedelta(days=28)
    notice = _final_notice(story)
    text = body(notice)
    latest = add_months(window_end, 3)
    assert f"until a date you choose up to {day(latest)}" in text
    assert "the unpaid $20.00 is cancelled" in text
    token = token_in(notice, "pause")
    assert token == token_in(notice, "update")  # the notice's own link, on another page

    page = story.client.get(f"/pause/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "The unpaid invoice of $20.00 is cancelled" in html
    two = add_months(window_end, 2)
    assert f"Pause until {day(two)}" in html
    assert "<script" not in html

    csrf = story.csrf(f"/pause/{token}")
    form = {"csrf_token": csrf, "months": "2"}
    first = story.client.post(f"/pause/{token}", data=form)
    second = story.client.post(f"/pause/{token}", data=form)  # a double submit
    other_tab = story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "3"})
    for answer in (first, second, other_tab):
        assert answer.status_code == 200
        assert "Your subscription is paused" in answer.get_data(as_text=True)
        assert f"Nothing is charged until {day(two)}" in answer.get_data(as_text=True)

    assert len(_pauses(story)) == 1  # one change in Stripe
    sub = story.fake.store["subscription"][billing.subscription]
    assert sub["pause_collection"] == {"behavior": "void", "resumes_at": int(two.timestamp())}
    assert story.fake.store["invoice"][billing.invoice]["status"] == "void"
    story.deliver()

    closed = story.case(billing.invoice)
    assert (closed.status, closed.close_reason) == ("closed", "paused")
    with story.rt.db.transaction() as s:
        pause = s.scalars(select(DunningPause)).one()
        assert (pause.status, pause.months, pause.amount_voided) == ("accepted", 2, 2000)
        [resume] = s.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "pause_resumes")
        ).all()
        assert resume.send_after == two - timedelta(days=3)

    # nothing more about the debt; the window's end does not cancel the paused subscription
    story.later(5)
    assert story.fake.store["subscription"][billing.subscription]["status"] != "canceled"

    story.clock.set(two - timedelta(days=3, hours=-1))
    story.run_due()
    [resumes] = [m for m in story.mails_to("kim@example.com") if "resumes on" in m["Subject"]]
    assert f"Your pause ends on {day(two)}" in body(resumes)
    assert "$20.00 each" in body(resumes)
    card_page = story.client.get(f"/update/{token_in(resumes, 'update')}")
    assert card_page.status_code == 200


def test_a_pause_not_taken_by_the_window_end_ends_the_subscription(story: Outreach) -> None:
    billing = _failing(story)
    notice = _final_notice(story)
    token = token_in(notice, "pause")
    story.later(3)
    assert story.fake.store["subscription"][billing.subscription]["status"] == "canceled"
    assert story.case(billing.invoice).status == "lost"
    page = story.client.get(f"/pause/{token}")
    assert "A pause isn't available any more" in page.get_data(as_text=True)
    assert _pauses(story) == []


def test_a_length_not_offered_pauses_nothing(story: Outreach) -> None:
    billing = _failing(story)
    token = token_in(_final_notice(story), "pause")
    csrf = story.csrf(f"/pause/{token}")
    answer = story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "4"})
    assert answer.status_code == 200
    assert "Pause until" in answer.get_data(as_text=True)  # the choices again
    assert _pauses(story) == []
    assert story.case(billing.invoice).status != "closed"


def test_a_bad_token_is_a_404_and_a_missing_csrf_a_400(story: Outreach) -> None:
    assert story.client.get("/pause/" + "x" * 43).status_code == 404
    assert story.client.post("/pause/" + "x" * 43, data={"months": "1"}).status_code == 400


def test_add_months_keeps_month_ends() -> None:
    assert add_months(datetime(2027, 1, 31, 9, tzinfo=UTC), 1) == datetime(
        2027, 2, 28, 9, tzinfo=UTC
    )
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 3) == datetime(2027, 2, 15, tzinfo=UTC)
