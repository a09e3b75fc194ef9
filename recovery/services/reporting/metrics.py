"""The billing dashboard's numbers: one code path for the overview page and GET /api/v1/metrics.

Every figure is for one currency and one period `[period_from, period_to)` (UTC). Amounts are in
the currency's minor units, exactly as Stripe reports them (cents; yen for JPY).

Failed-payment figures follow a **cohort**: the recovery cases *opened* in the period (one case
per failed invoice), each counted in the state it is in *now*. So a case that failed on the 30th
and was paid on the 2nd of the next month counts as failed and as recovered in the period it
failed in, and `failed = recovered + in progress + lost` always holds, in count and amount.

- failed: cases opened in the period; amount = what was owed when the case opened.
- recovered: those whose status is `recovered` (money arrived, including late payments after
  dunning ended); amount = what was actually collected (`amount_recovered`).
  `recovered_share` = recovered amount / failed amount (None when nothing failed).
- in progress: status open, retrying or awaiting the customer; amount = amount owed.
- lost: ended without payment - dunning ran out (`lost`) or there was nothing left to collect
  (`closed`: voided, marked uncollectible, subscription cancelled, deleted); amount = amount owed.
  `lost_reasons` splits them: `dunning_ended` or the close reason.
- recovered monthly revenue: the distinct subscriptions behind the recovered cases, each at its
  current mirrored items: unit amount x quantity per billing period, summed per billing cadence
  and turned into a monthly amount with `domain.offers.monthly_amount` (a year is 1/12 month, a
  week 52/12 per month, a day 365/12, divided by the interval count), rounded once per cadence.
  Metered items (no unit amount) count as 0. A subscription recovered twice counts once.
- median days to recover: the median of (closed_at - opened_at) over recovered cases, in days
  (two decimals); for an even count, the mean of the two middle values. None with no recovery.
- by decline category / card brand: failed and recovered per the case's last known decline
  category and card brand (`unknown` when not known).
- by trigger (`recovered_via`): our retry, card-update link, hosted invoice page, Stripe's own
  retry, paid outside Stripe - as recorded when the money arrived (services/cases.py).
- by reminder channel: of the recoveries the customer made (every trigger but our retry and
  Stripe's), the channel of the last reminder actually sent for the case before the payment
  (`email`, `sms`), or `none` when the customer paid before any reminder went out.
- weekly: per ISO week of the period (partial weeks at the edges included), the cases opened
  that week and how much of them has been recovered so far (same cohort as the tiles).

Expiring cards (not cohort-based; `now` matters):
- within 30 / 60 days: distinct cards that are the default card (subscription's, else the
  customer's - as the expiry tracker resolves it) of a live subscription (active or trialing,
  not set to cancel) in this currency, which stop working after now and at most 30 / 60 days
  from now. A card works through the last day of its expiry month.
- notified: distinct (subscription, card) pairs of this currency with an expiring-card notice
  sent in the period.
- replaced in time: of those, pairs whose subscription now charges a different card that was
  added (Stripe `created`) before the notified card stopped working; or whose same card now
  expires later than any notified card could have (the card network updated it - Stripe does
  not say when, and networks update ahead of expiry, so these count as in time).

Cancel flow (sessions created in the period, this currency):
- sessions: all; saved: accepted an offer; cancelled; abandoned (left or expired without
  deciding); undecided: still open.
- save rate = saved / (saved + cancelled): of the subscribers who made a decision, the share who
  stayed. Abandoned and open sessions are left out (they neither cancelled nor accepted).
- saves by offer: saved sessions per offer kind.
- reasons: sessions per survey reason (`none` when none was given); recent answers: the latest
  free-text answers (newest first).
- revenue saved: the monthly revenue the saved subscriptions go on paying (`mrr_after`: a pause
  keeps the full plan, only deferred; a discount or downgrade keeps the reduced amount);
  revenue conceded: what the offers gave away (mrr_before - mrr_after over the saves).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from babel.numbers import list_currencies
from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    distinct,
    extract,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import Session, aliased

from recovery.domain.cases import ACTIVE, CaseStatus, RecoveredVia
from recovery.domain.offers import monthly_amount
from recovery.i18n import major_units
from recovery.models import (
    CancelSession,
    Customer,
    MessageStatus,
    OutboxMessage,
    PaymentMethod,
    RecoveryCase,
    Subscription,
    SubscriptionItem,
)
from recovery.models.cancel_flow import Outcome
from recovery.services.messaging import expiry

RECENT_ANSWERS = 10
# Recoveries the customer made (after a reminder, or not); the rest are charges we or Stripe ran.
AUTOMATIC = (RecoveredVia.OUR_RETRY.value, RecoveredVia.STRIPE_RETRY.value)
LOST_STATUSES = (CaseStatus.LOST.value, CaseStatus.CLOSED.value)
SAVED_OUTCOMES = (
    Outcome.SAVED_BY_PAUSE.value,
    Outcome.SAVED_BY_DOWNGRADE.value,
    Outcome.SAVED_BY_LONGER_TERM.value,
    Outcome.SAVED_BY_DISCOUNT.value,
)
CURRENCY_SHAPE = re.compile(r"[a-z]{3}")
KNOWN_CURRENCIES = frozenset(code.lower() for code in list_currencies())
DEFAULT_CURRENCY = "usd"


# ---- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    count: int = 0
    amount: int = 0


@dataclass(frozen=True)
class Keyed:
    """A count and an amount under a key (a trigger, a channel, a reason for loss)."""

    key: str
    count: int
    amount: int


@dataclass(frozen=True)
class Breakdown:
    """Failed and recovered cases under one key (a decline category, a card brand)."""

    key: str
    failed_count: int
    failed_amount: int
    recovered_count: int
    recovered_amount: int
    recovered_share: float | None  # recovered amount / failed amount


@dataclass(frozen=True)
class Week:
    week: str  # ISO week, e.g. 2026-W45
    starts: date  # its Monday
    failed_count: int
    failed_amount: int
    recovered_count: int
    recovered_amount: int


@dataclass(frozen=True)
class ExpiringCards:
    within_30_days: int
    within_60_days: int
    notified: int
    replaced_in_time: int


@dataclass(frozen=True)
class Answer:
    at: datetime
    reason: str | None
    text: str


@dataclass(frozen=True)
class CancelFlowStats:
    sessions: int
    saved: int
    cancelled: int
    abandoned: int
    undecided: int
    save_rate: float | None  # saved / (saved + cancelled)
    saves_by_offer: tuple[Keyed, ...]  # amount: monthly revenue kept
    reasons: tuple[Keyed, ...]  # amount: monthly revenue of those sessions before deciding
    recent_answers: tuple[Answer, ...]
    revenue_saved: int  # monthly revenue the saves keep
    revenue_conceded: int  # monthly revenue the offers gave away


@dataclass(frozen=True)
class Overview:
    period_from: datetime
    period_to: datetime
    currency: str
    exponent: int  # decimals of the currency's major unit: amount / 10**exponent
    failed: Tally
    recovered: Tally
    recovered_share: float | None
    in_progress: Tally
    lost: Tally
    lost_reasons: tuple[Keyed, ...]
    recovered_monthly_revenue: int
    median_days_to_recover: float | None
    by_decline_category: tuple[Breakdown, ...]
    by_card_brand: tuple[Breakdown, ...]
    by_trigger: tuple[Keyed, ...]
    by_reminder_channel: tuple[Keyed, ...]
    weekly: tuple[Week, ...]
    expiring_cards: ExpiringCards
    cancel_flow: CancelFlowStats
    generated_at: datetime = field(compare=False)

    def as_json(self) -> dict[str, Any]:
        """The API's body: dates as ISO strings, amounts in minor units."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def share(part: int, whole: int) -> float | None:
    """A ratio to four decimals (0.4286 = 42.86 %); None when the whole is zero."""
    return None if whole == 0 else round(part / whole, 4)


def exponent_of(currency: str) -> int:
    exp = major_units(1, currency).as_tuple().exponent
    assert isinstance(exp, int)
    return -exp


def major(amount: int, currency: str) -> Decimal:
    return major_units(amount, currency)


# ---- parameters ---------------------------------------------------------------------------------


class BadPeriod(ValueError):
    """A period or currency the caller must fix (the API answers 400 with this message)."""


MAX_PERIOD = timedelta(days=3 * 366)


def check_currency(raw: str) -> str:
    code = raw.strip().lower()
    if not CURRENCY_SHAPE.fullmatch(code):
        raise BadPeriod("currency must be a three-letter ISO 4217 code, e.g. usd")
    if code not in KNOWN_CURRENCIES:
        raise BadPeriod(f"unknown currency {code!r}")
    return code


def period_of(day_from: date, day_to: date) -> tuple[datetime, datetime]:
    """Calendar days, both included, as the half-open UTC interval the queries use."""
    if day_from > day_to:
        raise BadPeriod("from must be on or before to")
    start = datetime(day_from.year, day_from.month, day_from.day, tzinfo=UTC)
    end = datetime(day_to.year, day_to.month, day_to.day, tzinfo=UTC) + timedelta(days=1)
    if end - start > MAX_PERIOD:
        raise BadPeriod("the period may span at most 3 years")
    return start, end


def default_currency(session: Session) -> str:
    """The currency most cases were in (then most cancel sessions), else usd."""
    for column in (RecoveryCase.currency, CancelSession.currency):
        row = session.execute(
            select(column).group_by(column).order_by(func.count().desc(), column).limit(1)
        ).first()
        if row is not None and row[0]:
            return str(row[0]).lower()
    return DEFAULT_CURRENCY


def currencies_in_use(session: Session) -> list[str]:
    """Currencies that have cases, most used first (for the page's picker)."""
    rows = session.execute(
        select(RecoveryCase.currency)
        .group_by(RecoveryCase.currency)
        .order_by(func.count().desc(), RecoveryCase.currency)
    ).all()
    return [str(r[0]).lower() for r in rows]


# ---- the computation ----------------------------------------------------------------------------


def compute_overview(
    session: Session, period_from: datetime, period_to: datetime, currency: str, now: datetime
) -> Overview:
    """Every number of the overview; a fixed handful of queries whatever the number of cases."""
    currency = currency.lower()
    cohort = and_(
        RecoveryCase.currency == currency,
        RecoveryCase.opened_at >= period_from,
        RecoveryCase.opened_at < period_to,
    )
    groups = _case_groups(session, cohort)
    failed = Tally(sum(g.count for g in groups), sum(g.amount_due for g in groups))
    recovered_groups = [g for g in groups if g.status == CaseStatus.RECOVERED]
    recovered = Tally(
        sum(g.count for g in recovered_groups), sum(g.amount_recovered for g in recovered_groups)
    )
    active = {s.value for s in ACTIVE}
    in_progress = _tally(g for g in groups if g.status in active)
    lost_groups = [g for g in groups if g.status in LOST_STATUSES]
    lost = _tally(lost_groups)
    lost_reasons: Counter[str] = Counter()
    lost_amounts: Counter[str] = Counter()
    for g in lost_groups:
        key = "dunning_ended" if g.status == CaseStatus.LOST else (g.close_reason or "closed")
        lost_reasons[key] += g.count
        lost_amounts[key] += g.amount_due
    triggers = {v.value: [0, 0] for v in RecoveredVia}
    for g in recovered_groups:
        slot = triggers.setdefault(g.recovered_via or "unknown", [0, 0])
        slot[0] += g.count
        slot[1] += g.amount_recovered
    customer_made = Tally(
        sum(g.count for g in recovered_groups if g.recovered_via not in AUTOMATIC),
        sum(g.amount_recovered for g in recovered_groups if g.recovered_via not in AUTOMATIC),
    )
    return Overview(
        period_from=period_from,
        period_to=period_to,
        currency=currency,
        exponent=exponent_of(currency),
        failed=failed,
        recovered=recovered,
        recovered_share=share(recovered.amount, failed.amount),
        in_progress=in_progress,
        lost=lost,
        lost_reasons=tuple(
            Keyed(k, lost_reasons[k], lost_amounts[k]) for k in sorted(lost_reasons)
        ),
        recovered_monthly_revenue=_recovered_mrr(session, cohort),
        median_days_to_recover=_median_days(session, cohort),
        by_decline_category=_breakdown(groups, "decline_category"),
        by_card_brand=_breakdown(groups, "card_brand"),
        by_trigger=tuple(Keyed(k, c, a) for k, (c, a) in triggers.items()),
        by_reminder_channel=_reminder_channels(session, cohort, customer_made),
        weekly=_weekly(session, cohort, period_from, period_to),
        expiring_cards=_expiring_cards(session, currency, period_from, period_to, now),
        cancel_flow=_cancel_flow(session, currency, period_from, period_to),
        generated_at=now,
    )


@dataclass(frozen=True)
class _Group:
    status: str
    close_reason: str | None
    recovered_via: str | None
    decline_category: str | None
    card_brand: str | None
    count: int
    amount_due: int
    amount_recovered: int


def _case_groups(session: Session, cohort: ColumnElement[bool]) -> list[_Group]:
    """One GROUP BY over the cohort: every case figure but the median and the trend is a sum of
    these few rows (statuses x reasons x triggers x categories x brands actually seen)."""
    keys = (
        RecoveryCase.status,
        RecoveryCase.close_reason,
        RecoveryCase.recovered_via,
        RecoveryCase.decline_category,
        RecoveryCase.card_brand,
    )
    rows = session.execute(
        select(
            *keys,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
        )
        .where(cohort)
        .group_by(*keys)
    ).all()
    return [_Group(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), int(r[7])) for r in rows]


def _tally(groups: Iterable[_Group]) -> Tally:
    count = amount = 0
    for g in groups:
        count += g.count
        amount += g.amount_due
    return Tally(count, amount)


def _breakdown(groups: Sequence[_Group], attr: str) -> tuple[Breakdown, ...]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for g in groups:
        slot = sums[getattr(g, attr) or "unknown"]
        slot[0] += g.count
        slot[1] += g.amount_due
        if g.status == CaseStatus.RECOVERED:
            slot[2] += g.count
            slot[3] += g.amount_recovered
    ordered = sorted(sums.items(), key=lambda kv: (-kv[1][1], kv[0]))  # biggest failed first
    return tuple(Breakdown(k, f, fa, r, ra, share(ra, fa)) for k, (f, fa, r, ra) in ordered)


def _recovered_mrr(session: Session, cohort: ColumnElement[bool]) -> int:
    recovered_subs = select(RecoveryCase.subscription_id).where(
        cohort, RecoveryCase.status == CaseStatus.RECOVERED
    )
    rows = session.execute(
        select(
            SubscriptionItem.interval,
            SubscriptionItem.interval_count,
            func.coalesce(
                func.sum(
                    func.coalesce(SubscriptionItem.unit_amount, 0) * SubscriptionItem.quantity
                ),
                0,
            ),
        )
        .where(SubscriptionItem.subscription_id.in_(recovered_subs))
        .group_by(SubscriptionItem.interval, SubscriptionItem.interval_count)
    ).all()
    return sum(monthly_amount(int(r[2]), r[0], int(r[1] or 1)) for r in rows)


def _seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """Whole seconds from start to end, in the engine's own date arithmetic."""
    if session.get_bind().dialect.name == "postgresql":
        return func.round(extract("epoch", end - start))
    return func.round((func.julianday(end) - func.julianday(start)) * 86400)


def _median_days(session: Session, cohort: ColumnElement[bool]) -> float | None:
    """The median found by the database (window functions work on SQLite >= 3.25 and
    PostgreSQL), so only the one or two middle values come back, however many cases."""
    seconds = _seconds_between(session, RecoveryCase.opened_at, RecoveryCase.closed_at)
    ranked = (
        select(
            seconds.label("s"),
            func.row_number().over(order_by=seconds).label("rn"),
            func.count().over().label("n"),
        )
        .where(cohort, RecoveryCase.status == CaseStatus.RECOVERED)
        .where(RecoveryCase.closed_at.is_not(None))
        .subquery()
    )
    middle = session.execute(
        select(ranked.c.s).where(ranked.c.rn.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2]))
    ).all()
    if not middle:
        return None
    values = [float(r[0]) for r in middle]
    return round(sum(values) / len(values) / 86400, 2)


def _reminder_channels(
    session: Session, cohort: ColumnElement[bool], customer_made: Tally
) -> tuple[Keyed, ...]:
    ranked = (
        select(
            OutboxMessage.channel.label("channel"),
            RecoveryCase.amount_recovered.label("amount"),
            func.row_number()
            .over(
                partition_by=OutboxMessage.case_id,
                order_by=(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc()),
            )
            .label("rn"),
        )
        .join(RecoveryCase, RecoveryCase.id == OutboxMessage.case_id)
        .where(cohort, RecoveryCase.status == CaseStatus.RECOVERED)
        .where(RecoveryCase.recovered_via.not_in(AUTOMATIC))
        .where(OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at <= RecoveryCase.closed_at)
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.channel, func.count(), func.coalesce(func.sum(ranked.c.amount), 0))
        .where(ranked.c.rn == 1)
        .group_by(ranked.c.channel)
    ).all()
    found = {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
    email, sms = found.pop("email", (0, 0)), found.pop("sms", (0, 0))
    others = [Keyed(k, c, a) for k, (c, a) in sorted(found.items())]
    after = email[0] + sms[0] + sum(k.count for k in others)
    after_amount = email[1] + sms[1] + sum(k.amount for k in others)
    return (
        Keyed("email", *email),
        Keyed("sms", *sms),
        *others,
        Keyed("none", customer_made.count - after, customer_made.amount - after_amount),
    )


def _as_date(value: Any) -> date:
    # SQLite's date() gives text, PostgreSQL's a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _weekly(
    session: Session, cohort: ColumnElement[bool], period_from: datetime, period_to: datetime
) -> tuple[Week, ...]:
    """Summed per day by the database (a few hundred rows at most), then folded into ISO weeks
    here: SQLite has no ISO-week function."""
    day = func.date(RecoveryCase.opened_at)
    is_recovered = RecoveryCase.status == CaseStatus.RECOVERED
    rows = session.execute(
        select(
            day,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(case((is_recovered, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((is_recovered, RecoveryCase.amount_recovered), else_=0)), 0
            ),
        )
        .where(cohort)
        .group_by(day)
    ).all()
    weeks: dict[tuple[int, int], list[int]] = {}
    first, last = period_from.date(), (period_to - timedelta(microseconds=1)).date()
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        iso = monday.isocalendar()
        weeks[(iso.year, iso.week)] = [0, 0, 0, 0]
        monday += timedelta(days=7)
    for r in rows:
        iso = _as_date(r[0]).isocalendar()
        slot = weeks.setdefault((iso.year, iso.week), [0, 0, 0, 0])
        for i in range(4):
            slot[i] += int(r[i + 1])
    return tuple(
        Week(f"{y}-W{w:02d}", date.fromisocalendar(y, w, 1), *sums)
        for (y, w), sums in sorted(weeks.items())
    )


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


def _expiring_cards(
    session: Session, currency: str, period_from: datetime, period_to: datetime, now: datetime
) -> ExpiringCards:
    # A card expiring in month m stops working at the start of month m+1; that instant is after
    # now for m >= this month, and at most now+N days for m+1 <= the month of now+N.
    low = _month_index(now)
    high30 = _month_index(now + timedelta(days=30)) - 1
    high60 = _month_index(now + timedelta(days=60)) - 1
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

    notices = (
        select(
            OutboxMessage.about.label("about"),
            OutboxMessage.customer_id.label("customer_id"),
            func.min(OutboxMessage.sent_at).label("first_sent"),
        )
        .where(OutboxMessage.about.like("expiry:%"))
        .where(OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at >= period_from, OutboxMessage.sent_at < period_to)
        .group_by(OutboxMessage.about, OutboxMessage.customer_id)
        .subquery()
    )
    # about = "expiry:<subscription>:<card>"; the subscription is found among the customer's
    # (indexed), the notified card by the rest of the string.
    prefix = literal("expiry:") + Subscription.id + literal(":")
    old, new = aliased(PaymentMethod), aliased(PaymentMethod)
    rows = session.execute(
        select(
            notices.c.first_sent,
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
    replaced = sum(_replaced_in_time(*r) for r in rows)
    return ExpiringCards(int(within[0]), int(within[1]), len(rows), replaced)


def _card(exp_month: int | None, exp_year: int | None) -> PaymentMethod:
    return PaymentMethod(exp_month=exp_month, exp_year=exp_year)


def _replaced_in_time(
    first_sent: datetime,
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
        expires = expiry.card_expires_at(_card(new_month, new_year))
        return expires is not None and expires > first_sent + expiry.HORIZON
    old_expires = expiry.card_expires_at(_card(old_month, old_year))
    if old_expires is None or new_created is None:
        return False
    return datetime.fromtimestamp(new_created, UTC) < old_expires


def _cancel_flow(
    session: Session, currency: str, period_from: datetime, period_to: datetime
) -> CancelFlowStats:
    in_period = and_(
        CancelSession.currency == currency,
        CancelSession.created_at >= period_from,
        CancelSession.created_at < period_to,
    )
    rows = session.execute(
        select(
            CancelSession.outcome,
            CancelSession.reason,
            func.count(),
            func.coalesce(func.sum(CancelSession.mrr_before), 0),
            func.coalesce(func.sum(CancelSession.mrr_after), 0),
        )
        .where(in_period)
        .group_by(CancelSession.outcome, CancelSession.reason)
    ).all()
    by_outcome: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    reason_mrr: Counter[str] = Counter()
    conceded = 0
    for outcome, reason, n, mrr_before, mrr_after in rows:
        count, before, after = int(n), int(mrr_before or 0), int(mrr_after or 0)
        by_outcome[outcome or "undecided"] += count
        reasons[reason or "none"] += count
        reason_mrr[reason or "none"] += before
        if outcome in SAVED_OUTCOMES:
            kept[outcome] += after
            conceded += before - after
    saved = sum(by_outcome[o] for o in SAVED_OUTCOMES)
    cancelled = by_outcome[Outcome.CANCELLED]
    answers = session.execute(
        select(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at),
            CancelSession.reason,
            CancelSession.reason_text,
        )
        .where(in_period)
        .where(CancelSession.reason_text.is_not(None), CancelSession.reason_text != "")
        .order_by(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at).desc(),
            CancelSession.id.desc(),
        )
        .limit(RECENT_ANSWERS)
    ).all()
    return CancelFlowStats(
        sessions=sum(by_outcome.values()),
        saved=saved,
        cancelled=cancelled,
        abandoned=by_outcome[Outcome.ABANDONED],
        undecided=by_outcome["undecided"],
        save_rate=share(saved, saved + cancelled),
        saves_by_offer=tuple(
            Keyed(o.removeprefix("saved_by_"), by_outcome[o], kept[o]) for o in SAVED_OUTCOMES
        ),
        reasons=_ordered(reasons, reason_mrr),
        recent_answers=tuple(Answer(r[0], r[1], str(r[2])) for r in answers),
        revenue_saved=sum(kept.values()),
        revenue_conceded=conceded,
    )


def _ordered(counts: Mapping[str, int], amounts: Mapping[str, int]) -> tuple[Keyed, ...]:
    return tuple(
        Keyed(k, counts[k], amounts.get(k, 0))
        for k in sorted(counts, key=lambda k: (-counts[k], k))
    )
