"""A small, fully known history for the dashboard metrics, written straight through the models.

The period under test is October 2026 (`PERIOD`, both days included) in USD, seen from
`tests.conftest.START` (2026-11-02 09:00 UTC). tests/test_metrics.py computes every expected
number from these rows by hand; change a row here and the hand computation there must follow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.orm import Session

from recovery.models import (
    CancelSession,
    Customer,
    OutboxMessage,
    PaymentMethod,
    RecoveryCase,
    Subscription,
    SubscriptionItem,
)

PERIOD = (date(2026, 10, 1), date(2026, 10, 31))


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ts(when: datetime) -> int:
    return int(when.timestamp())


def add_case(session: Session, ref: str, **values: Any) -> RecoveryCase:
    defaults: dict[str, Any] = {
        "invoice_id": f"in_{ref}",
        "customer_id": f"cus_{ref}",
        "currency": "usd",
        "status": "open",
    }
    case = RecoveryCase(**{**defaults, **values})
    session.add(case)
    session.flush()
    return case


_message_seq = 0


def add_message(
    session: Session,
    about: str,
    channel: str,
    status: str,
    sent_at: datetime | None,
    *,
    case_id: int | None = None,
    customer_id: str | None = None,
) -> None:
    global _message_seq
    _message_seq += 1
    created = sent_at or at(10, 1)
    session.add(
        OutboxMessage(
            about=about,
            case_id=case_id,
            customer_id=customer_id,
            channel=channel,
            template="t",
            step="s",
            locale="en",
            recipient="someone@example.com" if channel == "email" else "+15555550100",
            body="b",
            send_after=created,
            dedupe_key=f"m{_message_seq}:{about}",
            status=status,
            created_at=created,
            sent_at=sent_at,
        )
    )


def add_session(session: Session, ref: str, created: datetime, **values: Any) -> None:
    defaults: dict[str, Any] = {
        "id": f"cs_{ref}",
        "token_hash": f"{ref:0>64}",
        "source": "api",
        "customer_id": f"cus_cs_{ref}",
        "subscription_id": f"sub_cs_{ref}",
        "return_url": "https://example.com/account",
        "variant": "default",
        "created_at": created,
        "expires_at": at(12, 31),
        "currency": "usd",
        "mrr_before": 0,
    }
    session.add(CancelSession(**{**defaults, **values}))


def item(sub: str, amount: int, interval: str, count: int = 1, quantity: int = 1) -> Any:
    return SubscriptionItem(
        id=f"si_{sub}_{interval}{count}",
        subscription_id=sub,
        unit_amount=amount,
        quantity=quantity,
        currency="usd",
        interval=interval,
        interval_count=count,
    )


def seed_cases(session: Session) -> None:
    # In the period, USD: nine cases.
    c1 = add_case(session, "c1", status="recovered", recovered_via="our_retry",
                  amount_due=1000, amount_recovered=1000, opened_at=at(10, 5, 10),
                  closed_at=at(10, 7, 10), decline_category="soft", card_brand="visa",
                  subscription_id="sub_1")  # fmt: skip
    c2 = add_case(session, "c2", status="recovered", recovered_via="card_update_link",
                  amount_due=2000, amount_recovered=2000, opened_at=at(10, 6),
                  closed_at=at(10, 10, 12), decline_category="needs_new_card",
                  card_brand="mastercard", subscription_id="sub_2")  # fmt: skip
    c3 = add_case(session, "c3", status="recovered", recovered_via="hosted_invoice_page",
                  amount_due=3000, amount_recovered=3000, opened_at=at(10, 12, 8),
                  closed_at=at(10, 13, 8), decline_category="soft", card_brand="visa",
                  subscription_id="sub_3")  # fmt: skip
    add_case(session, "c4", status="recovered", recovered_via="hosted_invoice_page",
             amount_due=1500, amount_recovered=1500, opened_at=at(10, 13),
             closed_at=at(10, 20), decline_category="needs_customer", card_brand="visa",
             subscription_id="sub_1")  # fmt: skip
    c5 = add_case(session, "c5", status="retrying", amount_due=2500, opened_at=at(10, 20),
                  decline_category="soft", card_brand="visa", subscription_id="sub_5")  # fmt: skip
    add_case(session, "c6", status="awaiting_customer", awaiting="new_card", amount_due=1200,
             opened_at=at(10, 21), decline_category="needs_new_card",
             card_brand="amex")  # fmt: skip
    add_case(session, "c7", status="lost", amount_due=4000, opened_at=at(10, 22),
             closed_at=at(10, 30), decline_category="never_retry", card_brand="visa")  # fmt: skip
    add_case(session, "c8", status="closed", close_reason="voided", amount_due=800,
             opened_at=at(10, 27), closed_at=at(10, 28))  # fmt: skip
    c12 = add_case(session, "c12", status="recovered", recovered_via="stripe_retry",
                   amount_due=900, amount_recovered=900, opened_at=at(10, 28),
                   closed_at=at(10, 29), decline_category="soft", card_brand="visa",
                   subscription_id="sub_4")  # fmt: skip
    # Outside the period or the currency: never counted for USD October.
    add_case(session, "c9", status="recovered", recovered_via="our_retry", amount_due=7000,
             amount_recovered=7000, opened_at=at(9, 30, 23, 59), closed_at=at(10, 2),
             subscription_id="sub_9", card_brand="visa")  # fmt: skip
    add_case(session, "c10", status="open", currency="eur", amount_due=5000,
             opened_at=at(10, 15))  # fmt: skip
    add_case(session, "c11", status="open", amount_due=6000, opened_at=at(11, 1))
    add_case(session, "c13", status="open", currency="jpy", amount_due=5000, opened_at=at(10, 15))

    # Reminders: c2's last one sent before the payment is the SMS; the email after it does not
    # count, nor do a cancelled one or any message of an automatic recovery (c1, c12) or of a
    # case still in progress (c5).
    add_message(session, f"case:{c2.id}", "email", "sent", at(10, 7, 9), case_id=c2.id)
    add_message(session, f"case:{c2.id}", "sms", "sent", at(10, 9, 9), case_id=c2.id)
    add_message(session, f"case:{c2.id}", "email", "sent", at(10, 11, 9), case_id=c2.id)
    add_message(session, f"case:{c2.id}", "sms", "cancelled", None, case_id=c2.id)
    add_message(session, f"case:{c3.id}", "email", "sent", at(10, 12, 9), case_id=c3.id)
    add_message(session, f"case:{c1.id}", "sms", "sent", at(10, 6, 9), case_id=c1.id)
    add_message(session, f"case:{c12.id}", "email", "sent", at(10, 28, 9), case_id=c12.id)
    add_message(session, f"case:{c5.id}", "email", "sent", at(10, 21, 9), case_id=c5.id)


def seed_mirror(session: Session) -> None:
    customers = ["cus_1", "cus_2", "cus_3", "cus_4", "cus_5", "cus_6", "cus_7", "cus_9", "cus_10"]
    session.add_all(Customer(id=c) for c in customers)
    cards = [
        # id, customer, exp month, exp year, created
        ("pm_a", "cus_1", 11, 2026, at(1, 1)),
        ("pm_b", "cus_2", 12, 2026, at(11, 1, 12)),
        ("pm_old2", "cus_2", 10, 2026, at(1, 1)),
        ("pm_c", "cus_3", 1, 2027, at(10, 20)),
        ("pm_old3", "cus_3", 10, 2026, at(1, 1)),
        ("pm_d", "cus_4", 11, 2026, at(1, 1)),
        ("pm_e", "cus_5", 11, 2026, at(1, 1)),
        ("pm_f", "cus_6", 10, 2026, at(1, 1)),
        ("pm_g", "cus_7", 11, 2026, at(1, 1)),
        ("pm_h", "cus_9", 10, 2029, at(1, 1)),
        ("pm_i", "cus_10", 12, 2026, at(1, 1)),
    ]
    session.add_all(
        PaymentMethod(id=i, customer_id=c, exp_month=m, exp_year=y, created=ts(when), brand="visa")
        for i, c, m, y, when in cards
    )
    session.flush()
    customer2 = session.get(Customer, "cus_2")
    assert customer2 is not None
    customer2.default_payment_method_id = "pm_b"  # sub_2 has no default of its own
    subs = [
        # id, customer, status, default card, cancel at period end, currency
        ("sub_1", "cus_1", "active", "pm_a", False, "usd"),
        ("sub_2", "cus_2", "active", None, False, "usd"),
        ("sub_3", "cus_3", "trialing", "pm_c", False, "usd"),
        ("sub_4", "cus_4", "active", "pm_d", True, "usd"),
        ("sub_5", "cus_5", "canceled", "pm_e", False, "usd"),
        ("sub_6", "cus_6", "active", "pm_f", False, "usd"),
        ("sub_7", "cus_7", "active", "pm_g", False, "eur"),
        ("sub_8", "cus_1", "active", "pm_a", False, "usd"),
        ("sub_9", "cus_9", "active", "pm_h", False, "usd"),
        ("sub_10", "cus_10", "active", "pm_i", False, None),  # currency only on its item
    ]
    session.add_all(
        Subscription(
            id=i,
            customer_id=c,
            status=s,
            default_payment_method_id=pm,
            cancel_at_period_end=cancel,
            currency=cur,
        )
        for i, c, s, pm, cancel, cur in subs
    )
    session.flush()
    session.add_all(
        [
            item("sub_1", 1000, "month"),
            item("sub_2", 12000, "year"),
            item("sub_3", 500, "week", quantity=2),
            item("sub_4", 3000, "month", count=3),
            item("sub_9", 99999, "month"),  # only c9's, outside the period
            item("sub_10", 800, "month"),
        ]
    )
    # Expiring-card notices.
    add_message(session, "expiry:sub_3:pm_old3", "email", "sent", at(10, 5, 9),
                customer_id="cus_3")  # fmt: skip
    add_message(session, "expiry:sub_3:pm_old3", "sms", "sent", at(10, 8, 9),
                customer_id="cus_3")  # fmt: skip
    add_message(session, "expiry:sub_2:pm_old2", "email", "sent", at(10, 6, 9),
                customer_id="cus_2")  # fmt: skip
    add_message(session, "expiry:sub_6:pm_f", "email", "sent", at(10, 7, 9),
                customer_id="cus_6")  # fmt: skip
    add_message(session, "expiry:sub_9:pm_h", "email", "sent", at(10, 10, 9),
                customer_id="cus_9")  # fmt: skip
    add_message(session, "expiry:sub_1:pm_a", "email", "pending", None, customer_id="cus_1")
    add_message(session, "expiry:sub_1:pm_a", "email", "sent", at(9, 20, 9),
                customer_id="cus_1")  # fmt: skip
    add_message(session, "expiry:sub_7:pm_g", "email", "sent", at(10, 9, 9),
                customer_id="cus_7")  # fmt: skip


def seed_cancel_sessions(session: Session) -> None:
    add_session(session, "s1", at(10, 3), outcome="saved_by_pause", reason="too_expensive",
                mrr_before=2000, mrr_after=2000, reason_text="Money is tight",
                survey_at=at(10, 3, 1))  # fmt: skip
    add_session(session, "s2", at(10, 4), outcome="saved_by_discount", reason="too_expensive",
                mrr_before=3000, mrr_after=2400)  # fmt: skip
    add_session(session, "s3", at(10, 10), outcome="cancelled", reason="missing_features",
                mrr_before=1000, mrr_after=0, reason_text="No API",
                survey_at=at(10, 10, 1))  # fmt: skip
    add_session(session, "s4", at(10, 11), outcome="cancelled", reason="too_expensive",
                mrr_before=1500, mrr_after=0, reason_text="")  # fmt: skip
    add_session(session, "s5", at(10, 12), outcome="cancelled", mrr_before=500, mrr_after=0)
    add_session(session, "s6", at(10, 13), outcome="abandoned", mrr_before=800)
    add_session(session, "s7", at(10, 25), reason="missing_features", mrr_before=700,
                reason_text="Still thinking", survey_at=at(10, 25, 1))  # fmt: skip
    add_session(session, "s8", at(9, 30), outcome="saved_by_downgrade", reason="too_expensive",
                mrr_before=4000, mrr_after=3000)  # fmt: skip
    add_session(session, "s9", at(10, 5), outcome="cancelled", currency="eur", mrr_before=900,
                mrr_after=0, reason_text="Trop cher")  # fmt: skip


def seed_all(session: Session) -> None:
    seed_cases(session)
    seed_mirror(session)
    seed_cancel_sessions(session)
