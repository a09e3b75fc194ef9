"""The hosted cancel flow through its pages, on SQLite and PostgreSQL: every path, Stripe
changes through the gateway fake, idempotency, and the worker's part (apply later, emails)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.models import OfferAcceptance
from recovery.services.cancel import decisions
from recovery.worker import Worker
from tests.conftest import START
from tests.support.cancel_flow import Flow, emails, make_flow, session_row


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Flow]:
    made = make_flow(database_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


def ts(when: datetime) -> int:
    return int(when.timestamp())


def test_saved_by_pause_then_reminded_before_billing_resumes(flow: Flow) -> None:
    page, started = flow.start()
    assert page.get().status_code == 200
    assert page.post("", {"reason": "temporary"}).status_code == 303
    offer = page.get("/offer")
    assert "Pause until" in page.text() and offer.status_code == 200
    assert (
        page.post("/offer", {"offer": "pause", "months": "2"}).headers["Location"].endswith("/done")
    )
    resumes = datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
    (write,) = flow.writes()
    assert write.method == "pause_subscription"
    assert write.params == {"id": "sub_ada", "behavior": "void", "resumes_at": ts(resumes)}
    assert write.idempotency_key == f"cancel-flow:{started['id']}:offer:pause"
    row = session_row(flow, started["id"])
    assert (row.outcome, row.stripe_status, row.ends_at) == ("saved_by_pause", "applied", resumes)
    assert (row.reason, row.offer_shown, row.mrr_before, row.mrr_after) == (
        "temporary",
        "pause",
        2000,
        2000,
    )
    page.get("/done")
    assert "Your subscription is paused" in page.text()
    assert "outcome=saved_by_pause" in page.text()
    (confirmation,) = emails(flow, "offer_confirmation")  # at once: what changes and when
    assert "You won't be charged until January 2, 2027" in confirmation.body
    (reminder,) = emails(flow, "pause_ending")
    assert (reminder.template, reminder.recipient) == ("pause_ending", "ada@example.com")
    assert reminder.send_after == resumes - timedelta(days=3)
    assert "Your pause ends on January 2, 2027" in reminder.body
    worker = Worker(flow.runtime)
    flow.clock.set(resumes - timedelta(days=3, seconds=1))
    worker.run_until_idle()
    assert emails(flow, "pause_ending")[0].status == "pending"  # not before its day
    flow.clock.set(resumes - timedelta(days=3))
    worker.run_until_idle()
    assert emails(flow, "pause_ending")[0].status == "sent"


def test_saved_by_downgrade(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "too_expensive", "text": "A bit much for us"})
    page.get("/offer")
    assert "lower-priced plan" in page.text()
    page.post("/offer", {"offer": "downgrade"})
    (write,) = flow.writes()
    assert (write.method, write.params["price_id"], write.params["item_id"]) == (
        "change_subscription_price",
        "price_basic_monthly",
        flow.seeded.item,
    )
    assert write.params["proration_behavior"] == "create_prorations"
    row = session_row(flow, started["id"])
    assert (row.outcome, row.mrr_after, row.reason_text) == (
        "saved_by_downgrade",
        900,
        "A bit much for us",
    )


def test_saved_by_longer_term_when_a_downgrade_was_had_recently(flow: Flow) -> None:
    with flow.runtime.db.transaction() as s:
        s.add(
            OfferAcceptance(
                session_id="cxs_earlier",
                customer_id="cus_ada",
                subscription_id="sub_ada",
                kind="downgrade",
                terms={},
                idempotency_key="earlier",
                accepted_at=START - timedelta(days=40),
            )
        )
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "too_expensive"})
    page.get("/offer")
    assert "Charged today: $178.67" in page.text()  # $192 less 20/30 of $20
    assert "Next charge: $192.00 on November 2, 2027" in page.text()
    page.post("/offer", {"offer": "longer_term"})
    (write,) = flow.writes()
    assert (write.method, write.params["price_id"]) == (
        "change_subscription_price",
        "price_pro_yearly",
    )
    assert session_row(flow, started["id"]).outcome == "saved_by_longer_term"


def test_saved_by_discount(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "switching"})
    page.get("/offer")
    assert "$15.00 per month instead of $20.00 per month for the next 3 months" in page.text()
    page.post("/offer", {"offer": "discount"})
    (write,) = flow.writes()
    assert (write.method, write.params["coupon_id"]) == ("apply_subscription_coupon", "STAY25")
    row = session_row(flow, started["id"])
    assert (row.outcome, row.mrr_after) == ("saved_by_discount", 1500)


def test_cancel_straight_from_the_first_page(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    answer = {"reason": "too_expensive", "text": "Found it cheaper"}
    assert page.post("/cancel", answer).headers["Location"].endswith("/done")
    (write,) = flow.writes()
    assert write.method == "cancel_subscription"
    assert write.params == {
        "id": "sub_ada",
        "at_period_end": True,
        "feedback": "too_expensive",
        "comment": "Found it cheaper",
    }
    row = session_row(flow, started["id"])
    period_end = START + timedelta(days=20)
    assert (row.outcome, row.stripe_status, row.ends_at, row.offer_shown) == (
        "cancelled",
        "applied",
        period_end,
        None,
    )
    page.get("/done")
    assert "You can keep using your subscription until November 22, 2026" in page.text()
    assert "https://shop.example/account?tab=billing&amp;outcome=cancelled" in page.text()
    Worker(flow.runtime).run_until_idle()
    (sent,) = emails(flow)
    assert (sent.template, sent.status) == ("cancel_confirmation", "sent")
    assert sent.subject == "Your Acme subscription is cancelled"
    assert "You can keep using your subscription until November 22, 2026" in sent.body


def test_cancel_after_declining_the_offer(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "not_using"})
    page.get("/offer")
    assert "Pause until" in page.text() and "Cancel my subscription" in page.text()
    page.post("/cancel")
    (write,) = flow.writes()
    assert (write.method, write.params["feedback"]) == ("cancel_subscription", "unused")
    row = session_row(flow, started["id"])
    assert (row.outcome, row.offer_shown, row.mrr_after) == ("cancelled", "pause", 0)
    assert row.survey_at and row.offer_shown_at and row.decided_at and row.applied_at


def test_no_offer_fits_so_the_second_page_only_confirms(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "technical"})
    page.get("/offer")
    assert "Confirm your cancellation" in page.text()
    assert session_row(flow, started["id"]).offer_shown is None


def test_never_a_second_offer(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "technical"})  # no offer for this reason
    page.get()
    page.post("", {"reason": "temporary"})  # a pause would fit this one
    page.get("/offer")
    assert "Pause until" not in page.text()
    assert session_row(flow, started["id"]).reason == "temporary"


def test_double_submits_make_one_stripe_change(flow: Flow) -> None:
    page, _ = flow.start()
    page.get()
    page.post("", {"reason": "temporary"})
    page.get("/offer")
    token = page.csrf()
    for months in ("1", "1", "3"):  # a double click, then a second tab
        response = page.client.post(
            page.path + "/offer", data={"csrf_token": token, "offer": "pause", "months": months}
        )
        assert response.status_code == 303
    assert [w.method for w in flow.writes()] == ["pause_subscription"]
    for _ in range(2):
        page.client.post(page.path + "/cancel", data={"csrf_token": token})
    assert [w.method for w in flow.writes()] == ["pause_subscription", "cancel_subscription"]


def test_concurrent_accepts_make_one_stripe_change(flow: Flow) -> None:
    page, _ = flow.start()
    page.get()
    page.post("", {"reason": "too_expensive"})
    token = page.path.rsplit("/", 1)[-1]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def accept() -> None:
        barrier.wait()
        outcomes.append(
            decisions.accept_offer(flow.runtime, token, "en", "downgrade", None).outcome
        )

    threads = [threading.Thread(target=accept) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes == ["saved_by_downgrade"] * 4
    assert [w.method for w in flow.writes()] == ["change_subscription_price"]


def test_keep_my_subscription_goes_back_unchanged(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    response = page.post("/keep")
    assert response.status_code == 303
    assert response.headers["Location"] == (
        "https://shop.example/account?tab=billing&outcome=abandoned"
    )
    assert flow.writes() == []
    assert session_row(flow, started["id"]).outcome == "abandoned"


def test_stripe_unreachable_the_cancellation_is_kept_and_applied_later(flow: Flow) -> None:
    flow.gateway.outage(3, "server_error", methods={"cancel_subscription"})
    page, started = flow.start()
    page.get()
    page.post("/cancel", {"reason": "other"})
    assert page.last.status_code == 303
    page.get("/done")
    assert "Your subscription is cancelled" in page.text()
    assert "still confirming this with our payment provider" in page.text()
    row = session_row(flow, started["id"])
    assert (row.outcome, row.stripe_status) == ("cancelled", "pending")
    worker = Worker(flow.runtime)
    worker.run_until_idle()  # the confirmation goes out at once, Stripe or not
    assert [(m.template, m.status) for m in emails(flow)] == [("cancel_confirmation", "sent")]
    for _ in range(4):  # backoff: 2 min grace, then 1, 2, 4 min ...
        flow.clock.advance(timedelta(minutes=10))
        worker.run_until_idle()
    row = session_row(flow, started["id"])
    assert (row.stripe_status, row.applied_at is not None) == ("applied", True)
    keys = {w.idempotency_key for w in flow.writes()}
    assert keys == {f"cancel-flow:{started['id']}:cancel"}
    assert flow.gateway.store["subscription"]["sub_ada"]["cancel_at_period_end"] is True


def test_an_offer_stripe_refuses_changes_nothing_and_cancelling_still_works(flow: Flow) -> None:
    del flow.gateway.store["coupon"]["STAY25"]  # deleted in the Dashboard meanwhile
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "switching"})
    page.get("/offer")
    response = page.post("/offer", {"offer": "discount"})
    assert response.status_code == 409
    assert "This offer is no longer available" in page.text()
    row = session_row(flow, started["id"])
    assert (row.outcome, row.decided_at) == (None, None)
    with flow.runtime.db.transaction() as s:
        assert s.query(OfferAcceptance).count() == 0
    page.post("/cancel")
    assert session_row(flow, started["id"]).outcome == "cancelled"


def test_a_saved_subscriber_can_still_cancel_and_gets_no_pause_reminder(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "temporary"})
    page.get("/offer")
    page.post("/offer", {"offer": "pause", "months": "1"})
    page.get("/done")
    assert "Changed your mind?" in page.text()
    page.post("/cancel")
    assert session_row(flow, started["id"]).outcome == "cancelled"
    flow.clock.advance(timedelta(days=40))
    Worker(flow.runtime).run_until_idle()
    statuses = {m.template: (m.status, m.last_error) for m in emails(flow)}
    assert statuses == {
        "offer_confirmation": ("sent", None),  # the pause was confirmed when accepted
        "cancel_confirmation": ("sent", None),
        "pause_ending": ("cancelled", "the subscriber chose cancelled since"),
    }


def test_a_subscription_already_cancelled_elsewhere(flow: Flow) -> None:
    flow.gateway.store["subscription"]["sub_ada"]["cancel_at_period_end"] = True
    page, _ = flow.start()
    page.get()
    assert "Your subscription is already cancelled" in page.text()


def test_an_undecided_session_is_abandoned_when_it_expires(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    flow.clock.advance(timedelta(minutes=61))
    assert page.get().status_code == 410
    assert "This link has expired" in page.text()
    Worker(flow.runtime).run_until_idle()
    row = session_row(flow, started["id"])
    assert row.outcome == "abandoned"
    assert page.post("/cancel").status_code == 410  # no decisions on an expired session
    assert flow.writes() == []
