"""When to charge a failed invoice again - or why not to.

Pure: every input arrives as an argument, ``now`` included, and the same inputs always give the
same decision. Facts behind the defaults: docs/stripe.md, card-networks.md, retry-evidence.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import takewhile
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recovery.domain.business_days import BusinessCalendar, calendar_for
from recovery.domain.declines import (
    Classification,
    Decline,
    DeclineCategory,
    classify,
    is_insufficient_funds,
    normalize_brand,
)
from recovery.domain.paydays import (
    OWN_DAY,
    own_payment_days,
    payday_slots,
    short_day,
)
from recovery.domain.retry_rules import (
    Funding,
    NetworkCaps,
    RetryRules,
    RulesError,
)

__all__ = [
    "Attempt",
    "CardInfo",
    "Funding",
    "NetworkCaps",
    "RetryContext",
    "RetryDecision",
    "RetryRules",
    "RulesError",
    "decide_next_retry",
]


# Visa and Mastercard both count reattempts over a rolling 30 days (docs/card-networks.md).
CAP_PERIOD = timedelta(days=30)
_DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One charge of the invoice (ours or Stripe's), or of the same card on another invoice."""

    at: datetime
    card_fingerprint: str | None
    card_brand: str | None
    decline: Decline | None
    succeeded: bool
    by: Literal["recovery", "stripe"]
    # False for the same card's attempts on other invoices: they count only toward network caps.
    on_this_invoice: bool = True


@dataclass(frozen=True, slots=True)
class CardInfo:
    brand: str | None
    funding: Funding
    fingerprint: str | None


@dataclass(frozen=True, slots=True)
class RetryContext:
    case_opened_at: datetime
    attempts: Sequence[Attempt]
    card: CardInfo | None
    card_changed_since_last_failure: bool
    customer_timezone: str  # IANA; an unknown name falls back to UTC
    amount: int  # minor units; not used by today's rules (Mastercard's cap is per amount)
    currency: str
    # Local day of the month of each renewal whose first attempt succeeded; a day seen twice
    # is the customer's own payment day (`paydays.own_payment_days`).
    past_success_days: Sequence[int] = ()
    customer_country: str | None = None  # ISO 3166 alpha-2: whose weekends and holidays
    # Our retries of this invoice so far (the case's count); None: count the `by="recovery"`
    # attempts. The next one is "our retry <retries_made + 1>", as the case timeline says.
    retries_made: int | None = None
    # When the customer said "I've contacted my bank - try again" (the card-update page), for
    # a decline only they could clear with their issuer: one try follows within the hour.
    bank_calls: Sequence[datetime] = ()


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``at`` is when to charge next; None means no charge is scheduled.

    ``stop``: no more charges of the current card (never-retry, budget spent, no payday or no
    room left in the window), or none at all (paid, window over).
    ``wait_for_new_card``: a different card would be charged at once; ask the customer for one.
    ``stop`` without ``wait_for_new_card`` means dunning is over: the invoice is paid or the window
    has ended (then apply ``RetryRules.end_of_dunning``). ``at`` None with neither flag: the
    customer must act (3DS, a call to their bank), or Stripe owns the retries.
    """

    at: datetime | None
    stop: bool
    wait_for_new_card: bool
    reason: str


def decide_next_retry(
    ctx: RetryContext, rules: RetryRules, now: datetime, *, fixed_days: Sequence[int] = ()
) -> RetryDecision:
    """The next charge of the invoice in ``ctx``, never before ``now`` nor after the window.
    ``fixed_days`` (an experiment arm's schedule): on these days after the case opened, every
    rule on whether to charge at all (never-retry, budget, network waits, caps, gaps) kept."""
    _require_aware(now, "now")
    _require_aware(ctx.case_opened_at, "case_opened_at")
    zone, zone_name = _zone(ctx.customer_timezone)
    window_end = ctx.case_opened_at + timedelta(days=rules.window_days)
    ordered = _in_order(ctx.attempts)
    invoice = [a for a in ordered if a.on_this_invoice]

    if any(a.succeeded for a in invoice):
        return RetryDecision(None, True, False, "the invoice is paid")
    if now >= window_end:
        ended = _fmt(window_end, zone, zone_name)
        return RetryDecision(
            None,
            True,
            False,
            f"the {rules.window_days}-day retry window ended {ended}: {rules.end_of_dunning}",
        )
    if rules.retry_owner == "stripe":
        return RetryDecision(None, False, False, "Stripe runs the retries (retry_owner = stripe)")
    card = ctx.card
    if card is None:
        return RetryDecision(None, False, True, "no card on file: waiting for the customer")

    last = invoice[-1] if invoice else None
    verdict = _classify(last) if last else classify(Decline())
    changed = ctx.card_changed_since_last_failure
    # Network rules follow the card number: a changed card with the same fingerprint (say, the
    # card updater's new expiry date) is still the same card to Visa and Mastercard.
    same_number = not changed or (
        card.fingerprint is not None
        and last is not None
        and last.card_fingerprint == card.fingerprint
    )

    def on_card(a: Attempt) -> bool:
        if card.fingerprint is not None:
            return a.card_fingerprint == card.fingerprint
        return same_number  # unknown fingerprint: count everything unless the card changed

    history = [(a, _classify(a)) for a in ordered if not a.succeeded and on_card(a)]
    stopped_by = next((v for _, v in reversed(history) if v.stop_card), None)
    if stopped_by is None and same_number and verdict.stop_card:
        stopped_by = verdict
    if stopped_by is not None:
        note = " (the new payment method is the same card number)" if changed else ""
        return RetryDecision(
            None,
            True,
            True,
            f"{stopped_by.reason}: never charged again on this card{note}; {_NEW_CARD}",
        )
    if not changed and verdict.category is DeclineCategory.NEEDS_NEW_CARD:
        return RetryDecision(None, False, True, f"{verdict.reason}: {_NEW_CARD}")
    # The customer's latest word about their bank since the last charge, if any.
    bank_call = max((c for c in ctx.bank_calls if last is None or c > last.at), default=None)
    if not changed and verdict.category is DeclineCategory.NEEDS_CUSTOMER and bank_call is None:
        return RetryDecision(None, False, False, f"{verdict.reason}: waiting for the customer")
    if not changed and verdict.category is DeclineCategory.NEVER_RETRY:  # not card-specific
        return RetryDecision(None, True, True, f"{verdict.reason}: not retried; {_NEW_CARD}")

    used = sum(1 for a in invoice if on_card(a))
    if used >= rules.max_attempts:
        return RetryDecision(
            None,
            True,
            True,
            f"all {rules.max_attempts} charges allowed on this card are used; {_NEW_CARD}",
        )
    ours = ctx.retries_made
    if ours is None:
        ours = sum(1 for a in invoice if a.by == "recovery")
    retry = f"our retry {ours + 1}"

    funds = last is not None and is_insufficient_funds(_with_brand(last))
    floor, notes = now, []
    # Never sooner than the network asked (Mastercard 24-30) on this card number.
    if same_number:
        for attempt, seen in history:
            if seen.not_before is not None and attempt.at + seen.not_before > floor:
                floor = attempt.at + seen.not_before
                notes = [f"not before {_fmt(floor, zone, zone_name)} ({seen.reason})"]
    cal = calendar_for(ctx.customer_country) if rules.business_days else None

    if bank_call is not None and not changed:
        floor = max(floor, bank_call + BANK_CALL_DELAY)

    def schedule(earliest: datetime) -> tuple[datetime | None, str, str]:
        if changed:
            # The customer just acted: no reason to wait for a business day.
            return earliest, "the card changed", f"trying the new card at once, {retry}"
        if bank_call is not None:
            # So did this one; the minimum gap is for guessing, and nobody is guessing now.
            said = _fmt(bank_call, zone, zone_name)
            return earliest, f"the customer contacted their bank ({said})", retry
        if fixed_days:
            since = last.at if last else ctx.case_opened_at
            lowest = max(earliest, since + timedelta(hours=rules.min_gap_hours))
            return _fixed_day(ctx.case_opened_at, lowest, fixed_days, verdict.reason, retry)
        if funds and rules.payday_targeting:
            return _after_funds(ctx, rules, last, earliest, window_end, zone, cal, retry)
        spread, detail = _spread(rules, last, earliest, window_end, ctx.case_opened_at, used, retry)
        at: datetime | None = spread
        if cal is not None:
            since = last.at if last else ctx.case_opened_at
            lowest = max(earliest, since + timedelta(hours=rules.min_gap_hours))
            at, moved = _open_day(spread, lowest, window_end, zone, cal)
            detail += moved
        return at, verdict.reason, detail

    at, what, detail = schedule(floor)
    if at is not None:
        cap = rules.network_caps.for_brand(card.brand)
        held = _cap_release([a.at for a in ordered if on_card(a)], at, cap)
        if held > at:
            at, what, detail = schedule(held)
            brand = normalize_brand(card.brand) or "this"
            notes.append(f"held by the {brand} cap of {cap} attempts on a card in 30 days")
    if at is None or at >= window_end:
        ended = _fmt(window_end, zone, zone_name)
        if at is None:
            reason = f"{what}: {detail} before the window ends {ended}"
        else:
            reason = f"{what}: no attempt fits before the window ends {ended}"
        # Stopped on this card only: a new card before the window ends is still charged.
        notes.append(_NEW_CARD)
        return RetryDecision(None, True, True, "; ".join([reason, *notes]))
    reason = f"{what}: next try {_fmt(at, zone, zone_name)} - {detail}"
    return RetryDecision(at, False, False, "; ".join([reason, *notes]))


# "I've contacted my bank - try again" (domain/bank_calls.py decides whether a press counts):
# the try follows this long after it - an issuer's lifted block takes a few minutes to reach
# its authorisation system (an assumption, not a published number).
BANK_CALL_DELAY = timedelta(minutes=10)


# Said when this card is done: a new card is charged when the customer adds one (the decision
# that follows says "the card changed"), so nothing here promises a charge that may not come.
_NEW_CARD = "waiting for the customer to add a different card"


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _zone(name: str) -> tuple[ZoneInfo, str]:
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), "UTC"


def _fmt(at: datetime, zone: ZoneInfo, zone_name: str) -> str:
    local = at.astimezone(zone)
    day, month = _DAY_ABBR[local.weekday()], _MONTH_ABBR[local.month - 1]
    return f"{day} {local.day} {month} {local:%H:%M} {zone_name}"


def _with_brand(attempt: Attempt) -> Decline:
    decline = attempt.decline or Decline()
    if decline.card_brand is None and attempt.card_brand is not None:
        return replace(decline, card_brand=attempt.card_brand)
    return decline


# classify() is pure and Decline is frozen: caching only saves time (a worker asks repeatedly).
_classify_decline = lru_cache(maxsize=4096)(classify)


def _in_order(attempts: Sequence[Attempt]) -> list[Attempt]:
    # Ties on time get a full tie-break: the decision never depends on the attempts' order.
    ordered = sorted(attempts, key=lambda a: a.at)
    if len({a.at for a in ordered}) < len(ordered):
        ordered.sort(key=_order)
    return ordered


def decline_read(ctx: RetryContext) -> tuple[str, str | None] | None:
    """The category and code of the decline `decide_next_retry` reads for this context (the
    invoice's latest charge), for the decision's timeline line; None when that is no decline."""
    invoice = [a for a in _in_order(ctx.attempts) if a.on_this_invoice]
    last = invoice[-1] if invoice else None
    if last is None or last.succeeded or last.decline is None:
        return None
    return _classify(last).category.value, last.decline.decline_code or last.decline.failure_code


def _classify(attempt: Attempt) -> Classification:
    return _classify_decline(_with_brand(attempt))


def _order(a: Attempt) -> tuple[datetime, bool, bool, str, str, str]:
    decline = a.decline or Decline()
    codes = "|".join(
        str(v)
        for v in (
            decline.decline_code,
            decline.network_advice_code,
            decline.network_decline_code,
            decline.advice_code,
            decline.failure_code,
            decline.outcome_type,
            decline.outcome_reason,
            decline.card_brand,
        )
    )
    return (a.at, a.on_this_invoice, a.succeeded, a.card_fingerprint or "", a.by, codes)


def _spread(
    rules: RetryRules,
    last: Attempt | None,
    earliest: datetime,
    window_end: datetime,
    opened: datetime,
    used: int,
    retry: str,
) -> tuple[datetime, str]:
    """About a day after the first failure, then the rest of the budget spread evenly."""
    since = last.at if last else opened
    budget = f"{used} of {rules.max_attempts} charges on this card used"
    if used <= 1:
        gap = timedelta(hours=rules.soft_first_retry_hours)
        detail = f"{retry}, about a day after the failure ({budget})"
    else:
        left = rules.max_attempts - used
        # One gap more than attempts left, so the last try lands well before the window ends.
        gap = max((window_end - since) / (left + 1), timedelta(hours=rules.min_gap_hours))
        detail = f"{retry}, spread over the {rules.window_days}-day window ({budget})"
    return max(since + gap, earliest), detail


def _fixed_day(
    opened: datetime, lowest: datetime, days: Sequence[int], what: str, retry: str
) -> tuple[datetime | None, str, str]:
    """The first day of the schedule (after the case opened) not before `lowest`, or None."""
    schedule = ", ".join(str(d) for d in days)
    for day in days:
        if (at := opened + timedelta(days=day)) >= lowest:
            return at, what, f"{retry}, day {day} of the fixed schedule (days {schedule})"
    return None, what, f"the fixed schedule (days {schedule}) has no day left"


def _open_day(
    at: datetime, lowest: datetime, window_end: datetime, zone: ZoneInfo, cal: BusinessCalendar
) -> tuple[datetime | None, str]:
    """`at` moved off a weekend or holiday of the customer: to the same local time on the next
    business day, or - if that is past the window - on the latest business day before, never
    earlier than `lowest` (the gap, the network's wait, the cap). None: no business day fits."""
    local = at.astimezone(zone)
    why = cal.closed(local.date())
    if why is None:
        return at, ""
    why = why if cal.holiday(local.date()) else "a weekend"
    moved = f"; moved from {short_day(local.date())}: {why}"
    later = _same_time(cal.open_on_or_after(local.date()), local.time(), zone)
    if later < window_end:
        return later, moved
    day = local.date() - timedelta(days=1)
    while day >= lowest.astimezone(zone).date():
        if cal.is_open(day):
            earlier = max(_same_time(day, local.time(), zone), lowest)
            if earlier.astimezone(zone).date() == day:
                return earlier, moved
        day -= timedelta(days=1)
    return None, f"; no business day left for it ({why} on {short_day(local.date())})"


def _same_time(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at).replace(tzinfo=zone).astimezone(UTC)


def _after_funds(
    ctx: RetryContext,
    rules: RetryRules,
    last: Attempt | None,
    earliest: datetime,
    window_end: datetime,
    zone: ZoneInfo,
    cal: BusinessCalendar | None,
    retry: str,
) -> tuple[datetime | None, str, str]:
    """The next likely payday morning, the customer's own payment days first; never the day
    after the last try (money that was not there yesterday rarely is today, and a second
    decline in two days only spends the card's network budget)."""
    since = last.at if last else ctx.case_opened_at
    start = max(earliest, since + timedelta(hours=rules.min_gap_hours))
    day_after_next = since.astimezone(zone).date() + timedelta(days=2)
    start = max(start, _same_time(day_after_next, time(0), zone))
    own = own_payment_days(ctx.past_success_days)
    slots = payday_slots(
        start,
        window_end,
        zone,
        cal or calendar_for(None),
        own=own,
        days_of_month=rules.payday_days_of_month,
        weekday_names=rules.payday_weekdays,
        last_business_day=rules.payday_last_business_day,
        hours=(rules.local_hour_start, rules.local_hour_end),
    )
    first = next(slots, None)
    if own and first is not None and not _own(first[1]):
        horizon = first[0] + OWN_DAY_PREFERENCE
        near = takewhile(lambda s: s[0] <= horizon, slots)
        first = next((s for s in near if _own(s[1])), first)
    funding = ctx.card.funding if ctx.card and ctx.card.funding != "unknown" else None
    what = f"insufficient_funds on a {funding} card" if funding else "insufficient_funds"
    if first is None:
        # Between paydays the money is not coming back; another try would only add a decline.
        return None, what, "no likely payday left"
    at, labels = first
    return at, what, f"payday ({', '.join(labels)}), {retry}"


def _own(labels: Sequence[str]) -> bool:
    return any(label.startswith(OWN_DAY) for label in labels)


# The customer's own payment day beats a common payday up to one weekly pay cycle earlier; a
# common payday further ahead of it is tried first (the own day still comes after, if missed).
# Judgement, checked in bench/recovery_sim.py: waiting weeks for a noisy own day cost recoveries.
OWN_DAY_PREFERENCE = timedelta(days=7)


def _cap_release(times: Sequence[datetime], at: datetime, cap: int) -> datetime:
    """Earliest moment >= ``at`` when one more attempt keeps any 30 days at ``cap`` or fewer."""
    recent = [t for t in times if at - CAP_PERIOD < t <= at]
    excess = len(recent) - (cap - 1)
    if excess <= 0:
        return at
    return recent[excess - 1] + CAP_PERIOD
