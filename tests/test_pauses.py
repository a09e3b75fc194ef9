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
from recovery.services.outreach import contacts
from recovery.services.pauses import offer
from recovery.services.registry import build_runtime
from recovery.services.reporting import metrics
from tests.conftest import API_KEY, make_settings
from tests.support.dashboard import ADMIN, add_user, login
from tests.support.outreach import Outreach, body, token_in
from tests.support.smtp_sink import smtp_sink


def day(at: datetime) -> str:
    return i18n.format_day(at, "en")


AUTH = {"Authorization": f"Bearer {API_KEY}"}
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
    html = card_page.get_data(as_text=True)
    assert f"Billing resumes on {day(two)}" in html
    assert "Your card expires soon" not in html and "Due on" not in html


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


def test_the_dashboard_and_the_api_show_the_pause_contacts_and_who_resumed_paying(
    story: Outreach,
) -> None:
    billing = _failing(story)
    token = token_in(_final_notice(story), "pause")
    csrf = story.csrf(f"/pause/{token}")
    story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "1"})
    story.deliver()
    case = story.case(billing.invoice)
    contacts.add(story.rt, billing.customer, {"role": "billing", "email": "ap@example.com"})
    with story.rt.db.transaction() as s:
        pause = s.scalars(select(DunningPause)).one()
        chosen, resumes = pause.chosen_at, pause.resumes_at

    add_user(story.rt, ADMIN, "admin")
    login(story.client, ADMIN)
    for path in (f"/dashboard/customers/{billing.customer}", f"/dashboard/cases/{case.id}"):
        html = story.client.get(path).get_data(as_text=True)
        assert "Pause instead of a loss" in html, path
        assert "collection paused until" in html and "unpaid invoice voided" in html
        assert "ap@example.com" in html and "billing" in html  # the account's contact
    assert "Paused instead of lost" in story.client.get(f"/dashboard/cases/{case.id}").get_data(
        as_text=True
    )

    def figures() -> Any:
        start = chosen.replace(hour=0, minute=0, second=0)
        return metrics.overview(
            story.rt, start, start + timedelta(days=1), "usd", story.clock.now()
        )

    assert (figures().outreach.pauses, figures().outreach.pauses_resumed) == (1, 0)
    day = chosen.date().isoformat()
    api = story.client.get(f"/api/v1/metrics?from={day}&to={day}&currency=usd", headers=AUTH)
    assert api.get_json()["outreach"]["pauses"] == 1
    assert [c["pauses"] for c in api.get_json()["by_currency"]] == [1]
    customer = story.client.get(f"/api/v1/customers/{billing.customer}", headers=AUTH).get_json()
    assert [p["status"] for p in customer["outreach"]["pauses"]] == ["accepted"]

    # billing resumes: the first renewal after the pause is paid
    story.clock.set(resumes + timedelta(days=1))
    renewal = story.fake.add_invoice(billing.customer, subscription_id=billing.subscription)
    story.deliver()
    assert story.stripe_charges(renewal["id"]) == "paid"
    assert (figures().outreach.pauses, figures().outreach.pauses_resumed) == (1, 1)
    story.client = story.app.test_client()  # a month later: a new session
    login(story.client, ADMIN)
    overview = story.client.get(f"/dashboard?period=custom&from={day}&to={day}&currency=usd")
    html = overview.get_data(as_text=True)
    assert "Pauses instead of losses" in html
    assert 'data-metric="pauses-resumed">1<' in html


def test_two_tabs_at_once_make_one_change(story: Outreach) -> None:
    """Tab 1's click fixed the request (two months) and reached Stripe, but its answer was not
    recorded yet when tab 2 chose three months: tab 2 sends tab 1's request under the same
    key, which Stripe answers from its first result."""
    billing = _failing(story)
    token = token_in(_final_notice(story), "pause")
    csrf = story.csrf(f"/pause/{token}")
    now = story.clock.now()
    with story.rt.db.transaction() as s:  # tab 1: decided...
        fixed = offer._fix_request(s, story.rt, token, 2, now)
    assert not isinstance(fixed, offer.PauseView)
    story.fake.pause_subscription(  # ...and Stripe did it
        billing.subscription,
        behavior="void",
        resumes_at=int(fixed.resumes_at.timestamp()),
        idempotency_key=f"dunning-pause:{fixed.pause_id}:pause",
    )
    answer = story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "3"})
    assert f"Nothing is charged until {day(fixed.resumes_at)}" in answer.get_data(as_text=True)
    assert {r.idempotency_key for r in _pauses(story)} == {f"dunning-pause:{fixed.pause_id}:pause"}
    assert len(_pauses(story)) == 2  # the same request, replayed
    sub = story.fake.store["subscription"][billing.subscription]
    assert sub["pause_collection"]["resumes_at"] == int(fixed.resumes_at.timestamp())
    voids = [r for r in story.fake.requests if r.method == "void_invoice"]
    assert len(voids) == 1


def test_stripe_refusing_the_pause_changes_nothing(story: Outreach) -> None:
    billing = _failing(story)
    token = token_in(_final_notice(story), "pause")
    csrf = story.csrf(f"/pause/{token}")
    story.fake.store["subscription"][billing.subscription]["status"] = "canceled"  # behind our back
    answer = story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "1"})
    assert "We couldn't pause your subscription" in answer.get_data(as_text=True)
    assert story.fake.store["invoice"][billing.invoice]["status"] == "open"  # not voided
    assert story.case(billing.invoice).status == "awaiting_customer"
    with story.rt.db.transaction() as s:
        assert s.scalars(select(DunningPause.status)).one() == "failed"


def test_a_click_whose_stripe_calls_did_not_finish_is_finished_by_the_worker(
    story: Outreach,
) -> None:
    billing = _failing(story)
    token = token_in(_final_notice(story), "pause")
    csrf = story.csrf(f"/pause/{token}")
    story.fake.outage(1, "server_error", methods={"void_invoice"})  # paused, then Stripe fails
    answer = story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "1"})
    assert answer.status_code == 503
    assert "Your subscription is paused" not in answer.get_data(as_text=True)
    assert story.case(billing.invoice).status == "awaiting_customer"

    story.later(0.01)  # the fallback due action, a few minutes later, with the same keys
    closed = story.case(billing.invoice)
    assert (closed.status, closed.close_reason) == ("closed", "paused")
    assert story.fake.store["invoice"][billing.invoice]["status"] == "void"
    with story.rt.db.transaction() as s:
        pause_id = s.scalars(select(DunningPause.id)).one()
    assert {r.idempotency_key for r in _pauses(story)} == {f"dunning-pause:{pause_id}:pause"}
    page = story.client.get(f"/pause/{token}").get_data(as_text=True)
    assert "Your subscription is paused" in page
