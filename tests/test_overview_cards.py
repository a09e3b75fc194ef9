"""The overview's expiring cards from `subscription_cards` (kept by the triggers of migration
0020) equal the reference computed from the mirror's tables, exactly, on SQLite and
PostgreSQL: for random mirror histories - subscriptions created, moved to another status or
customer, set to cancel, given a default card or not, deleted; customers' default cards and
sources changed; cards added, their expiry moved by the network, deleted; items replaced (the
currency of a subscription that has none) - with expiring-card notices sent in between."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from recovery.models import Customer, OutboxMessage, PaymentMethod, Subscription, SubscriptionItem
from recovery.models.rollups import SubscriptionCard
from recovery.runtime import Runtime
from recovery.services.reporting.metrics.expiring_cards import (
    expiring_cards,
    expiring_cards_kept,
)

BASE = datetime(2026, 10, 1, tzinfo=UTC)
CUSTOMERS = [f"cus_{i}" for i in range(3)]
CARDS = [f"pm_{i}" for i in range(5)]
SUBS = [f"sub_{i}" for i in range(4)]
TABLES = (SubscriptionItem, OutboxMessage, Subscription, PaymentMethod, Customer, SubscriptionCard)

card_ref = st.one_of(st.none(), st.sampled_from(CARDS))
op = st.one_of(
    st.tuples(st.just("customer"), st.sampled_from(CUSTOMERS), card_ref, card_ref),
    st.tuples(st.just("card"), st.sampled_from(CARDS), st.sampled_from(CUSTOMERS),
              st.integers(1, 12), st.sampled_from([2026, 2027, None]), st.integers(0, 90)),
    st.tuples(st.just("drop_card"), st.sampled_from(CARDS)),
    st.tuples(st.just("subscription"), st.sampled_from(SUBS), st.sampled_from(CUSTOMERS),
              st.sampled_from(["active", "trialing", "past_due", "canceled"]), st.booleans(),
              st.sampled_from(["usd", "eur", None]), card_ref, card_ref),
    st.tuples(st.just("drop_subscription"), st.sampled_from(SUBS)),
    st.tuples(st.just("items"), st.sampled_from(SUBS),
              st.lists(st.sampled_from(["usd", "eur", None]), max_size=2)),
    st.tuples(st.just("notice"), st.sampled_from(SUBS), st.sampled_from(CARDS),
              st.integers(0, 60), st.integers(0, 40)),
)  # fmt: skip


def _apply(rt: Runtime, step: tuple[Any, ...], n: int) -> None:
    kind = step[0]
    with rt.db.transaction() as s:
        if kind == "customer":
            _, cid, pm, source = step
            found = s.get(Customer, cid) or Customer(id=cid)
            found.default_payment_method_id, found.default_source_id = pm, source
            s.add(found)
        elif kind == "card":
            _, pid, cid, month, year, created_day = step
            card = s.get(PaymentMethod, pid) or PaymentMethod(id=pid)
            card.customer_id, card.exp_month, card.exp_year = cid, month, year
            card.created = int((BASE - timedelta(days=created_day)).timestamp())
            s.add(card)
        elif kind == "drop_card":
            s.execute(delete(PaymentMethod).where(PaymentMethod.id == step[1]))
        elif kind == "subscription":
            _, sid, cid, status, ending, currency, pm, source = step
            sub = s.get(Subscription, sid) or Subscription(id=sid)
            sub.customer_id, sub.status, sub.cancel_at_period_end = cid, status, ending
            sub.currency, sub.default_payment_method_id, sub.default_source_id = (
                currency,
                pm,
                source,
            )
            s.add(sub)
        elif kind == "drop_subscription":
            s.execute(delete(Subscription).where(Subscription.id == step[1]))
        elif kind == "items" and s.get(Subscription, step[1]) is not None:
            _, sid, currencies = step
            s.execute(delete(SubscriptionItem).where(SubscriptionItem.subscription_id == sid))
            for i, currency in enumerate(currencies):
                s.add(
                    SubscriptionItem(
                        id=f"si_{n}_{i}", subscription_id=sid, unit_amount=900, currency=currency
                    )
                )
        elif kind == "notice":
            _, sid, pid, sent_day, renewal_day = step
            sub = s.get(Subscription, sid)
            sent = BASE + timedelta(days=sent_day, hours=9)
            renewal = (sent + timedelta(days=renewal_day)).date()
            s.add(
                OutboxMessage(
                    about=f"expiry:{sid}:{pid}",
                    customer_id=sub.customer_id if sub else "cus_0",
                    channel="email",
                    template="card_expiring",
                    step="notice",
                    locale="en",
                    recipient="someone@example.com",
                    body="Your card expires soon.",
                    send_after=sent,
                    dedupe_key=f"expiry:{sid}:{pid}:{renewal.isoformat()}:{n}",
                    status="sent",
                    created_at=sent,
                    sent_at=sent,
                )
            )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(op, min_size=1, max_size=40),
    now_day=st.integers(0, 90),
    first=st.integers(0, 60),
    length=st.integers(1, 60),
    currency=st.sampled_from(["usd", "eur"]),
)
def test_the_kept_cards_give_exactly_the_direct_figures(
    runtime: Runtime,
    history: list[tuple[Any, ...]],
    now_day: int,
    first: int,
    length: int,
    currency: str,
) -> None:
    with runtime.db.transaction() as s:
        for model in TABLES:
            s.execute(delete(model))
    for n, step in enumerate(history):
        _apply(runtime, step, n)
    now = BASE + timedelta(days=now_day, hours=13)
    start = BASE + timedelta(days=first)
    end = start + timedelta(days=length)
    with runtime.db.reading() as s:
        kept = expiring_cards_kept(s, currency, start, end, now)
        direct = expiring_cards(s, currency, start, end, now)
    assert kept == direct


def test_a_card_the_network_updates_leaves_the_expiring_ones_at_once(runtime: Runtime) -> None:
    """A live subscription's card expiring next month counts; when the network moves its
    expiry (the mirror updates the card), it no longer does - no refresh in between."""
    now = datetime(2026, 10, 20, 9, tzinfo=UTC)
    for n, step in enumerate(
        [
            ("card", "pm_0", "cus_0", 11, 2026, 400),
            ("customer", "cus_0", "pm_0", None),
            ("subscription", "sub_0", "cus_0", "active", False, "usd", None, None),
            # another customer's card named as a default: Stripe would not charge it
            ("card", "pm_1", "cus_0", 11, 2026, 400),
            ("subscription", "sub_1", "cus_1", "active", False, "usd", "pm_1", None),
        ]
    ):
        _apply(runtime, step, n)
    with runtime.db.reading() as s:
        counted = expiring_cards_kept(s, "usd", now - timedelta(days=30), now, now)
    # it works through November: stopped within 60 days of now, not 30
    assert (counted.within_30_days, counted.within_60_days) == (0, 1)
    _apply(runtime, ("card", "pm_0", "cus_0", 11, 2029, 400), 9)
    with runtime.db.reading() as s:
        counted = expiring_cards_kept(s, "usd", now - timedelta(days=30), now, now)
        assert counted == expiring_cards(s, "usd", now - timedelta(days=30), now, now)
    assert (counted.within_30_days, counted.within_60_days) == (0, 0)


def test_a_notice_about_a_card_not_mirrored_is_not_replaced_in_time(runtime: Runtime) -> None:
    """The subscription charges pm_0 (expiring long after the notice), the notice named pm_1,
    of which the mirror has no row: not "the same card, moved by the network" (the kept read
    probes the notified card only when it differs; a miss there is not a match)."""
    for n, step in enumerate(
        [
            ("card", "pm_0", "cus_0", 1, 2027, 0),
            ("subscription", "sub_3", "cus_0", "active", False, "usd", "pm_0", None),
            ("notice", "sub_3", "pm_1", 0, 0),
        ]
    ):
        _apply(runtime, step, n)
    now = BASE + timedelta(hours=13)
    with runtime.db.reading() as s:
        kept = expiring_cards_kept(s, "usd", BASE, BASE + timedelta(days=1), now)
        assert kept == expiring_cards(s, "usd", BASE, BASE + timedelta(days=1), now)
    assert (kept.notified, kept.replaced_in_time) == (1, 0)
