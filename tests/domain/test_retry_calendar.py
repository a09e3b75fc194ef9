"""Retries a person would believe: their own payment days come from a pattern, money is never
asked for two days running, and no scheduled try lands on the customer's weekend or public
holiday - without a holiday ever pushing a try out of the window or over a network cap."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.business_days import calendar_for, customer_country
from recovery.domain.declines import Decline
from recovery.domain.paydays import OWN_DAY, own_payment_days
from recovery.domain.reminders import plan
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    RetryContext,
    RetryDecision,
    RetryRules,
    decide_next_retry,
)
from recovery.domain.timezones import COUNTRY_ZONES
from recovery.rules import Rules
from tests.domain.test_retry_policy import _assert_lawful, _situations

PROPERTY = settings(max_examples=200, derandomize=True, deadline=None)
FUNDS = Decline(failure_code="card_declined", decline_code="insufficient_funds")
SOFT = Decline(failure_code="card_declined", decline_code="do_not_honor")
COUNTRIES = sorted(COUNTRY_ZONES)


def _ctx(
    country: str | None,
    opened: datetime,
    attempts: list[Attempt],
    *,
    past: tuple[int, ...] = (),
    retries: int | None = None,
    brand: str = "visa",
) -> RetryContext:
    zone = COUNTRY_ZONES.get(country or "", "UTC")
    return RetryContext(
        case_opened_at=opened,
        attempts=attempts,
        card=CardInfo(brand, "debit", "fp_a"),
        card_changed_since_last_failure=False,
        customer_timezone=zone,
        amount=2000,
        currency="usd",
        past_success_days=past,
        customer_country=country,
        retries_made=retries,
    )


def _failed(at: datetime, decline: Decline, by: str = "stripe") -> Attempt:
    return Attempt(at, "fp_a", "visa", decline, False, by)  # type: ignore[arg-type]


def _run(ctx: RetryContext, rules: RetryRules, decline: Decline) -> list[RetryDecision]:
    """Follow every decision with a failed charge at its time until the policy stops."""
    decisions, attempts, now = [], list(ctx.attempts), ctx.case_opened_at
    for retry in range(40):
        current = replace(ctx, attempts=list(attempts), retries_made=retry)
        decision = decide_next_retry(current, rules, now)
        _assert_lawful(current, rules, now, decision)
        decisions.append(decision)
        if decision.at is None:
            break
        now = decision.at
        attempts.append(_failed(now, decline, "recovery"))
    return decisions


# ---- the customer's own payment days ---------------------------------------------------------


@PROPERTY
@given(st.lists(st.integers(-3, 40), max_size=30))
def test_own_payment_days_are_days_seen_at_least_twice(days: list[int]) -> None:
    own = own_payment_days(days)
    for day in range(1, 32):
        assert (day in own) == (days.count(day) >= 2)


@PROPERTY
@given(
    opened=st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    past=st.lists(st.integers(1, 31), max_size=12, unique=True),
    country=st.sampled_from([None, *COUNTRIES]),
)
def test_a_day_seen_once_is_never_called_their_usual_payment_day(
    opened: datetime, past: list[int], country: str | None
) -> None:
    for decision in _run(
        _ctx(country, opened, [_failed(opened, FUNDS)], past=tuple(past)), RetryRules(), FUNDS
    ):
        assert OWN_DAY not in decision.reason


def test_a_day_seen_twice_is_their_usual_payment_day() -> None:
    opened = datetime(2026, 11, 18, 16, 0, tzinfo=UTC)  # Wednesday, Madrid
    once = decide_next_retry(
        _ctx("ES", opened, [_failed(opened, FUNDS)], past=(23,)), RetryRules(), opened
    )
    twice = decide_next_retry(
        _ctx("ES", opened, [_failed(opened, FUNDS)], past=(23, 23)), RetryRules(), opened
    )
    assert OWN_DAY not in once.reason
    assert twice.at == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Mon 23 Nov, 08:00 Madrid
    assert "payday (their usual payment day), our retry 1" in twice.reason


# ---- insufficient funds: never two days running, never on a closed day -----------------------


@PROPERTY
@given(
    opened=st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    past=st.lists(st.integers(1, 31), max_size=6),
    country=st.sampled_from([None, *COUNTRIES]),
    window=st.integers(7, 60),
)
def test_insufficient_funds_is_never_retried_on_consecutive_days_nor_on_a_closed_day(
    opened: datetime, past: list[int], country: str | None, window: int
) -> None:
    rules = RetryRules(window_days=window)
    ctx = _ctx(country, opened, [_failed(opened, FUNDS)], past=tuple(past))
    zone = ZoneInfo(ctx.customer_timezone)
    cal = calendar_for(country)
    tries = [opened] + [d.at for d in _run(ctx, rules, FUNDS) if d.at is not None]
    days = [t.astimezone(zone).date() for t in tries]
    for before, after in itertools.pairwise(days):
        assert (after - before).days >= 2, (before, after)
    for day in days[1:]:
        assert cal.is_open(day), (day, cal.closed(day))


@PROPERTY
@given(
    opened=st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    country=st.sampled_from([None, *COUNTRIES]),
    window=st.integers(3, 60),
    attempts=st.integers(2, 20),
)
def test_no_scheduled_retry_lands_on_a_weekend_or_holiday(
    opened: datetime, country: str | None, window: int, attempts: int
) -> None:
    rules = RetryRules(window_days=window, max_attempts=attempts)
    ctx = _ctx(country, opened, [_failed(opened, SOFT)])
    zone = ZoneInfo(ctx.customer_timezone)
    cal = calendar_for(country)
    for decision in _run(ctx, rules, SOFT):
        if decision.at is not None:
            assert cal.is_open(decision.at.astimezone(zone).date()), decision.reason


@PROPERTY
@given(_situations(), st.sampled_from([None, *COUNTRIES]))
def test_holidays_never_push_a_try_out_of_the_window_or_over_a_cap(
    situation: tuple[RetryContext, datetime], country: str | None
) -> None:
    ctx, now = situation
    ctx = replace(ctx, customer_country=country)
    rules = RetryRules()
    decision = decide_next_retry(ctx, rules, now)
    _assert_lawful(ctx, rules, now, decision)  # window, caps, stops, waits, gaps
    plain = decide_next_retry(ctx, RetryRules(business_days=False), now)
    if decision.at is None and plain.at is not None and not plain.stop:
        # A closed day may cost this try only when no business day fits before the window ends.
        assert "no business day left" in decision.reason or "no likely payday" in decision.reason


# ---- the reason names the day off ------------------------------------------------------------


def test_a_friday_payday_on_christmas_is_tried_on_thursday_and_says_why() -> None:
    # Friday 25 December 2026 is Christmas Day in the United States.
    opened = datetime(2026, 12, 21, 15, 0, tzinfo=UTC)  # Monday, 09:00 Chicago
    decision = decide_next_retry(_ctx("US", opened, [_failed(opened, FUNDS)]), RetryRules(), opened)
    assert decision.at == datetime(2026, 12, 24, 14, 0, tzinfo=UTC)  # Thu 24 Dec, 08:00 Chicago
    assert "Friday (moved from Fri 25 Dec: Christmas Day)" in decision.reason


def test_a_spread_retry_on_a_holiday_moves_to_the_next_business_day_and_names_it() -> None:
    # 22 hours after Wed 24 Dec 2025, 09:00 in Berlin is Christmas Day; then Boxing Day, a
    # weekend: Monday 29 December.
    opened = datetime(2025, 12, 24, 8, 0, tzinfo=UTC)
    decision = decide_next_retry(_ctx("DE", opened, [_failed(opened, SOFT)]), RetryRules(), opened)
    assert decision.at is not None
    assert decision.at.astimezone(ZoneInfo("Europe/Berlin")).date() == date(2025, 12, 29)
    assert "moved from Thu 25 Dec: Christmas Day" in decision.reason


def test_the_customers_country_comes_from_the_address_else_the_locale() -> None:
    assert customer_country("de", ["en-US"]) == "DE"
    assert customer_country(None, ["pt-BR", "en"]) == "BR"
    assert customer_country(None, ["en"]) is None
    assert calendar_for("BR").holiday(date(2026, 11, 20)) is not None  # Black Consciousness Day
    assert calendar_for(None).closed(date(2026, 11, 21)) == "Saturday"


# ---- words that match what happens -----------------------------------------------------------


def test_one_numbering_everywhere_our_retry_n() -> None:
    opened = datetime(2026, 6, 22, 21, 0, tzinfo=UTC)
    decisions = _run(_ctx("US", opened, [_failed(opened, SOFT)]), RetryRules(), SOFT)
    scheduled = [d for d in decisions if d.at is not None]
    assert len(scheduled) == 7
    for n, decision in enumerate(scheduled, start=1):
        assert f"our retry {n}," in decision.reason
        assert f"({n} of 8 charges on this card used)" in decision.reason
        assert "attempt" not in decision.reason


@PROPERTY
@given(_situations())
def test_a_stop_never_promises_a_charge(situation: tuple[RetryContext, datetime]) -> None:
    ctx, now = situation
    decision = decide_next_retry(ctx, RetryRules(), now)
    if decision.at is None:
        assert "at once" not in decision.reason
        if decision.wait_for_new_card and decision.stop and "window ended" not in decision.reason:
            assert decision.reason.endswith("waiting for the customer to add a different card") or (
                "waiting for the customer to add a different card" in decision.reason
            )


# ---- reminders avoid the same days ------------------------------------------------------------

_DEFAULT_REMINDERS = Rules.load(None).reminders


@PROPERTY
@given(
    started=st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    country=st.sampled_from([None, *COUNTRIES]),
    sequence=st.sampled_from(["soft", "new_card", "authentication"]),
)
def test_no_planned_reminder_lands_on_a_weekend_or_holiday(
    started: datetime, country: str | None, sequence: str
) -> None:
    steps = _DEFAULT_REMINDERS.sequences[sequence]
    zone = COUNTRY_ZONES.get(country or "", "UTC")
    cal = calendar_for(country)
    deadline = started + timedelta(days=28)
    planned = plan(
        steps, started_at=started, deadline=deadline, zone=zone, send_hour=10, calendar=cal
    )
    for reminder in planned:
        assert started <= reminder.at <= deadline
        if reminder.at != started:  # day 0 answers the failure at once
            assert cal.is_open(reminder.at.astimezone(ZoneInfo(zone)).date())


def test_a_final_notice_off_a_weekend_comes_the_business_day_before_not_at_the_end() -> None:
    """The window ends on Monday 30 Nov 2026 at 10:00; its notice two days before falls on a
    Saturday. Moved to Monday it would arrive with the end itself; it comes on Friday."""
    from recovery.domain.reminders import ReminderStep

    deadline = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    started = deadline - timedelta(days=28)
    final = ReminderStep(channel="email", template="final_notice", days_before_end=2)
    (planned,) = plan(
        [final],
        started_at=started,
        deadline=deadline,
        zone="UTC",
        send_hour=10,
        calendar=calendar_for("GB"),
    )
    assert planned.at == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # Friday
