"""Every sentence of the cancel flow follows the subscription's real state: paid up, past due
with an open invoice, paused, trialing, already cancelled - on the pages and in the email - and
what happens to an unpaid invoice is what the rules say, applied in Stripe with an idempotency
key. A date that has passed is never told in the future tense."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.adapters.clock import FrozenClock
from recovery.domain.cancel_terms import (
    CancelPlan,
    Standing,
    SubscriptionNow,
    plan_cancel,
    standing_of,
)
from recovery.domain.stripe_objects.states import invoice_state, subscription_state
from recovery.rules import Rules
from recovery.services.events import mirror
from recovery.worker import Worker
from tests.conftest import START
from tests.support.cancel_flow import RULES_TOML, Flow, emails, make_flow, session_row

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PERIOD_END = datetime(2026, 12, 25, 0, 0, tzinfo=UTC)


# ---- the rule, pure ------------------------------------------------------------------------------


def _sub(**kw: Any) -> SubscriptionNow:
    return SubscriptionNow(**{"status": "active", "period_end": PERIOD_END, **kw})


def test_paid_up_ends_at_the_end_of_the_paid_period() -> None:
    plan = plan_cancel(_sub(), cancel_at_period_end=True, unpaid_invoice="void", now=NOW)
    assert (plan.standing, plan.at_period_end, plan.ends_at) == (Standing.PAID_UP, True, PERIOD_END)
    assert plan.unpaid == "none" and not plan.void_invoices


@pytest.mark.parametrize(
    ("rule", "at_period_end", "ends_at", "voided"),
    [
        ("void", False, NOW, ("in_1",)),
        ("leave_open", False, NOW, ()),
        ("collect", True, PERIOD_END, ()),
    ],
)
def test_past_due_follows_the_unpaid_invoice_rule(
    rule: Any, at_period_end: bool, ends_at: datetime, voided: tuple[str, ...]
) -> None:
    sub = _sub(status="past_due", unpaid_amount=2000, open_invoices=("in_1",))
    plan = plan_cancel(sub, cancel_at_period_end=True, unpaid_invoice=rule, now=NOW)
    assert plan.standing is Standing.PAST_DUE
    assert (plan.at_period_end, plan.ends_at, plan.void_invoices) == (
        at_period_end,
        ends_at,
        voided,
    )
    assert (plan.unpaid, plan.unpaid_amount) == (rule, 2000)
    assert CancelPlan.from_json(plan.to_json()) == plan


def test_states_are_read_from_the_subscription() -> None:
    assert standing_of(_sub(status="trialing")) is Standing.TRIALING
    assert standing_of(_sub(paused=True)) is Standing.PAUSED
    assert standing_of(_sub(cancel_at_period_end=True)) is Standing.ENDING
    assert standing_of(_sub(status="canceled")) is Standing.ENDED
    # An open invoice with money owed is past due whatever the status says.
    assert standing_of(_sub(unpaid_amount=1, open_invoices=("in_1",))) is Standing.PAST_DUE


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    status=st.sampled_from(["active", "past_due", "trialing", "unpaid", "canceled"]),
    period=st.integers(-40, 40),
    owed=st.integers(0, 5000),
    paused=st.booleans(),
    at_period_end=st.booleans(),
    rule=st.sampled_from(["void", "leave_open", "collect"]),
)
def test_a_plan_never_promises_a_past_date_nor_a_paid_period_that_was_not_paid(
    status: str, period: int, owed: int, paused: bool, at_period_end: bool, rule: Any
) -> None:
    sub = _sub(
        status=status,
        period_end=NOW + timedelta(days=period),
        unpaid_amount=owed,
        open_invoices=("in_1",) if owed else (),
        paused=paused,
    )
    plan = plan_cancel(sub, cancel_at_period_end=at_period_end, unpaid_invoice=rule, now=NOW)
    if plan.at_period_end:
        assert plan.ends_at > NOW  # the future tense is only ever used for the future
    else:
        assert plan.ends_at == NOW
    if owed and plan.standing is not Standing.ENDED:
        assert plan.unpaid != "none"  # an unpaid invoice is always mentioned
        assert plan.unpaid == "collect" or not plan.at_period_end  # never "paid for"
    else:
        assert plan.unpaid == "none" and not plan.void_invoices


# ---- the pages and the email --------------------------------------------------------------------


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _past_due(flow: Flow) -> str:
    """Make Ada's subscription past due with an open $20 renewal invoice, mirrored."""
    sub = flow.gateway.store["subscription"][flow.seeded.subscription]
    sub["status"] = "past_due"
    invoice = flow.gateway.add_invoice(
        flow.seeded.customer,
        subscription_id=flow.seeded.subscription,
        status="open",
        attempt_count=2,
        created=int((START - timedelta(days=3)).timestamp()),
    )
    ts = int(START.timestamp())
    with flow.runtime.db.transaction() as s:
        mirror.apply_subscription(s, subscription_state(sub), ts)
        mirror.apply_invoice(s, invoice_state(invoice), ts)
    return str(invoice["id"])


@pytest.fixture
def flow(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Flow]:
    made = make_flow(sqlite_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


def test_past_due_pages_never_say_the_period_was_paid_and_the_invoice_is_voided(
    flow: Flow,
) -> None:
    invoice_id = _past_due(flow)
    page, started = flow.start()
    survey = text_of(page.get().get_data(as_text=True))
    assert "paid for" not in survey
    assert "Your payment of $20.00, due on October 30, 2026, hasn't gone through." in survey
    assert (
        "If you cancel, your subscription ends right away and the unpaid $20.00 is cancelled:"
        " you won't owe it, and you won't be charged again." in survey
    )
    page.post("/cancel", {})
    done = text_of(page.get("/done").get_data(as_text=True))
    assert "The unpaid $20.00 was cancelled: you don't owe it" in done
    assert "keep using" not in done
    # In Stripe: ended now, and the invoice voided, each with its idempotency key.
    writes = {w.method: w for w in flow.writes()}
    assert writes["cancel_subscription"].params["at_period_end"] is False
    assert (
        writes["void_invoice"].idempotency_key == f"cancel-flow:{started['id']}:void:{invoice_id}"
    )
    assert flow.gateway.store["invoice"][invoice_id]["status"] == "void"
    [mail] = emails(flow, "cancel_confirmation")
    assert "The unpaid $20.00 was cancelled: you don't owe it" in mail.body
    assert "keep using" not in mail.body


def test_void_is_applied_later_with_the_same_keys_when_stripe_is_down(flow: Flow) -> None:
    invoice_id = _past_due(flow)
    flow.gateway.outage(1, "server_error", methods={"void_invoice"})
    page, started = flow.start()
    page.get()
    page.post("/cancel", {})
    assert session_row(flow, started["id"]).stripe_status == "pending"
    flow.clock.advance(timedelta(minutes=5))
    Worker(flow.runtime).run_until_idle()
    assert session_row(flow, started["id"]).stripe_status == "applied"
    assert flow.gateway.store["invoice"][invoice_id]["status"] == "void"
    assert [w.method for w in flow.writes()].count("cancel_subscription") >= 1
    keys = {w.idempotency_key for w in flow.writes() if w.method == "cancel_subscription"}
    assert keys == {f"cancel-flow:{started['id']}:cancel"}  # one change, whatever the retries


@pytest.mark.parametrize(
    ("rule", "page_says", "done_says"),
    [
        (
            "leave_open",
            "ends right away. You won't be charged again automatically, but the unpaid $20.00"
            " is still owed.",
            "Your subscription has ended. You won't be charged again automatically, but the"
            " unpaid $20.00 is still owed.",
        ),
        (
            "collect",
            "ends on November 22, 2026, at the end of the current period. The unpaid $20.00 is"
            " still owed, and we'll keep trying to collect it until then.",
            "You can keep using your subscription until November 22, 2026. The unpaid $20.00 is"
            " still owed, and we'll keep trying to collect it until then.",
        ),
    ],
)
def test_other_unpaid_invoice_rules_say_what_they_do(
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    rule: str,
    page_says: str,
    done_says: str,
) -> None:
    flow = make_flow(sqlite_url, tmp_path, clock, fake_gateway)
    rules = tmp_path / "rules-unpaid.toml"
    rules.write_text(
        RULES_TOML.replace("[cancel_flow]\n", f'[cancel_flow]\nunpaid_invoice = "{rule}"\n')
    )
    flow.runtime.rules = Rules.load(rules)
    try:
        invoice_id = _past_due(flow)
        page, _started = flow.start()
        assert page_says in text_of(page.get().get_data(as_text=True))
        page.post("/cancel", {})
        assert done_says in text_of(page.get("/done").get_data(as_text=True))
        assert "void_invoice" not in [w.method for w in flow.writes()]
        assert flow.gateway.store["invoice"][invoice_id]["status"] == "open"
        [mail] = emails(flow, "cancel_confirmation")
        assert done_says in " ".join(mail.body.split())
    finally:
        flow.runtime.db.dispose()


def test_a_date_that_has_passed_is_told_in_the_past_tense(flow: Flow) -> None:
    page, _started = flow.start()
    page.get()
    page.post("/cancel", {})
    before = text_of(page.get("/done").get_data(as_text=True))
    assert "You can keep using your subscription until November 22, 2026." in before
    flow.clock.advance(timedelta(days=32))  # 4 December: the period is over
    after = text_of(page.get("/done").get_data(as_text=True))
    assert "keep using" not in after
    assert "Your subscription ended on November 22, 2026." in after


def test_already_cancelled_elsewhere_says_ended_or_set_to_end(flow: Flow) -> None:
    sub = flow.gateway.store["subscription"][flow.seeded.subscription]
    sub["cancel_at_period_end"] = True
    page, _started = flow.start()
    assert (
        "Your subscription is set to end on November 22, 2026. You can keep using it until"
        " then" in text_of(page.get().get_data(as_text=True))
    )
    flow.clock.advance(timedelta(days=32))
    page, _started = flow.start()
    later = text_of(page.get().get_data(as_text=True))
    assert "Your subscription ended on November 22, 2026." in later
    assert "keep using" not in later


def test_trialing_and_paused_subscriptions_are_told_their_own_truth(flow: Flow) -> None:
    sub = flow.gateway.store["subscription"][flow.seeded.subscription]
    sub["status"] = "trialing"
    page, _started = flow.start()
    trial = text_of(page.get().get_data(as_text=True))
    assert "Your free trial ends on November 22, 2026." in trial
    assert "your free trial continues until November 22, 2026 and then ends" in trial
    assert "paid for" not in trial
    sub["status"] = "active"
    resumes = int((START + timedelta(days=40)).timestamp())
    sub["pause_collection"] = {"behavior": "void", "resumes_at": resumes}
    page, _started = flow.start()
    paused = text_of(page.get().get_data(as_text=True))
    assert "Your subscription is paused until December 12, 2026." in paused
    assert "ends on November 22, 2026 instead of resuming" in paused
    assert "paid for" not in paused
