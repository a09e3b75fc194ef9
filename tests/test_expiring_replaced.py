"""Issue 15, item 12: "replaced in time" has a pending state, and "in time" means before the card
was needed - the later of its end and the renewal the notice was about (a card that ran out in
June is not charged until the July renewal)."""

from __future__ import annotations

from datetime import UTC, datetime

from recovery.models import Customer, OutboxMessage, PaymentMethod, Subscription
from recovery.runtime import Runtime
from recovery.services.reporting.metrics.expiring_cards import expiring_cards

NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def _notified(
    session: object,
    n: int,
    *,
    old_exp: tuple[int, int],
    renewal: str,
    sent: datetime,
    new_created: datetime | None,
) -> None:
    cid, sub, old = f"cus_{n}", f"sub_{n}", f"pm_old_{n}"
    cards = [PaymentMethod(id=old, customer_id=cid, exp_month=old_exp[0], exp_year=old_exp[1])]
    default = old
    if new_created is not None:
        default = f"pm_new_{n}"
        cards.append(
            PaymentMethod(
                id=default,
                customer_id=cid,
                exp_month=1,
                exp_year=2030,
                created=int(new_created.timestamp()),
            )
        )
    add = session.add  # type: ignore[attr-defined]
    add(Customer(id=cid, email=f"c{n}@example.com"))
    for card in cards:
        add(card)
    add(Subscription(id=sub, customer_id=cid, status="active", currency="usd",
                     default_payment_method_id=default))  # fmt: skip
    about = f"expiry:{sub}:{old}"
    add(
        OutboxMessage(
            about=about,
            customer_id=cid,
            channel="email",
            template="card_expiring",
            step="expiring.1",
            locale="en",
            recipient=f"c{n}@example.com",
            body="b",
            send_after=sent,
            dedupe_key=f"{about}:{renewal}:1",
            status="sent",
            created_at=sent,
            sent_at=sent,
        )
    )


def test_replaced_before_it_was_needed_or_still_pending(runtime: Runtime) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    sent = datetime(2026, 11, 5, 8, 0, tzinfo=UTC)
    with runtime.db.transaction() as session:
        # 1. expires end of October, renewal 19 November, replaced 10 November: in time
        _notified(session, 1, old_exp=(10, 2026), renewal="2026-11-19", sent=sent,
                  new_created=datetime(2026, 11, 10, tzinfo=UTC))  # fmt: skip
        # 2. same card, replaced 21 November: after the renewal - not in time, not pending
        _notified(session, 2, old_exp=(10, 2026), renewal="2026-11-19", sent=sent,
                  new_created=datetime(2026, 11, 21, tzinfo=UTC))  # fmt: skip
        # 3. expires end of November, renewal 28 November, not replaced yet: pending
        _notified(session, 3, old_exp=(11, 2026), renewal="2026-11-28", sent=sent,
                  new_created=None)  # fmt: skip
        # 4. expired end of October, renewal 20 November passed, never replaced: missed
        _notified(session, 4, old_exp=(10, 2026), renewal="2026-11-20", sent=sent,
                  new_created=None)  # fmt: skip
    with runtime.db.reading() as session:
        cards = expiring_cards(session, "usd", *NOVEMBER, now)
    assert (cards.notified, cards.replaced_in_time, cards.pending) == (4, 1, 1)
