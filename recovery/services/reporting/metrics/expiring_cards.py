"""Expiring cards (not cohort-based; `now` matters).

- within 30 / 60 days: distinct cards that are the default card (subscription's, else the
  customer's - as the expiry tracker resolves it) of a live subscription (active or trialing,
  not set to cancel) in this currency, which stop working after now and at most 30 / 60 days
  from now. A card works through the last day of its expiry month.
- notified: distinct (subscription, card) pairs of this currency with an expiring-card notice
  sent in the period.
- replaced in time: of those, pairs whose subscription now charges a different card that was
  added (Stripe `created`) before it was needed - before the notified card stopped working or
  before the renewal the notice was about, whichever is later (a notice names its renewal in
  its key, `expiry:<sub>:<card>:<renewal date>:<step>`, services/messaging/expiry.py: a card
  that ran out in June is not needed until the July renewal charges it); or whose same card
  now expires later than any notified card could have (the card network updated it - Stripe
  does not say when, and networks update ahead of expiry, so these count as in time).
- pending: of those, pairs not replaced whose deadline is still to come: they may yet be
  replaced in time.
The overview's words for these: `definitions.DEFINITIONS` (expiring_30/60, replaced_in_time).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    distinct,
    false,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, aliased

from recovery.models import (
    Customer,
    MessageStatus,
    OutboxMessage,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
)
from recovery.models.rollups import SubscriptionCard
from recovery.services.messaging import expiry
from recovery.services.reporting.metrics.parameters import DEFAULT_CURRENCY
from recovery.services.reporting.metrics.result import ExpiringCards


def _month_index(when: datetime) -> int:
    return when.year * 12 + when.month - 1


def _year_month(index: int) -> tuple[Any, Any]:
    return literal(index // 12), literal(index % 12 + 1)


def _default_card_id() -> ColumnElement[Any]:
    # The same order as services/expiry.default_card: what Stripe charges at renewal.
    return func.coalesce(
        Subscription.default_payment_method_id,
        Subscription.default_source_id,
        Customer.default_payment_method_id,
        Customer.default_source_id,
    )


def _in_currency(currency: str) -> ColumnElement[bool]:
    """The subscription is priced in `currency`.

    Some Stripe shapes (old API versions, localstripe) leave the subscription's currency out;
    its items' then, else usd - as the expiry tracker prices the renewal. Written as
    `currency = x OR (currency IS NULL AND ...)` rather than `coalesce(...) = x`: PostgreSQL
    estimates the plain comparison from its statistics, while a coalesce over a subquery got a
    fixed 0.5 % guess (20 rows for 2,385), so the planner joined the live subscriptions to the
    expiring cards by a nested loop, cards x subscriptions (bench/dashboard_scale.py).
    """
    item_currency = (
        select(func.min(SubscriptionItem.currency))
        .where(SubscriptionItem.subscription_id == Subscription.id)
        .scalar_subquery()
    )
    return or_(
        Subscription.currency == currency,
        and_(
            Subscription.currency.is_(None),
            func.coalesce(item_currency, literal(DEFAULT_CURRENCY)) == currency,
        ),
    )


def _months(now: datetime) -> tuple[int, int, int]:
    # A card expiring in month m stops working at the start of month m+1; that instant is after
    # now for m >= this month, and at most now+N days for m+1 <= the month of now+N.
    low = _month_index(now)
    return (
        low,
        _month_index(now + timedelta(days=30)) - 1,
        _month_index(now + timedelta(days=60)) - 1,
    )


def _notices(period_from: datetime, period_to: datetime) -> Any:
    """The notices sent in the period, one row per (about, customer): the first one's time and
    key."""
    return (
        select(
            OutboxMessage.about.label("about"),
            OutboxMessage.customer_id.label("customer_id"),
            func.min(OutboxMessage.sent_at).label("first_sent"),
            func.min(OutboxMessage.dedupe_key).label("first_key"),
        )
        .where(OutboxMessage.about.like("expiry:%"))
        .where(OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at >= period_from, OutboxMessage.sent_at < period_to)
        .group_by(OutboxMessage.about, OutboxMessage.customer_id)
        .subquery()
    )


def expiring_cards(
    session: Session, currency: str, period_from: datetime, period_to: datetime, now: datetime
) -> ExpiringCards:
    """From the mirror's tables (the reference `expiring_cards_kept` is held to)."""
    low, high30, high60 = _months(now)
    month = PaymentMethod.exp_year * 12 + PaymentMethod.exp_month - 1
    live = and_(
        Subscription.status.in_(expiry.LIVE),
        Subscription.cancel_at_period_end == false(),
        _in_currency(currency),
    )
    # Months as (year, month) pairs, so ix_payment_methods_expiry finds the cards in range.
    expiring = and_(
        tuple_(PaymentMethod.exp_year, PaymentMethod.exp_month) >= tuple_(*_year_month(low)),
        tuple_(PaymentMethod.exp_year, PaymentMethod.exp_month) <= tuple_(*_year_month(high60)),
    )
    # A default card is attached to its subscription's customer (Stripe refuses any other), so
    # the join starts from the few cards that expire soon and finds their customers'
    # subscriptions by index, instead of working out every live subscription's default card
    # (at 250k subscriptions: 8k index probes instead of a 120k-row scan and join).
    within = session.execute(
        select(
            func.count(distinct(case((month <= high30, PaymentMethod.id)))),
            func.count(distinct(PaymentMethod.id)),
        )
        .select_from(PaymentMethod)
        .join(Subscription, Subscription.customer_id == PaymentMethod.customer_id)
        .outerjoin(Customer, Customer.id == Subscription.customer_id)
        .where(PaymentMethod.id == _default_card_id())
        .where(live, expiring)
    ).one()

    notices = _notices(period_from, period_to)
    # about = "expiry:<subscription>:<card>"; the subscription is found among the customer's
    # (indexed), the notified card by the rest of the string.
    prefix = literal("expiry:") + Subscription.id + literal(":")
    old, new = aliased(PaymentMethod), aliased(PaymentMethod)
    rows = session.execute(
        select(
            notices.c.first_sent,
            notices.c.first_key,
            old.id,
            old.exp_month,
            old.exp_year,
            new.id,
            new.exp_month,
            new.exp_year,
            new.created,
        )
        .select_from(notices)
        .join(
            Subscription,
            and_(
                Subscription.customer_id == notices.c.customer_id,
                func.substr(notices.c.about, 1, func.length(prefix)) == prefix,
            ),
        )
        .outerjoin(Customer, Customer.id == Subscription.customer_id)
        .outerjoin(old, old.id == func.substr(notices.c.about, func.length(prefix) + 1))
        .outerjoin(new, new.id == _default_card_id())
        .where(_in_currency(currency))
    ).all()
    return _figures(int(within[0]), int(within[1]), rows, now)


def expiring_cards_kept(
    session: Session, currency: str, period_from: datetime, period_to: datetime, now: datetime
) -> ExpiringCards:
    """The same figures from `subscription_cards` (models/rollups.py), which triggers keep in
    step with the mirror: the expiring cards are one index range scan (currency, expiry month)
    of the live subscriptions' renewal cards, and each notice finds its subscription, with
    the card it charges now, in one probe by customer."""
    low, high30, high60 = _months(now)
    card = SubscriptionCard
    month = card.exp_year * 12 + card.exp_month - 1
    within = session.execute(
        select(
            func.count(distinct(case((month <= high30, card.card_id)))),
            func.count(distinct(card.card_id)),
        ).where(
            card.currency == currency,
            tuple_(card.exp_year, card.exp_month) >= tuple_(*_year_month(low)),
            tuple_(card.exp_year, card.exp_month) <= tuple_(*_year_month(high60)),
            card.live == true(),
            card.owned == true(),
            card.card_id.is_not(None),
        )
    ).one()
    notices = _notices(period_from, period_to)
    prefix = literal("expiry:") + card.subscription_id + literal(":")
    notified = func.substr(notices.c.about, func.length(prefix) + 1)
    # The notified card's row is probed only when the subscription now charges another card:
    # when it is the same card, its expiry is the one `subscription_cards` holds (the
    # triggers copy it). One probe for id and expiry together, "id:month:year" (at 90 days
    # half of 4,167 probes saved, bench/dashboard_scale.py).
    old = (
        select(
            PaymentMethod.id
            + literal(":")
            + func.coalesce(sql_cast(PaymentMethod.exp_month, String), literal(""))
            + literal(":")
            + func.coalesce(sql_cast(PaymentMethod.exp_year, String), literal(""))
        )
        .where(PaymentMethod.id == notified)
        .scalar_subquery()
    )
    # On the session's connection, as plain rows: the ORM's result processing of 4,167 rows
    # cost 3 ms of client CPU a read.
    rows = (
        session.connection()
        .execute(
            select(
                notices.c.first_sent,
                notices.c.first_key,
                # NULL only for the same card: '' when the notified card is not mirrored
                case((card.card_id == notified, None), else_=func.coalesce(old, literal(""))),
                card.card_id,
                card.exp_month,
                card.exp_year,
                card.card_created,
            )
            .select_from(notices)
            .join(
                card,
                and_(
                    card.customer_id == notices.c.customer_id,
                    func.substr(notices.c.about, 1, func.length(prefix)) == prefix,
                ),
            )
            .where(card.currency == currency)
        )
        .all()
    )
    return _kept_figures(int(within[0]), int(within[1]), rows, now)


def _kept_figures(
    within_30: int, within_60: int, rows: Sequence[Sequence[Any]], now: datetime
) -> ExpiringCards:
    """`_figures` of the kept read's rows: a notified card that is still its subscription's
    card (most of them) is decided here without unpacking the row into the direct read's shape
    (at 90 days 4,167 rows a view: the unpacking was a third of the notices' client CPU)."""
    replaced = pending = 0
    others: list[Sequence[Any]] = []  # the rest, decided by `_figures` in the direct shape
    horizon = expiry.HORIZON
    for r in rows:
        if r[2] is None and r[3] is not None:  # the same card: its expiry is the kept one
            expires = _expires(r[4], r[5])
            if expires is not None and expires > r[0] + horizon:
                replaced += 1
                continue
            renewal = _renewal_of(r[1])  # needed by the later of the two (`_needed_by`)
            if expires is None or (renewal is not None and renewal > expires):
                expires = renewal
            pending += expires is not None and expires > now
            continue
        others.append(_unpacked(*r))
    rest = _figures(within_30, within_60, others, now)
    return ExpiringCards(
        within_30, within_60, len(rows), replaced + rest.replaced_in_time, pending + rest.pending
    )


def _unpacked(
    first_sent: datetime,
    first_key: str | None,
    old: str | None,
    card_id: str | None,
    exp_month: int | None,
    exp_year: int | None,
    created: int | None,
) -> tuple[Any, ...]:
    """The direct read's row shape from the kept one: the notified card is either the card
    charged now (`old` None, see above), or `old` packed "id:month:year", or not mirrored
    (`old` '')."""
    if old is None and card_id is not None:
        return (
            first_sent,
            first_key,
            card_id,
            exp_month,
            exp_year,
            card_id,
            exp_month,
            exp_year,
            created,
        )
    old_id = old_month = old_year = None
    if old:
        old_id, month, year = old.rsplit(":", 2)
        old_month, old_year = (int(month) if month else None), (int(year) if year else None)
    return (
        first_sent,
        first_key,
        old_id,
        old_month,
        old_year,
        card_id,
        exp_month,
        exp_year,
        created,
    )


def _figures(
    within_30: int, within_60: int, rows: Sequence[Sequence[Any]], now: datetime
) -> ExpiringCards:
    replaced = pending = 0
    for r in rows:
        if _replaced_in_time(*r):
            replaced += 1
        else:
            deadline = _needed_by(r[1], r[3], r[4])
            pending += deadline is not None and deadline > now
    return ExpiringCards(within_30, within_60, len(rows), replaced, pending)


def _renewal_of(key: str | None) -> datetime | None:
    """The renewal a notice was about, from its key (`...:<YYYY-MM-DD>:<step>`)."""
    parts = (key or "").rsplit(":", 2)
    return _day(parts[-2]) if len(parts) == 3 else None


@functools.lru_cache(maxsize=4096)
def _day(text: str) -> datetime | None:
    # a few hundred renewal dates among the thousands of notices a view reads
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _needed_by(key: str | None, exp_month: int | None, exp_year: int | None) -> datetime | None:
    """When a replacement was needed: the later of the card's end and the notice's renewal."""
    found = [t for t in (_expires(exp_month, exp_year), _renewal_of(key)) if t is not None]
    return max(found) if found else None


@functools.lru_cache(maxsize=4096)
def _expires(exp_month: int | None, exp_year: int | None) -> datetime | None:
    # a few dozen (month, year) pairs among the thousands of notified cards a view reads
    return expiry.card_expires_at(_card(exp_month, exp_year))


@dataclass(frozen=True)
class _Expiry:
    exp_month: int | None
    exp_year: int | None


def _card(exp_month: int | None, exp_year: int | None) -> PaymentMethod:
    # expiry.card_expires_at reads these two fields only; a mapped PaymentMethod costs ~15 µs
    # to build, and a view builds one per notified card (6k at bench/dashboard_scale.py's size)
    return cast(PaymentMethod, _Expiry(exp_month, exp_year))


def _replaced_in_time(
    first_sent: datetime,
    first_key: str | None,
    old_id: str | None,
    old_month: int | None,
    old_year: int | None,
    new_id: str | None,
    new_month: int | None,
    new_year: int | None,
    new_created: int | None,
) -> bool:
    if old_id is None or new_id is None:
        return False
    if new_id == old_id:
        # A notice goes out only for a card expiring before a renewal at most HORIZON after
        # the scan that planned it, so an expiry later than that was moved by the network.
        expires = _expires(new_month, new_year)
        return expires is not None and expires > first_sent + expiry.HORIZON
    needed_by = _needed_by(first_key, old_month, old_year)
    if needed_by is None or new_created is None:
        return False
    return datetime.fromtimestamp(new_created, UTC) < needed_by
